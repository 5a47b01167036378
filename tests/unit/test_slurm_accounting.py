"""Slurm's accounting (``sacct --json -X``) into the domain, from outputs recorded on real
clusters with slurmdbd: ``tests/fixtures/slurm/record.py RELEASE --accounting`` on 22.05
(openapi/dbv0.0.38), 24.11 (data_parser v0.0.42) and 26.05 (v0.0.45).

The scene: train-b (proj-b, 2 GPUs on one node), multi-a (proj-a, 2 nodes, 1 GPU each),
an array sweep of 3 one-GPU tasks, a cancelled job (proj-b) and a running one (4 GPUs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Allocation, Job, JobState
from factoryctl.scheduler.checked import checked
from factoryctl.scheduler.slurm_accounting import allocations, parse_sacct, sacct_argv
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.scheduler.slurm_json import SlurmShapeError
from factoryctl.telemetry.prom_reports import scheduler_jobs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
GENERATIONS = ("22.05", "24.11", "26.05")


def _doc(tag: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"sacct_{tag}.json").read_text())


@pytest.mark.parametrize("tag", GENERATIONS)
def test_sacct_maps_the_scene_in_every_generation(tag: str) -> None:
    jobs = parse_sacct(json.dumps(_doc(tag)))
    by_name: dict[str, list[Job]] = {}
    for j in jobs:
        by_name.setdefault(j.name, []).append(j)
    (train,) = by_name["train-b"]
    assert (train.account, train.user, train.partition) == ("proj-b", "root", "gpu")
    assert train.state is JobState.COMPLETED and train.gpu_count == 2
    assert train.start_time is not None and train.end_time is not None
    assert train.end_time >= train.start_time
    (multi,) = by_name["multi-a"]
    assert multi.account == "proj-a"  # the user's default account
    assert multi.nodes == ("gpu01", "gpu02")
    assert [a.count for a in multi.allocations] == [1, 1]
    # Each array task is a job of its own, with its own id (SLURM_JOB_ID), once.
    sweep = by_name["sweep"]
    assert len(sweep) == 3 and len({j.job_id for j in sweep}) == 3
    assert all(j.gpu_count == 1 and j.state is JobState.COMPLETED for j in sweep)
    (cancelled,) = by_name["cancelled"]
    assert cancelled.state is JobState.CANCELLED and cancelled.account == "proj-b"
    (running,) = by_name["running"]
    assert running.state is JobState.RUNNING and running.end_time is None
    assert running.gpu_count == 4
    assert len(jobs) == len({j.job_id for j in jobs}) == 7


@pytest.mark.parametrize("tag", GENERATIONS)
def test_sacct_ids_are_the_records_job_ids(tag: str) -> None:
    doc = _doc(tag)
    jobs = parse_sacct(json.dumps(doc))
    assert [j.job_id for j in jobs] == [str(r["job_id"]) for r in doc["jobs"]]


def _without(doc: dict[str, Any], key: str) -> str:
    del doc["jobs"][0][key]
    return json.dumps(doc)


@pytest.mark.parametrize("tag", GENERATIONS)
@pytest.mark.parametrize("key", ["tres", "time", "state", "user", "job_id"])
def test_a_missing_field_is_a_shape_error_naming_it(tag: str, key: str) -> None:
    with pytest.raises(SlurmShapeError) as err:
        parse_sacct(_without(_doc(tag), key))
    assert err.value.status is ExitStatus.SCHEDULER_ERROR
    assert repr(key) in err.value.message and "sacct --json" in err.value.message
    release = _doc(tag)["meta"].get("slurm", _doc(tag)["meta"].get("Slurm"))["release"]
    assert release in err.value.message


def test_unknown_types_are_errors_not_defaults() -> None:
    doc = _doc("26.05")
    doc["jobs"][0]["tres"]["allocated"][-1]["count"] = "2"
    with pytest.raises(SlurmShapeError, match="gres/gpu count"):
        parse_sacct(json.dumps(doc))
    doc = _doc("22.05")
    doc["jobs"][0]["state"]["current"] = ["COMPLETED"]  # a list where 22.05 has a string
    with pytest.raises(SlurmShapeError, match="'current'"):
        parse_sacct(json.dumps(doc))
    with pytest.raises(SlurmShapeError, match="'jobs'"):
        parse_sacct(json.dumps({"meta": _doc("24.11")["meta"], "errors": []}))
    with pytest.raises(SlurmShapeError, match="meta"):
        parse_sacct(json.dumps({"jobs": []}))


def test_a_job_that_never_ran_has_no_nodes_and_no_gpus_on_them() -> None:
    doc = _doc("24.11")
    rec = doc["jobs"][0]
    rec["nodes"], rec["state"]["current"] = "None assigned", ["PENDING"]
    rec["time"]["start"], rec["time"]["end"] = 0, 0
    (job, *_) = parse_sacct(json.dumps(doc))
    assert job.allocations == () and job.start_time is None and job.state is JobState.PENDING


def test_allocations_sum_to_the_total() -> None:
    assert [a.count for a in allocations(["a", "b", "c"], 7)] == [3, 2, 2]
    assert allocations([], 4) == ()


def test_sacct_argv_covers_the_window_in_local_time() -> None:
    since, until = 1_767_240_000.5, 1_767_243_600.25
    argv = sacct_argv(since, until)
    assert argv[:4] == ["sacct", "--json", "-X", "--allusers"]
    lo = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(1_767_240_000))
    hi = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(1_767_243_601))
    assert argv[4:] == [f"--starttime={lo}", f"--endtime={hi}"]


def _runner(rc: int, stdout: str = "", stderr: str = "") -> Any:
    import subprocess

    def run(argv: Sequence[str], env: Mapping[str, str] | None, timeout: float) -> Any:
        return subprocess.CompletedProcess(list(argv), rc, stdout, stderr)

    return run


def test_slurmdbd_down_is_scheduler_unreachable() -> None:
    # What sacct 22.05 printed with the lab's slurmdbd stopped (26.05: the same but the
    # first line's function name).
    printed = (
        "sacct: error: slurm_persist_conn_open_without_init: failed to open persistent"
        " connection to host:localhost:57397: Connection refused\n"
        "sacct: error: Sending PersistInit msg: Connection refused\n"
        "sacct: error: Problem talking to the database: Connection refused\n"
    )
    for stderr in (printed, "sacct: error: Problem talking to the database: Unknown error"):
        with pytest.raises(FactoryctlError) as err:
            SlurmCLI(runner=_runner(1, stderr=stderr)).jobs_between(0.0, 10.0)
        assert err.value.status is ExitStatus.SCHEDULER_UNREACHABLE
        assert "\n" not in err.value.message
        assert err.value.message.startswith("scheduler unreachable (sacct --json -X --allusers)")
        assert "is slurmdbd running" in err.value.message


def test_jobs_between_through_the_cli_backend_and_the_gate() -> None:
    cli = SlurmCLI(runner=_runner(0, stdout=(FIXTURES / "sacct_24.11.json").read_text()))
    gate = checked(cli)
    assert hasattr(gate, "jobs_between")
    assert len(gate.jobs_between(0.0, 10.0)) == 7
    assert cli.calls[-1][0] == "sacct"
    # A backend without accounting has none behind the gate either.
    assert not hasattr(checked(_Squeue([])), "jobs_between")


class _Squeue:
    def __init__(self, jobs: list[Job], accounted: list[Job] | None = None,
                 error: FactoryctlError | None = None) -> None:  # fmt: skip
        self._jobs, self._accounted, self._error = jobs, accounted, error

    def nodes(self) -> list[Any]:
        return []

    def jobs(self) -> list[Job]:
        return self._jobs


class _Accounted(_Squeue):
    def jobs_between(self, since: float, until: float) -> list[Job]:
        if self._error is not None:
            raise self._error
        return list(self._accounted or [])


def _job(job_id: str, start: float | None, end: float | None, **kw: Any) -> Job:
    state = JobState.COMPLETED if end is not None else JobState.RUNNING
    return Job(job_id, "u", start_time=start, end_time=end, state=kw.pop("state", state), **kw)


def test_accounting_adds_jobs_squeue_forgot_and_squeue_wins_the_rest() -> None:
    live = _job("7", 100.0, None, allocations=(Allocation("gpu01", (0, 1)),))
    old = _job("3", 10.0, 50.0, account="proj-b")
    stale = _job("7", 100.0, None, allocations=(Allocation("gpu01", (), gpus=2),))
    outside = _job("1", 1.0, 5.0)
    never = _job("9", None, None, state=JobState.CANCELLED)
    warnings: list[str] = []
    jobs, known, accounted = scheduler_jobs(
        _Accounted([live], [old, stale, outside, never]), 20.0, 200.0, warnings
    )
    assert {j.job_id: j for j in jobs} == {"7": live, "3": old}
    assert known == {"1", "3", "7", "9"} and warnings == [] and accounted


def test_accounting_down_degrades_the_report_with_a_warning() -> None:
    down = FactoryctlError(
        "scheduler unreachable (sacct --json -X): sacct: error: Problem talking to the database",
        ExitStatus.SCHEDULER_UNREACHABLE,
    )
    warnings: list[str] = []
    live = _job("7", 100.0, None)
    jobs, _, accounted = scheduler_jobs(_Accounted([live], error=down), 20.0, 200.0, warnings)
    assert jobs == [live] and not accounted
    assert len(warnings) == 1 and "accounting unavailable" in warnings[0]
    assert "Problem talking to the database" in warnings[0]
    # Without accounting at all there is nothing to warn about.
    warnings.clear()
    assert scheduler_jobs(_Squeue([live]), 20.0, 200.0, warnings)[0] == [live]
    assert warnings == []


@pytest.mark.parametrize("tag", GENERATIONS)
def test_admin_comment_from_accounting_is_read_and_null_is_empty(tag: str) -> None:
    doc = _doc(tag)
    jobs = doc["jobs"]
    assert parse_sacct(json.dumps(doc))[0].admin_comment == ""  # as recorded: none yet
    jobs[0]["comment"]["administrator"] = "site note; factoryctl:v1 job=7 energy_j=12.5"
    assert parse_sacct(json.dumps(doc))[0].admin_comment.endswith("energy_j=12.5")
    jobs[0]["comment"] = ["not", "an", "object"]
    with pytest.raises(SlurmShapeError, match="'comment'"):
        parse_sacct(json.dumps(doc))
