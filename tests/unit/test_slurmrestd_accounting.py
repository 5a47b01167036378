"""``SlurmRestd.jobs_between``: finished jobs from slurmrestd's ``/slurmdb/vX/jobs``, with
httpx.MockTransport answering the real servers' bodies.

Recorded from the lab (``tests/fixtures/slurm/record.py RELEASE --accounting``): in one
scene each, sacct's JSON (``sacct_*.json``), every served version's ``/slurmdb/`` jobs body
(``rest_slurmdb_*``), those endpoints' query parameters (``openapi_slurmdb_jobs_*``) and
the newest one's answer with slurmdbd stopped (``rest_slurmdb_dbd_down_*``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Job, JobState
from factoryctl.scheduler.checked import checked
from factoryctl.scheduler.slurm_accounting import parse_sacct, parse_slurmdb_jobs
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.scheduler.slurm_json import SlurmShapeError
from factoryctl.scheduler.slurmrestd import SlurmRestd
from factoryctl.telemetry.prom_reports import scheduler_jobs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
# Release -> the /slurmdb/ version the backend must pick (the newest it serves).
NEWEST = {"22.05": "v0.0.38", "24.11": "v0.0.42", "26.05": "v0.0.45"}
BODIES = sorted(p.name for p in FIXTURES.glob("rest_slurmdb_*_jobs_*.json"))
SINCE, UNTIL = 1_796_530_000.4, 1_796_530_500.7
# What 22.05 answers for an empty window (HTTP 200; seen in the lab).
NOTHING_FOUND = {"description": "Nothing found", "error_number": 9003,
                 "error": "Nothing found with query", "source": "slurmdb_jobs_get"}  # fmt: skip


def _release(name: str) -> str:
    return name.rsplit("_", 1)[1].removesuffix(".json")


def _spec(release: str, db: bool = True) -> dict[str, Any]:
    methods = json.loads((FIXTURES / f"openapi_methods_{release}.json").read_text())
    paths: dict[str, Any] = {path: {m: {} for m in ms} for path, ms in methods.items()}
    if db:
        params = json.loads((FIXTURES / f"openapi_slurmdb_jobs_{release}.json").read_text())
        for path, names in params.items():
            paths[path] = {"get": {"parameters": [{"in": "query", "name": n} for n in names]}}
    return {"paths": paths}


class Server:
    """``/openapi/v3`` from the recorded spec; ``/slurmdb/`` jobs answer ``reply`` or the
    recorded body of the version asked."""

    def __init__(self, release: str, spec: dict[str, Any] | None = None) -> None:
        self.release, self.spec = release, spec or _spec(release)
        self.reply: httpx.Response | None = None
        self.asked: list[httpx.URL] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/openapi/v3":
            return httpx.Response(200, json=self.spec)
        if request.url.path.startswith("/slurm/"):  # squeue's view: the recorded jobs
            version = request.url.path.split("/")[2]
            body = FIXTURES / f"rest_{version}_jobs_{self.release}.json"
            return httpx.Response(200, text=body.read_text())
        self.asked.append(request.url)
        if self.reply is not None:
            return self.reply
        version = request.url.path.split("/")[2]
        body = FIXTURES / f"rest_slurmdb_{version}_jobs_{self.release}.json"
        return httpx.Response(200, text=body.read_text())


def _rest(server: Server) -> SlurmRestd:
    client = httpx.Client(transport=httpx.MockTransport(server), base_url="http://slurmrestd")
    return SlurmRestd(client, SlurmCLI(runner=lambda *a: pytest.fail("no scontrol here")))


def _key(jobs: list[Job]) -> list[tuple[Any, ...]]:
    return sorted((j.job_id, j.account, j.user, j.partition, j.name, j.state, j.gpu_count,
                   j.nodes, j.start_time, j.end_time) for j in jobs)  # fmt: skip


def _sacct(release: str) -> list[Job]:
    return parse_sacct((FIXTURES / f"sacct_{release}.json").read_text())


@pytest.mark.parametrize("release", sorted(NEWEST))
def test_jobs_between_asks_the_newest_version_for_saccts_window(release: str) -> None:
    server = Server(release)
    jobs = _rest(server).jobs_between(SINCE, UNTIL)
    (url,) = server.asked
    assert url.path.rstrip("/") == f"/slurmdb/{NEWEST[release]}/jobs"
    # Whole seconds, the end widened by one as sacct_argv does; uts: epoch in every version.
    assert dict(url.params) == {
        "start_time": "uts1796530000", "end_time": "uts1796530501", "skip_steps": "true"
    }  # fmt: skip
    assert _key(jobs) == _key(_sacct(release))
    sweep = [j for j in jobs if j.name == "sweep"]
    assert len(sweep) == 3 and len({j.job_id for j in sweep}) == 3  # array tasks: own jobs
    assert {j.state for j in jobs} >= {JobState.COMPLETED, JobState.CANCELLED, JobState.RUNNING}


@pytest.mark.parametrize("body", BODIES)
def test_every_served_version_maps_to_what_sacct_said(body: str) -> None:
    doc = json.loads((FIXTURES / body).read_text())
    jobs = parse_slurmdb_jobs(doc, body)
    assert len(jobs) == 7
    assert _key(jobs) == _key(_sacct(_release(body)))


def test_every_recorded_endpoint_takes_the_window_parameters() -> None:
    for release in NEWEST:
        params = json.loads((FIXTURES / f"openapi_slurmdb_jobs_{release}.json").read_text())
        assert params, release
        for names in params.values():
            assert {"start_time", "end_time", "skip_steps"} <= set(names), release


def test_22_05_nothing_found_is_no_jobs() -> None:
    server = Server("22.05")
    doc = json.loads((FIXTURES / "rest_slurmdb_v0.0.38_jobs_22.05.json").read_text())
    server.reply = httpx.Response(200, json={**doc, "jobs": [], "errors": [NOTHING_FOUND]})
    assert _rest(server).jobs_between(SINCE, UNTIL) == []


@pytest.mark.parametrize("release", sorted(NEWEST))
def test_slurmdbd_down_is_one_unreachable_line(release: str) -> None:
    # 24.11 and 26.05 answer 502; 22.05 a 200 with the error and no jobs.
    down = json.loads((FIXTURES / f"rest_slurmdb_dbd_down_{release}.json").read_text())
    server = Server(release)
    server.reply = httpx.Response(down["status"], json=down["body"])
    with pytest.raises(FactoryctlError) as err:
        _rest(server).jobs_between(SINCE, UNTIL)
    assert err.value.status is ExitStatus.SCHEDULER_UNREACHABLE
    assert err.value.message.startswith(f"scheduler unreachable (slurmrestd {_get(release)}")
    assert "Unable to connect to database" in err.value.message
    assert "\n" not in err.value.message


def _get(release: str) -> str:
    """How each error names the request: the status line's path, or the endpoint."""
    if release == "22.05":
        return "v0.0.38 /slurmdb/ jobs"
    return f"GET /slurmdb/{NEWEST[release]}/jobs/"


def test_a_server_without_the_slurmdbd_plugin_says_so() -> None:
    server = Server("26.05", spec=_spec("26.05", db=False))
    with pytest.raises(FactoryctlError) as err:
        _rest(server).jobs_between(SINCE, UNTIL)
    assert err.value.status is ExitStatus.SCHEDULER_ERROR
    assert "openapi/slurmdbd" in err.value.message and not server.asked


def test_an_endpoint_without_a_window_is_refused_before_asking() -> None:
    spec = _spec("24.11")
    for path in [p for p in spec["paths"] if p.startswith("/slurmdb/")]:
        spec["paths"][path]["get"]["parameters"] = [{"in": "query", "name": "account"}]
    server = Server("24.11", spec=spec)
    with pytest.raises(FactoryctlError, match="takes no start_time or end_time"):
        _rest(server).jobs_between(SINCE, UNTIL)
    assert not server.asked


def test_a_requeued_jobs_earlier_run_is_dropped_as_sacct_does() -> None:
    doc = json.loads((FIXTURES / "rest_slurmdb_v0.0.45_jobs_26.05.json").read_text())
    last = doc["jobs"][0]
    earlier = copy.deepcopy(last)
    earlier["time"]["submission"] -= 100
    earlier["account"] = "earlier-run"
    doc["jobs"] = [last, earlier]  # the order slurmdbd gives is not relied on
    (job,) = parse_slurmdb_jobs(doc, "test")
    assert job.account == last["account"] != "earlier-run"


def test_an_unknown_shape_is_a_loud_error() -> None:
    doc = json.loads((FIXTURES / "rest_slurmdb_v0.0.42_jobs_24.11.json").read_text())
    with pytest.raises(SlurmShapeError, match="top-level 'jobs'"):
        parse_slurmdb_jobs({**doc, "jobs": None}, "test")
    del doc["jobs"][0]["time"]
    with pytest.raises(SlurmShapeError, match="'time'"):
        parse_slurmdb_jobs(doc, "test")


def test_energy_reads_the_rest_accounting_or_warns_without_it() -> None:
    # The report's join (prom_reports.scheduler_jobs) through the gate the CLI opens.
    doc = json.loads((FIXTURES / "rest_slurmdb_v0.0.45_jobs_26.05.json").read_text())
    times = [j["time"] for j in doc["jobs"]]
    since = min(t["start"] for t in times if t["start"]) - 1.0
    until = max(t["end"] for t in times) + 1.0
    warnings: list[str] = []
    jobs, known, accounted = scheduler_jobs(checked(_rest(Server("26.05"))), since, until,
                                            warnings)  # fmt: skip
    assert accounted and warnings == []
    finished = {str(j["job_id"]) for j in doc["jobs"] if j["time"]["end"]}
    assert finished and finished <= known and finished <= {j.job_id for j in jobs}

    bare = checked(_rest(Server("26.05", spec=_spec("26.05", db=False))))
    jobs, known, accounted = scheduler_jobs(bare, since, until, warnings)
    assert not accounted
    (warning,) = warnings
    assert warning.startswith("accounting unavailable (slurmrestd serves no /slurmdb/")
