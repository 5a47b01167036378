"""``factoryctl scheduler-exporter``: the scheduler's view served for Prometheus."""

from __future__ import annotations

import io
import urllib.request
from collections.abc import Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from factoryctl.cli.env import Environment
from factoryctl.cli.main import main
from factoryctl.cli.scheduler_exporter import NodeCache, make_registry
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Allocation, Job, JobState, Node, NodeState
from factoryctl.telemetry import schema


def SchedulerUnreachable(message: str) -> FactoryctlError:
    return FactoryctlError(message, ExitStatus.SCHEDULER_UNREACHABLE)


class FakeScheduler:
    def __init__(self, nodes: Sequence[Node], jobs: Sequence[Job] = ()) -> None:
        self.result: Sequence[Node] | Exception = nodes
        self.job_list: Sequence[Job] | Exception = jobs

    def nodes(self) -> Sequence[Node]:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    def jobs(self) -> Sequence[Job]:
        if isinstance(self.job_list, Exception):
            raise self.job_list
        return self.job_list


NODES = [
    Node("gpu01", NodeState.DRAINED, "fan dead", 1_767_000_000.0, ("gpu",), 8),
    Node("gpu02", NodeState.IDLE, partitions=("gpu",), gpu_count=4),
]


def _env(fake: FakeScheduler) -> tuple[Environment, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, environ={"HOME": "/nonexistent"}, clock=lambda: 42.0)
    env.scheduler_factory = lambda _env: fake  # type: ignore[assignment,return-value]
    return env, out, err


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_once_prints_the_scheduler_view() -> None:
    env, out, err = _env(FakeScheduler(NODES))
    assert main(["scheduler-exporter", "--once"], env) == 0, err.getvalue()
    got = _samples(out.getvalue())
    drained = (("node", "gpu01"), ("reason", "fan dead"), ("state", "drained"))
    assert got[(schema.NODE_STATE_INFO, drained)] == 1
    assert got[(schema.NODE_GPUS_EXPECTED, (("node", "gpu02"),))] == 4
    assert got[(schema.NODE_STATE_SINCE, (("node", "gpu01"),))] == 1_767_000_000.0
    assert got[("factoryctl_scheduler_view_last_success_timestamp_seconds", ())] == 42.0


def test_once_with_an_unreachable_scheduler_is_one_line_and_its_status() -> None:
    fake = FakeScheduler(NODES)
    fake.result = SchedulerUnreachable("sinfo: cannot reach slurmctld")
    env, out, err = _env(fake)
    assert main(["scheduler-exporter", "--once"], env) == ExitStatus.SCHEDULER_UNREACHABLE
    assert out.getvalue() == ""
    assert err.getvalue().count("\n") == 1 and "slurmctld" in err.getvalue()


def test_a_failed_refresh_keeps_the_last_view_and_counts() -> None:
    fake = FakeScheduler(NODES)
    env, _out, err = _env(fake)
    cache = NodeCache(env)
    registry = make_registry(cache)
    assert cache.refresh()
    fake.result = SchedulerUnreachable("slurmctld down")
    assert not cache.refresh()
    get = registry.get_sample_value
    labels = {"node": "gpu01", "state": "drained", "reason": "fan dead"}
    assert get(schema.NODE_STATE_INFO, labels) == 1  # still served
    assert get("factoryctl_scheduler_view_failures_total") == 1
    assert "slurmctld down" in err.getvalue()


def test_demo_serves_over_http(tmp_path: Any) -> None:
    """The real command as a process, with --demo: /metrics answers with the view."""
    from factoryctl.lab.stack import start_scheduler_exporter

    target, proc = start_scheduler_exporter(tmp_path, ("--demo",), interval=0.5)
    try:
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        proc.stop()
    names = {fam.name for fam in text_string_to_metric_families(text)}
    assert {schema.NODE_STATE_INFO, schema.NODE_GPUS_EXPECTED, schema.NODE_PARTITION_INFO} <= names
    assert not proc.alive()


RUNNING = [
    Job("77", "ada", "ml", state=JobState.RUNNING, allocations=(Allocation("gpu01", (3, 5)),)),
    Job("78", "ben", state=JobState.RUNNING, allocations=(Allocation("gpu02", (), gpus=4),)),
]


def test_once_serves_the_running_jobs_gpus() -> None:
    env, out, err = _env(FakeScheduler(NODES, RUNNING))
    assert main(["scheduler-exporter", "--once"], env) == 0, err.getvalue()
    got = _samples(out.getvalue())
    held = {
        dict(labels)["gpu"]
        for (name, labels), v in got.items()
        if name == schema.SLURM_GPU_JOB_INFO and v == 1
    }
    assert held == {"3", "5"}
    one = (("account", "ml"), ("gpu", "3"), ("job_id", "77"), ("node", "gpu01"), ("user", "ada"))
    assert got[(schema.SLURM_GPU_JOB_INFO, one)] == 1
    assert got[(schema.SLURM_JOBS_GPU_INDICES_UNKNOWN, ())] == 1  # job 78: not invented


def test_no_jobs_serves_the_node_view_only() -> None:
    env, out, err = _env(FakeScheduler(NODES, RUNNING))
    assert main(["scheduler-exporter", "--once", "--no-jobs"], env) == 0, err.getvalue()
    names = {name for name, _ in _samples(out.getvalue())}
    assert schema.NODE_STATE_INFO in names
    assert not names & {schema.SLURM_GPU_JOB_INFO, schema.SLURM_JOBS_GPU_INDICES_UNKNOWN}


def test_a_failed_jobs_read_keeps_the_last_view_of_both() -> None:
    fake = FakeScheduler(NODES, RUNNING)
    env, _out, err = _env(fake)
    cache = NodeCache(env)
    registry = make_registry(cache)
    assert cache.refresh()
    fake.result = [Node("gpu09", NodeState.IDLE, gpu_count=8)]
    fake.job_list = SchedulerUnreachable("squeue: slurmctld down")
    assert not cache.refresh()
    get = registry.get_sample_value
    assert get(schema.NODE_GPUS_EXPECTED, {"node": "gpu01"}) == 8  # not half a new view
    labels = {"node": "gpu01", "gpu": "5", "job_id": "77", "user": "ada", "account": "ml"}
    assert get(schema.SLURM_GPU_JOB_INFO, labels) == 1
    assert get("factoryctl_scheduler_view_failures_total") == 1
    assert "squeue: slurmctld down" in err.getvalue()
