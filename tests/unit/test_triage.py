from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from factoryctl.durations import parse_duration, parse_time
from factoryctl.errors import ExitStatus, UsageError
from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.sim.snapshot import build_snapshot
from factoryctl.triage import Alert, Severity, triage, worst
from tests.conftest import Result


class _Source:
    def __init__(self, sim: SimFactory, alerts: list[Alert] | None = None) -> None:
        self.sim, self._alerts = sim, alerts or []

    def snapshot(self):  # type: ignore[no-untyped-def]
        return build_snapshot(self.sim)

    def alerts(self) -> list[Alert]:
        return self._alerts


def _factory() -> SimFactory:
    sim = SimFactory(SimConfig(nodes=4, gpus_per_node=4, jobs=False))
    sim.assign("100", "ada", "gpu001", [0, 1, 2, 3], Workload.TRAINING)
    sim.assign("200", "bob", "gpu002", [0, 1], Workload.TRAINING)
    sim.assign("300", "cy", "gpu003", [0, 1], Workload.IDLE)
    sim.advance(30, 1)
    return sim


def test_healthy_factory_has_no_problems() -> None:
    sim = SimFactory(SimConfig(nodes=2, gpus_per_node=2, jobs=False))
    sim.assign("1", "ada", "gpu001", [0, 1], Workload.TRAINING)
    sim.advance(10, 1)
    assert triage(build_snapshot(sim)) == []


def test_hardware_xid_suggests_drain_and_names_the_job() -> None:
    sim = _factory()
    sim.inject_xid("gpu002", 1, 48)
    sim.advance(2, 1)
    problems = triage(build_snapshot(sim))
    first = problems[0]
    assert first.severity is Severity.CRITICAL and first.kind == "gpu_xid_hardware"
    assert (first.node, first.gpu) == ("gpu002", 1)
    assert first.jobs == (("200", "bob"),)
    assert (
        first.action == "factoryctl drain gpu002 --reason 'XID 48 (double-bit ECC error) on GPU 1'"
    )


def test_application_xid_tells_the_user_and_does_not_drain() -> None:
    sim = _factory()
    sim.inject_xid("gpu001", 3, 13)
    problems = triage(build_snapshot(sim))
    app = next(p for p in problems if p.kind == "gpu_xid_application")
    assert app.severity is Severity.WARNING and app.jobs == (("100", "ada"),)
    assert app.action.startswith("tell ada (job 100)") and "drain" not in app.action


def test_xid_79_is_a_lost_gpu_and_the_nhc_drain_is_reported() -> None:
    sim = _factory()
    sim.inject_xid("gpu001", 2, 79)
    problems = triage(build_snapshot(sim))
    kinds = [(p.kind, p.node) for p in problems]
    assert kinds[0] == ("gpu_lost", "gpu001")
    assert ("node_drained", "gpu001") in kinds
    drained = next(p for p in problems if p.kind == "node_drained")
    assert drained.action.endswith("--force")  # the drain is NHC's, not ours


def test_idle_allocated_job_and_since_filter() -> None:
    sim = _factory()
    idle = [p for p in triage(build_snapshot(sim)) if p.kind == "idle_allocated"]
    assert [p.jobs for p in idle] == [(("300", "cy"),)]
    sim.inject_xid("gpu001", 0, 13)
    sim.advance(3600, 60)
    snap = build_snapshot(sim)
    assert any(p.kind == "gpu_xid_application" for p in triage(snap))
    assert not any(p.kind == "gpu_xid_application" for p in triage(snap, since=snap.time - 600))


def test_alerts_are_correlated_to_jobs_and_rank_first() -> None:
    sim = _factory()
    alert = Alert(
        "GPUThermalThrottling",
        "critical",
        {"node": "gpu002", "gpu": "0"},
        {"summary": "gpu002 GPU 0 hot", "runbook": "factoryctl drain gpu002 --reason hot"},
    )
    problems = triage(build_snapshot(sim), [alert])
    assert problems[0].source == "alert" and problems[0].jobs == (("200", "bob"),)
    assert worst(problems) is Severity.CRITICAL


def test_triage_command_json_and_exit_codes(run_cli: Callable[..., Result]) -> None:
    sim = _factory()
    res = run_cli("triage", "-o", "json", "--exit-code", source=_Source(sim))
    assert res.status == ExitStatus.TRIAGE_WARNING  # only the idle job
    doc = json.loads(res.stdout)
    assert doc["status"] == "warning" and doc["items"][0]["users"] == ["cy"]
    sim.inject_xid("gpu004", 0, 79)
    res = run_cli("triage", "--exit-code", source=_Source(sim))
    assert res.status == ExitStatus.TRIAGE_CRITICAL and "gpu004" in res.stdout
    assert run_cli("triage", source=_Source(sim)).status == 0  # without --exit-code
    res = run_cli("triage", "--since", "yesterday-ish", source=_Source(sim))
    assert res.status == ExitStatus.USAGE and "--since" in res.stderr


def test_durations() -> None:
    assert (
        parse_duration("1h30m") == 5400
        and parse_duration("90") == 90
        and parse_duration("2d") == 172800
    )
    assert parse_time("2h", 10_000.0) == 2800.0
    assert parse_time("2026-01-01T00:00:00Z", 0) == 1_767_225_600.0
    with pytest.raises(UsageError):
        parse_duration("soon")
