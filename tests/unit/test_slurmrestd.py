"""The slurmrestd backend with httpx.MockTransport: version detection, reads, writes, errors.

The servers' specs are the real ones (tests/fixtures/slurm/openapi_methods_*.json: each
path's methods, recorded from the lab's slurmrestd of 22.05, 24.11 and 26.05), and so
are the read bodies (rest_v*_*.json) and the error bodies below, which those servers sent
for the same mistakes.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import NodeState
from factoryctl.scheduler.base import NextState, ReservationRequest
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.scheduler.slurmrestd import (
    SUPPORTED,
    SlurmRestd,
    detect_api,
    detect_version,
    open_slurmrestd,
    rest_error,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
# Slurm release -> the version the backend must pick and how it writes there.
GENERATIONS = {
    "22.05": ("v0.0.38", "scontrol", False, False),
    "24.11": ("v0.0.42", "batch", False, False),
    "26.05": ("v0.0.45", "batch", True, True),
}
OFFERED = {
    "22.05": ("v0.0.38",),
    "24.11": ("v0.0.40", "v0.0.41", "v0.0.42"),
    "26.05": ("v0.0.42", "v0.0.43", "v0.0.44", "v0.0.45"),
}


def _spec(release: str) -> dict[str, Any]:
    methods = json.loads((FIXTURES / f"openapi_methods_{release}.json").read_text())
    return {"paths": {path: {m: {} for m in ms} for path, ms in methods.items()}}


class FakeServer:
    """A slurmrestd answering from the recorded spec and bodies; writes answer ``reply``."""

    def __init__(self, release: str, spec: Mapping[str, Any] | None = None) -> None:
        self.release = release
        self.spec = spec if spec is not None else _spec(release)
        self.requests: list[tuple[str, str, Any]] = []
        self.reply: httpx.Response = httpx.Response(200, json={"errors": [], "warnings": []})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        self.requests.append((request.method, path, body))
        if path == "/openapi/v3":
            return httpx.Response(200, json=self.spec)
        if request.method == "GET":
            what = path.rstrip("/").rsplit("/", 1)[1]
            version = path.split("/")[2]
            name = FIXTURES / f"rest_{version}_{what}_{self.release}.json"
            return httpx.Response(200, text=name.read_text())
        return self.reply


def _cli() -> tuple[SlurmCLI, list[list[str]]]:
    ran: list[list[str]] = []

    def runner(
        argv: Sequence[str], env: Mapping[str, str] | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        ran.append(list(argv))
        return subprocess.CompletedProcess(list(argv), 0, "", "")

    return SlurmCLI(runner=runner), ran


def _rest(server: Callable[[httpx.Request], httpx.Response]) -> tuple[SlurmRestd, list[list[str]]]:
    cli, ran = _cli()
    client = httpx.Client(transport=httpx.MockTransport(server), base_url="http://slurmrestd")
    return SlurmRestd(client, cli), ran


# -- version detection --------------------------------------------------------------------


@pytest.mark.parametrize("release", sorted(GENERATIONS))
def test_detection_per_generation(release: str) -> None:
    version, nodes, create, delete = GENERATIONS[release]
    api = detect_api(_spec(release))
    assert (api.version, api.offered) == (version, OFFERED[release])
    assert (api.node_update, api.reservation_create, api.reservation_delete) == (
        nodes,
        create,
        delete,
    )
    # The recorded path lists (no methods) pick the same version.
    names = json.loads((FIXTURES / f"openapi_paths_{release}.json").read_text())
    assert detect_version({"paths": {name: {} for name in names}}) == version


def test_every_version_a_real_server_offered_is_supported() -> None:
    assert {v for vs in OFFERED.values() for v in vs} <= set(SUPPORTED)


def test_a_server_offering_nothing_known_is_one_line_listing_its_versions() -> None:
    spec = {"paths": {"/slurm/v0.0.46/nodes/": {"get": {}}, "/slurm/v0.0.39/nodes/": {}}}
    with pytest.raises(FactoryctlError) as info:
        detect_api(spec)
    assert info.value.status is ExitStatus.SCHEDULER_ERROR
    assert "offered: v0.0.39, v0.0.46" in info.value.message
    assert "\n" not in info.value.message
    with pytest.raises(FactoryctlError, match="offered: none"):
        detect_api({"paths": {"/slurmdb/v0.0.42/jobs/": {}}})


def test_the_newest_known_version_wins_over_a_newer_unknown_one() -> None:
    spec = _spec("26.05")
    spec["paths"]["/slurm/v0.0.46/nodes/"] = {"get": {}, "post": {}}
    assert detect_version(spec) == "v0.0.45"


# -- reads --------------------------------------------------------------------------------


@pytest.mark.parametrize("release", sorted(GENERATIONS))
def test_reads_use_the_detected_version_and_the_servers_spelling(release: str) -> None:
    server = FakeServer(release)
    rest, ran = _rest(server)
    nodes = {n.name: n for n in rest.nodes()}
    assert nodes["gpu03"].state is NodeState.DRAINING
    assert nodes["gpu04"].reason == "bad DIMM; see dmesg"
    assert {j.name for j in rest.jobs()} == {"train-a", "multi-b", "pending-c"}
    assert [r.name for r in rest.reservations()] == ["maint-gpu04"]
    version = GENERATIONS[release][0]
    slash = "" if release == "22.05" else "/"
    assert [p for _, p, _ in server.requests] == [
        "/openapi/v3",
        f"/slurm/{version}/nodes{slash}",
        f"/slurm/{version}/jobs{slash}",
        f"/slurm/{version}/reservations{slash}",
    ]
    assert rest.calls[0] == "GET /openapi/v3" and ran == []


# -- writes -------------------------------------------------------------------------------

REASON = 'factoryctl(erin): xid 79; `id` $(x) "q"'


@pytest.mark.parametrize("release", ["24.11", "26.05"])
def test_drain_and_resume_are_one_batch_call(release: str) -> None:
    server = FakeServer(release)
    rest, ran = _rest(server)
    rest.drain(["gpu01", "gpu02", "gpu04"], REASON)
    rest.resume(["gpu03"])
    version = GENERATIONS[release][0]
    assert server.requests[1:] == [
        ("POST", f"/slurm/{version}/nodes/",
         {"name": ["gpu[01-02,04]"], "state": ["DRAIN"], "reason": REASON}),
        ("POST", f"/slurm/{version}/nodes/", {"name": ["gpu03"], "state": ["RESUME"]}),
    ]  # fmt: skip
    assert ran == []


def test_per_node_updates_where_the_version_has_no_batch_endpoint() -> None:
    # A 23.11 server's v0.0.40: POST node/{node_name}, no POST nodes/.
    spec = _spec("24.11")
    spec["paths"] = {p: v for p, v in spec["paths"].items() if "v0.0.40" in p}
    spec["paths"]["/slurm/v0.0.40/nodes/"] = {"get": {}}
    server = FakeServer("24.11", spec)
    rest, ran = _rest(server)
    assert rest.api().node_update == "per-node"
    rest.drain(["gpu01", "gpu02"], "bad fan")
    assert server.requests[1:] == [
        ("POST", "/slurm/v0.0.40/node/gpu01", {"state": ["DRAIN"], "reason": "bad fan"}),
        ("POST", "/slurm/v0.0.40/node/gpu02", {"state": ["DRAIN"], "reason": "bad fan"}),
    ]
    assert ran == []


def test_22_05_writes_everything_through_scontrol() -> None:
    server = FakeServer("22.05")
    rest, ran = _rest(server)
    rest.drain(["gpu01"], "bad fan")
    rest.resume(["gpu01"])
    rest.create_reservation(ReservationRequest("maint-x", ("gpu02",), 1.8e9, 3600))
    rest.delete_reservation("maint-x")
    assert [r[0] for r in server.requests] == ["GET"]  # the spec, nothing else
    assert [argv[:2] for argv in ran] == [
        ["scontrol", "update"],
        ["scontrol", "update"],
        ["scontrol", "create"],
        ["scontrol", "delete"],
    ]
    assert "Reason=bad fan" in ran[0]


def test_reservations_over_rest_on_26_05() -> None:
    server = FakeServer("26.05")
    rest, ran = _rest(server)
    assert (
        rest.create_reservation(
            ReservationRequest(
                "maint-x", ("gpu02", "gpu03"), 1_800_000_000.7, 5400, ("root", "erin")
            )
        )
        == "maint-x"
    )
    rest.delete_reservation("maint-x")
    assert server.requests[1:] == [
        ("GET", "/slurm/v0.0.45/reservations/", None),  # an existing name is refused first
        ("POST", "/slurm/v0.0.45/reservation", {
            "name": "maint-x",
            "node_list": ["gpu[02-03]"],
            "start_time": {"set": True, "infinite": False, "number": 1_800_000_000},
            "duration": {"set": True, "infinite": False, "number": 90},
            "users": ["root", "erin"],
            "flags": ["MAINT", "IGNORE_JOBS"],
        }),
        ("DELETE", "/slurm/v0.0.45/reservation/maint-x", None),
    ]  # fmt: skip
    assert ran == []


def test_an_existing_reservation_is_not_updated_by_create() -> None:
    server = FakeServer("26.05")
    rest, _ = _rest(server)
    with pytest.raises(FactoryctlError) as info:
        rest.create_reservation(ReservationRequest("maint-gpu04", ("gpu01",), 1.8e9, 600))
    assert info.value.status is ExitStatus.SCHEDULER_ERROR
    assert "already exists" in info.value.message
    assert [m for m, _, _ in server.requests] == ["GET", "GET"]


def test_24_11_reservations_and_every_reboot_go_through_scontrol() -> None:
    server = FakeServer("24.11")
    rest, ran = _rest(server)
    rest.create_reservation(ReservationRequest("maint-x", ("gpu02",), 1.8e9, 3600))
    rest.delete_reservation("maint-x")
    rest.reboot(["gpu01"], "kernel", asap=True, next_state=NextState.RESUME)
    assert [argv[:3] for argv in ran] == [
        ["scontrol", "create", "reservation"],
        ["scontrol", "delete", "ReservationName=maint-x"],
        ["scontrol", "reboot", "ASAP"],
    ]
    assert [m for m, _, _ in server.requests] == ["GET"]


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("drain", (["gpu01;reboot"], "x")),
        ("drain", (["gpu01"], "")),
        ("drain", (["gpu01"], "two\nlines")),
        ("resume", ([],)),
        ("delete_reservation", ("../nodes",)),
    ],
)
def test_validation_comes_before_any_request(call: str, args: tuple[Any, ...]) -> None:
    server = FakeServer("26.05")
    rest, ran = _rest(server)
    with pytest.raises(FactoryctlError) as info:
        getattr(rest, call)(*args)
    assert info.value.status is ExitStatus.USAGE
    assert server.requests == [] and ran == []


# -- errors -------------------------------------------------------------------------------


def _errors(*items: dict[str, Any]) -> dict[str, Any]:
    return {"errors": list(items), "warnings": []}


# What the real servers answered (status, body) and the exit status that must follow.
ERRORS = [
    pytest.param(422, _errors({"description": "Failure to update node gpu01,nosuch9",
                 "error_number": 2018, "error": "Invalid node name specified",
                 "source": "_update_nodes"}), ExitStatus.NOT_FOUND, id="26.05-unknown-node"),
    pytest.param(500, _errors({"description": "Failure to update node nosuch9",
                 "error_number": 2018, "error": "Invalid node name specified",
                 "source": "_update_node"}), ExitStatus.NOT_FOUND, id="24.11-unknown-node"),
    pytest.param(422, _errors({"description": "Error deleting reservation nosuch",
                 "error_number": 2053, "error": "Requested reservation is invalid",
                 "source": "slurm_delete_reservation"}), ExitStatus.NOT_FOUND,
                 id="unknown-reservation"),
    pytest.param(502, _errors({"description": "Failure to update node gpu02",
                 "error_number": 1800,
                 "error": "Unable to contact slurm controller (connect failure)",
                 "source": "_update_nodes"}), ExitStatus.SCHEDULER_UNREACHABLE,
                 id="26.05-slurmctld-down"),
    pytest.param(502, _errors(), ExitStatus.SCHEDULER_UNREACHABLE, id="24.11-slurmctld-down"),
    pytest.param(500, {"meta": {}, "errors": [{"error": "Unspecified error", "errno": -1}],
                 "nodes": []}, ExitStatus.SCHEDULER_UNREACHABLE, id="22.05-unspecified"),
    pytest.param(511, _errors({"description": "Failure to query nodes", "error_number": 1007,
                 "error": "Protocol authentication error", "source": "_dump_nodes"}),
                 ExitStatus.SCHEDULER_ERROR, id="bad-token"),
    pytest.param(500, _errors({"description": "Unknown flag \"BOGUS\"", "error_number": 9207,
                 "error": "Data parser unable to parse invalid flag", "source": "#/state[0]/"},
                 {"description": "Failure to update node gpu01", "error_number": 2180,
                 "error": "Invalid node state transition", "source": "_update_nodes"}),
                 ExitStatus.SCHEDULER_ERROR, id="refused"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "exit_status"), ERRORS)
def test_error_bodies_become_one_line_errors(
    status: int, body: dict[str, Any], exit_status: ExitStatus
) -> None:
    server = FakeServer("26.05")
    server.reply = httpx.Response(status, json=body)
    rest, ran = _rest(server)
    with pytest.raises(FactoryctlError) as info:
        rest.drain(["gpu01"], "bad fan")
    assert info.value.status is exit_status
    assert "\n" not in info.value.message
    assert info.value.message.count("slurmrestd POST /slurm/v0.0.45/nodes/") == 1
    assert ran == []  # a REST failure never falls back to scontrol


def test_a_200_with_errors_on_a_write_is_an_error() -> None:
    server = FakeServer("26.05")
    server.reply = httpx.Response(
        200, json=_errors({"error": "Invalid node name specified", "error_number": 2018})
    )
    rest, _ = _rest(server)
    with pytest.raises(FactoryctlError) as info:
        rest.resume(["gpu01"])
    assert info.value.status is ExitStatus.NOT_FOUND


def test_the_message_names_what_slurm_said() -> None:
    err = rest_error(
        "POST",
        "/slurm/v0.0.45/nodes/",
        422,
        _errors(
            {"error": "Invalid node name specified", "description": "Failure to\nupdate node x"}
        ),
    )
    assert err.message == (
        "slurmrestd POST /slurm/v0.0.45/nodes/: Invalid node name specified: "
        "Failure to update node x"
    )


def test_transport_and_auth_failures() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(FactoryctlError) as info:
        _rest(refused)[0].nodes()
    assert info.value.status is ExitStatus.SCHEDULER_UNREACHABLE

    def unauthorized(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text="Authentication failure")

    with pytest.raises(FactoryctlError) as info:
        _rest(unauthorized)[0].nodes()
    assert info.value.status is ExitStatus.SCHEDULER_ERROR and "JWT" in info.value.message

    def not_json(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>")

    with pytest.raises(FactoryctlError) as info:
        _rest(not_json)[0].nodes()
    assert info.value.status is ExitStatus.SCHEDULER_ERROR and "not a JSON" in info.value.message


# -- opening ------------------------------------------------------------------------------


def test_open_needs_a_url_and_keeps_jwt_away_from_scontrol(tmp_path: Path) -> None:
    with pytest.raises(FactoryctlError) as info:
        open_slurmrestd({"slurmrestd_url": ""}, {})
    assert info.value.status is ExitStatus.CONFIG
    rest = open_slurmrestd(
        {"slurmrestd_url": "http://h:6820", "jwt_file": ""}, {"SLURM_JWT": "t", "USER": "u"}
    )
    assert rest.client.headers["X-SLURM-USER-TOKEN"] == "t"
    assert rest.client.headers["X-SLURM-USER-NAME"] == "u"
    assert rest.writer.env is not None and "SLURM_JWT" not in rest.writer.env
    token = tmp_path / "jwt"
    token.write_text("from-file\n")
    rest = open_slurmrestd({"slurmrestd_url": "http://h:6820", "jwt_file": str(token)}, {})
    assert rest.client.headers["X-SLURM-USER-TOKEN"] == "from-file"
    assert "X-SLURM-USER-NAME" not in rest.client.headers  # the token names its user


def test_clear_reason_posts_a_blank_reason_only() -> None:
    server = FakeServer("24.11")
    rest, ran = _rest(server)
    rest.clear_reason(["gpu01", "gpu03"])
    version = GENERATIONS["24.11"][0]
    assert server.requests[1:] == [
        ("POST", f"/slurm/{version}/nodes/", {"name": ["gpu[01,03]"], "reason": " "}),
    ]
    assert ran == []
