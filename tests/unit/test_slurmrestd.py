"""The slurmrestd backend with httpx.MockTransport: version detection, reads, errors."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import NodeState
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.scheduler.slurmrestd import SlurmRestd, detect_version, open_slurmrestd

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
OPENAPI = {
    "paths": {"/slurm/v0.0.36/nodes": {}, "/slurm/v0.0.38/nodes": {}, "/slurmdb/v0.0.38/jobs": {}}
}


def _client(handler) -> httpx.Client:  # type: ignore[no-untyped-def]
    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://slurmrestd")


def test_detect_version_picks_newest_supported() -> None:
    assert detect_version(OPENAPI) == "v0.0.38"
    with pytest.raises(FactoryctlError):
        detect_version({"paths": {"/slurm/v0.0.41/nodes": {}}})


def test_reads_use_the_detected_version() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/openapi/v3":
            return httpx.Response(200, json=OPENAPI)
        if request.url.path.endswith("/nodes"):
            return httpx.Response(
                200, text=(FIXTURES / "sinfo_drain_scene2_22.05.json").read_text()
            )
        if request.url.path.endswith("/jobs"):
            return httpx.Response(200, text=(FIXTURES / "squeue_scene2_22.05.json").read_text())
        return httpx.Response(404, json={"errors": []})

    rest = SlurmRestd(_client(handler), SlurmCLI())
    nodes = {n.name: n.state for n in rest.nodes()}
    assert nodes["gpu01"] is NodeState.DRAINING
    assert len(rest.jobs()) == 3
    assert seen == ["/openapi/v3", "/slurm/v0.0.38/nodes", "/slurm/v0.0.38/jobs"]


def test_errors_map_to_exit_statuses() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(FactoryctlError) as info:
        SlurmRestd(_client(refused), SlurmCLI()).nodes()
    assert info.value.status is ExitStatus.SCHEDULER_UNREACHABLE

    def unauthorized(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text="Authentication failure")

    with pytest.raises(FactoryctlError) as info:
        SlurmRestd(_client(unauthorized), SlurmCLI()).nodes()
    assert info.value.status is ExitStatus.SCHEDULER_ERROR and "JWT" in info.value.message


def test_open_needs_a_url_and_keeps_jwt_away_from_scontrol() -> None:
    with pytest.raises(FactoryctlError) as info:
        open_slurmrestd({"slurmrestd_url": ""}, {})
    assert info.value.status is ExitStatus.CONFIG
    rest = open_slurmrestd(
        {"slurmrestd_url": "http://h:6820", "jwt_file": ""}, {"SLURM_JWT": "t", "USER": "u"}
    )
    assert rest.client.headers["X-SLURM-USER-TOKEN"] == "t"
    assert rest.writer.env is not None and "SLURM_JWT" not in rest.writer.env
