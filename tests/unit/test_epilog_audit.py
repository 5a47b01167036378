"""``factoryctl job-epilog`` in the audit log: the AdminComment write changes Slurm's
accounting, so every run (written, skipped, failed) is a start/result pair in the audit
log, as drain/resume/rollout are; an audit log that cannot be written, or hangs, is one
warning and never stops the comment. In-process with a fake scheduler and a recorded
Prometheus (the job counters' answers); the real slurmctld/slurmdbd/Prometheus path is
tests/integration/test_energy_epilog.py. Cost: ~0.3 s.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from factoryctl.actions import epilog_audit
from factoryctl.cli.env import Environment
from factoryctl.cli.main import main
from factoryctl.errors import ExitStatus
from factoryctl.model import Allocation, Job, JobState
from factoryctl.telemetry import schema as native
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions
from tests.conftest import FROZEN_NOW, Result

SEGMENT = "factoryctl:v1 job=4242 energy_j=5000.0 gpu_s=7200.0 active_gpu_s=6000.0 src=job-counter"
ENDED = Job(
    "4242",
    "ada",
    state=JobState.COMPLETED,
    start_time=FROZEN_NOW - 3600,
    end_time=FROZEN_NOW - 60,
    allocations=(Allocation("gpu01", (0, 1)),),
)
# The exporter's per-job counters at the job's end (the base before it is 0: no answer).
COUNTERS = {
    native.JOB_ENERGY: 5000.0,
    native.JOB_GPU_SECONDS: 7200.0,
    native.JOB_ACTIVE_GPU_SECONDS: 6000.0,
}


def _prometheus(req: httpx.Request) -> httpx.Response:
    form = dict(httpx.QueryParams(req.content.decode())) if req.method == "POST" else {}
    query = req.url.params.get("query") or form.get("query", "")
    result: list[dict[str, Any]] = []
    if "max_over_time" in query:
        for metric, value in COUNTERS.items():
            if metric in query:
                result = [{"metric": {"job_id": "4242"}, "value": [FROZEN_NOW, str(value)]}]
    data = {"resultType": "vector", "result": result}
    return httpx.Response(200, json={"status": "success", "data": data})


def _source() -> PrometheusSource:
    transport = httpx.MockTransport(_prometheus)
    client = PromClient(PromConfig("http://prom:9090"), transport=transport)  # type: ignore[arg-type]
    options = SourceOptions("native", scrape_interval=15.0, search_delay=0.0)
    return PrometheusSource(client, options=options, clock=lambda: FROZEN_NOW)


class Jobs:
    """slurmctld's job list; records AdminComment writes (or refuses them)."""

    name = "fake"

    def __init__(self, job: Job, refuse: str = "") -> None:
        self.job = job
        self.refuse = refuse
        self.written: list[tuple[str, str]] = []

    def jobs(self) -> list[Job]:
        return [self.job]

    def set_admin_comment(self, job_id: str, comment: str) -> None:
        if self.refuse:
            from factoryctl.errors import FactoryctlError

            raise FactoryctlError(self.refuse, ExitStatus.SCHEDULER_ERROR)
        self.written.append((job_id, comment))


def _run(sched: Jobs, state: Path, *argv: str, prometheus: bool = True) -> Result:
    out, err = io.StringIO(), io.StringIO()
    environ = {"HOME": "/nonexistent", "XDG_STATE_HOME": str(state), "USER": "slurm"}
    env = Environment(stdout=out, stderr=err, stdin_isatty=False, environ=environ,
                      clock=lambda: FROZEN_NOW)  # fmt: skip
    env.scheduler_factory = lambda _env: sched  # type: ignore[assignment,return-value]
    if prometheus:
        env.source_factory = lambda _env: _source()  # type: ignore[assignment,return-value]
    status = main(["job-epilog", *argv], env)
    return Result(status, out.getvalue(), err.getvalue())


def _records(state: Path) -> list[dict[str, Any]]:
    path = state / "factoryctl" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _pair(state: Path) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    start, result = _records(state)
    assert (start["event"], result["event"]) == ("start", "result")
    assert start["id"] == result["id"]
    for rec in (start, result):
        assert (rec["verb"], rec["job_id"], rec["user"]) == ("job-epilog", "4242", "slurm")
    return start, result


def test_a_write_is_logged_with_the_comment_before_and_after(tmp_path: Path) -> None:
    sched = Jobs(replace(ENDED, admin_comment="billing: project X"))
    res = _run(sched, tmp_path, "4242")
    assert res.status == 0, res.stderr
    assert sched.written == [("4242", f"billing: project X; {SEGMENT}")]
    start, result = _pair(tmp_path)
    assert start["argv"] == ["job-epilog", "--timeout", "30", "4242"]
    assert result["status"] == "ok"
    assert result["nodes"] == "gpu01"
    assert result["admin_comment_before"] == "billing: project X"
    assert result["admin_comment"] == f"billing: project X; {SEGMENT}"
    assert result["record"] == SEGMENT
    # ``factoryctl audit`` shows it beside drains and rollouts.
    audit = _run_audit(tmp_path)
    (item,) = audit["items"]
    assert (item["verb"], item["status"], item["job_id"]) == ("job-epilog", "ok", "4242")


def _run_audit(state: Path) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, stdin_isatty=False,
                      environ={"HOME": "/nonexistent", "XDG_STATE_HOME": str(state)})  # fmt: skip
    assert main(["audit", "-o", "json"], env) == 0, err.getvalue()
    return dict(json.loads(out.getvalue()))


@pytest.mark.parametrize(
    ("comment", "message"),
    [
        (f"ops; {SEGMENT}", "already recorded"),
        ("JS1:eyJncHVzIjogMn0=", "the AdminComment is another tool's"),
    ],
)
def test_skips_are_logged_and_nothing_is_written(
    tmp_path: Path, comment: str, message: str
) -> None:
    sched = Jobs(replace(ENDED, admin_comment=comment))
    res = _run(sched, tmp_path, "4242")
    assert res.status == 0, res.stderr
    assert sched.written == []
    _start, result = _pair(tmp_path)
    assert result["status"] == "skipped" and message in result["message"], result
    assert result["admin_comment_before"] == comment and result["admin_comment"] is None


@pytest.mark.parametrize(
    ("job", "refuse", "status", "message"),
    [
        (replace(ENDED, job_id="99"), "", ExitStatus.NOT_FOUND, "known neither to slurmctld"),
        (ENDED, "sacctmgr: You are not running a supported accounting_storage plugin",
         ExitStatus.SCHEDULER_ERROR, "only Slurm's accounting can take"),
    ],
)  # fmt: skip
def test_failures_are_logged_with_their_exit_status(
    tmp_path: Path, job: Job, refuse: str, status: ExitStatus, message: str
) -> None:
    res = _run(Jobs(job, refuse), tmp_path, "4242")
    assert res.status == status, res
    assert len(res.stderr.splitlines()) == 1 and message in res.stderr, res.stderr
    _start, result = _pair(tmp_path)
    assert result["status"] == "failed" and message in result["message"], result
    assert result["exit_status"] == int(status)


def test_prometheus_unreachable_is_a_logged_failure(tmp_path: Path) -> None:
    sched = Jobs(ENDED)
    out, err = io.StringIO(), io.StringIO()
    environ = {"HOME": "/nonexistent", "XDG_STATE_HOME": str(tmp_path),
               "FACTORYCTL_PROMETHEUS_URL": "http://127.0.0.1:9", "USER": "slurm"}  # fmt: skip
    env = Environment(stdout=out, stderr=err, stdin_isatty=False, environ=environ,
                      clock=lambda: FROZEN_NOW)  # fmt: skip
    env.scheduler_factory = lambda _env: sched  # type: ignore[assignment,return-value]
    assert main(["job-epilog", "4242"], env) == ExitStatus.TELEMETRY_UNREACHABLE
    _start, result = _pair(tmp_path)
    assert result["status"] == "failed"
    assert result["exit_status"] == int(ExitStatus.TELEMETRY_UNREACHABLE)
    assert sched.written == []


def test_a_dry_run_is_not_an_action(tmp_path: Path) -> None:
    sched = Jobs(ENDED)
    res = _run(sched, tmp_path, "--dry-run", "4242")
    assert res.status == 0, res.stderr
    assert f"would write AdminComment={SEGMENT}" in res.stdout
    assert _records(tmp_path) == [] and sched.written == []


def test_an_unwritable_audit_log_is_one_warning_and_the_comment_is_written(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the log's directory should be\n")
    sched = Jobs(ENDED)
    res = _run(sched, blocker, "4242")
    assert res.status == 0, res.stderr
    assert sched.written == [("4242", SEGMENT)]
    (warning,) = res.stderr.splitlines()
    assert warning.startswith("factoryctl: warning: cannot write the audit log ")
    assert "job 4242's epilog goes on without it" in warning


def test_a_hung_audit_log_does_not_hold_the_epilog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log on a filesystem that never answers: each append is given up after its bound,
    and the epilog goes on (the append that hangs is left to its daemon thread)."""
    release = threading.Event()
    hung: list[Mapping[str, Any]] = []

    def hang(path: Path, record: Mapping[str, Any]) -> None:
        hung.append(record)
        release.wait(30)

    monkeypatch.setattr(epilog_audit, "append_record", hang)
    monkeypatch.setattr(epilog_audit, "APPEND_SECONDS", 0.05)
    sched = Jobs(ENDED)
    try:
        res = _run(sched, tmp_path, "4242")
    finally:
        release.set()
    assert res.status == 0, res.stderr
    assert sched.written == [("4242", SEGMENT)]
    assert [r["event"] for r in hung] == ["start", "result"]
    (warning,) = res.stderr.splitlines()
    assert "no answer within 0.05s" in warning
