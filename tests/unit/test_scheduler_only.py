"""factoryctl with no Prometheus: nodes, node, jobs and job from the scheduler alone
(issue 11, part 6). Telemetry fields are None (n/a, never 0) and listed in the JSON
envelope's ``unavailable``; one notice on stderr; what needs telemetry says so (exit 4).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from factoryctl.cli.env import Environment
from factoryctl.cli.main import main
from factoryctl.errors import ExitStatus
from factoryctl.scheduler.demo import DemoScheduler
from factoryctl.sim import SimConfig, SimFactory
from factoryctl.sim.workload import Workload
from tests.unit.test_prometheus_source import T


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


def run(
    tmp_path: Path,
    *argv: str,
    scheduler: object | None = None,
    source: Callable[[Environment], object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Result:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(
        stdout=out,
        stderr=err,
        stdin_isatty=False,
        environ={
            "HOME": str(tmp_path),
            "USER": "dave",
            "XDG_STATE_HOME": str(tmp_path / "state"),
            **(environ or {}),
        },
        clock=lambda: T,
    )
    if scheduler is not None:
        env.scheduler_factory = lambda _env: scheduler  # type: ignore[assignment,return-value]
    if source is not None:
        env.source_factory = source  # type: ignore[assignment]
    status = main(list(argv), env)
    return Result(status, out.getvalue(), err.getvalue())


def assert_one_line_error(res: Result, status: ExitStatus, *needles: str) -> None:
    assert res.status == status, res
    assert res.stderr.startswith("factoryctl: error: "), res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in res.stderr, res.stderr


@pytest.fixture
def demo_scheduler() -> DemoScheduler:
    sim = SimFactory(SimConfig(nodes=10, gpus_per_node=8, jobs=False))
    sim.assign("7", "carol", "gpu001", [0, 1, 2], Workload.TRAINING)
    sim.set_admin("gpu004", drain=True, reason="fan")
    return DemoScheduler(sim)


TELEMETRY = {
    "nodes": ("utilization", "power_watts", "temperature_max_celsius", "xid_total"),
    "jobs": (
        "mean_utilization",
        "low_utilization",
        "min_utilization",
        "idle_gpus",
        "idle_seconds",
        "power_watts",
        "energy_joules",
        "energy_kwh",
    ),
}


def assert_notice(res: Result) -> None:
    assert res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("factoryctl: warning: no GPU telemetry: ")
    assert "--prometheus" in res.stderr


def test_nodes_and_jobs_from_the_scheduler_alone(
    tmp_path: Path, demo_scheduler: DemoScheduler
) -> None:
    res = run(tmp_path, "-o", "json", "nodes", scheduler=demo_scheduler)
    assert res.status == 0, res.stderr
    assert_notice(res)
    doc = json.loads(res.stdout)
    assert doc["source"] == "demo"
    assert set(TELEMETRY["nodes"] + TELEMETRY["jobs"]) <= set(doc["unavailable"])
    by_name = {n["name"]: n for n in doc["items"]}
    assert len(by_name) == 10
    assert by_name["gpu001"]["state"] == "mixed" and by_name["gpu001"]["gpus_allocated"] == 3
    assert by_name["gpu004"]["state"] == "drained" and by_name["gpu004"]["reason"] == "fan"
    for item in doc["items"]:
        assert all(item[k] is None for k in TELEMETRY["nodes"]), item
    res = run(tmp_path, "-o", "json", "jobs", scheduler=demo_scheduler)
    assert res.status == 0, res.stderr
    assert_notice(res)
    (job,) = json.loads(res.stdout)["items"]
    assert (job["job_id"], job["user"], job["gpus"], job["nodes"]) == ("7", "carol", 3, "gpu001")
    assert all(job[k] is None for k in TELEMETRY["jobs"]), job
    table = run(tmp_path, "nodes", scheduler=demo_scheduler).stdout.splitlines()
    gpu001 = next(line for line in table if line.startswith("gpu001"))
    assert gpu001.split()[1:6] == ["mixed", "3", "8", "n/a", "n/a"]  # never 0 %, 0 W


def test_node_and_job_from_the_scheduler_alone(
    tmp_path: Path, demo_scheduler: DemoScheduler
) -> None:
    res = run(tmp_path, "node", "gpu001", scheduler=demo_scheduler)
    assert res.status == 0, res.stderr
    assert_notice(res)
    assert "GPUS       n/a" in res.stdout and "PROCESSES  n/a" in res.stdout
    assert "carol" in res.stdout
    doc = json.loads(run(tmp_path, "-o", "json", "node", "gpu001", scheduler=demo_scheduler).stdout)
    assert doc["gpus"] is None and doc["processes"] is None
    assert doc["node"]["gpus_allocated"] == 3 and doc["node"]["utilization"] is None
    assert [j["job_id"] for j in doc["jobs"]] == ["7"]
    res = run(tmp_path, "-o", "json", "job", "7", scheduler=demo_scheduler)
    assert res.status == 0, res.stderr
    assert_notice(res)
    doc = json.loads(res.stdout)
    assert doc["gpus"] is None and doc["job"]["mean_utilization"] is None
    assert doc["job"]["gpus"] == 3
    assert doc["allocations"] == [{"node": "gpu001", "gpus": [0, 1, 2], "count": 3}]
    assert_one_line_error(
        run(tmp_path, "node", "gpu999", scheduler=demo_scheduler), ExitStatus.NOT_FOUND
    )


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(("gpus",), "gpus needs GPU telemetry"), (("energy",), "energy reads Prometheus")],
    ids=" ".join,
)
def test_what_needs_telemetry_says_so(
    tmp_path: Path, demo_scheduler: DemoScheduler, argv: tuple[str, ...], needle: str
) -> None:
    res = run(tmp_path, *argv, scheduler=demo_scheduler)
    assert res.status == ExitStatus.CONFIG, res
    assert needle in res.stderr and "--prometheus" in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_no_scheduler_and_no_prometheus_is_still_no_data_source(tmp_path: Path) -> None:
    res = run(tmp_path, "--scheduler", "none", "nodes")
    assert_one_line_error(res, ExitStatus.CONFIG, "no data source", "--prometheus")
    res = run(tmp_path, "nodes", environ={"FACTORYCTL_SCHEDULER_TYPE": "none"})
    assert_one_line_error(res, ExitStatus.CONFIG, "no data source")


def test_no_slurm_on_this_host_and_no_prometheus(tmp_path: Path) -> None:
    # The default scheduler is slurm: without its clients the error says what else works.
    res = run(tmp_path, "nodes", environ={"PATH": str(tmp_path / "empty")})
    assert_one_line_error(
        res, ExitStatus.SCHEDULER_UNREACHABLE, "sinfo not found", "--prometheus", "--demo"
    )


def test_triage_without_telemetry_warns_once_instead_of_per_node(tmp_path: Path) -> None:
    sim = SimFactory(SimConfig(nodes=10, gpus_per_node=8, jobs=False))
    res = run(tmp_path, "-o", "json", "triage", "--exit-code", scheduler=DemoScheduler(sim))
    assert res.status == ExitStatus.TRIAGE_WARNING, res
    kinds = [i["kind"] for i in json.loads(res.stdout)["items"]]
    assert kinds == ["no_gpu_telemetry"]  # not one "exporter silent" per node
