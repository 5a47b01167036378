"""Plans, guards, the audit log, execute and wait, over the demo scheduler (a SimFactory)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from factoryctl.actions.audit import AuditLog, summarize
from factoryctl.actions.execute import execute, prepare
from factoryctl.actions.guards import BlastRadius, refusal_error
from factoryctl.actions.outcome import CHANGED, PENDING, Request
from factoryctl.actions.plan import Step, Verb, owned_by_factoryctl, stored_reason
from factoryctl.actions.timespec import parse_duration, parse_start
from factoryctl.actions.waiting import wait
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import NodeState
from factoryctl.scheduler.demo import DemoScheduler
from factoryctl.sim import SimConfig, SimFactory
from factoryctl.sim.workload import Workload

RADIUS = BlastRadius(ratio=0.5, max_nodes=64)


@pytest.fixture
def sched() -> DemoScheduler:
    sim = SimFactory(SimConfig(nodes=8, gpus_per_node=8, jobs=False))
    names = sim.node_names
    sim.assign("101", "alice", names[0], [0, 1], Workload.TRAINING)
    sim.assign("102", "bob", names[1], [0, 1, 2, 3, 4, 5, 6, 7], Workload.TRAINING)
    return DemoScheduler(sim, reboot_seconds=30)


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "state" / "audit.jsonl")


def _req(
    verb: Verb, nodes: str, reason: str = "disk swap", force: bool = False, **params: object
) -> Request:
    return Request(verb, nodes, reason, "alice", force, params)


def test_reason_format_and_ownership() -> None:
    assert stored_reason(" bad dimm ", "alice") == "factoryctl: bad dimm (alice)"
    assert owned_by_factoryctl("factoryctl: fw (bob) : reboot issued")
    assert not owned_by_factoryctl("NHC: check_gpu failed")


def test_plan_lists_states_jobs_users_and_gpus(sched: DemoScheduler) -> None:
    plan = prepare(sched, _req(Verb.DRAIN, "gpu[001-003]"), RADIUS)
    by = {n.name: n for n in plan.nodes}
    assert by["gpu001"].state is NodeState.MIXED and by["gpu001"].jobs == ("101",)
    assert by["gpu002"].state is NodeState.ALLOCATED
    assert by["gpu003"].state is NodeState.IDLE and by["gpu003"].jobs == ()
    assert {(j.job_id, j.user, j.gpus) for j in plan.jobs} == {
        ("101", "alice", 2),
        ("102", "bob", 8),
    }
    assert all("keeps running" in j.effect for j in plan.jobs)
    assert plan.gpus_out_of_service == 24
    assert plan.stored_reason == "factoryctl: disk swap (alice)"
    assert plan.targets == ["gpu001", "gpu002", "gpu003"]


def test_blast_radius(sched: DemoScheduler) -> None:
    tight = BlastRadius(ratio=0.10, max_nodes=64)
    assert tight.limit(8) == 1 and tight.limit(1000) == 64 and tight.limit(100) == 10
    plan = prepare(sched, _req(Verb.DRAIN, "gpu[001-002]"), tight)
    err = refusal_error(plan)
    assert err is not None and err.status is ExitStatus.REFUSED
    assert "2 of 8 nodes" in err.message
    forced = prepare(sched, _req(Verb.DRAIN, "gpu[001-002]", force=True), tight)
    assert refusal_error(forced) is None


def test_unknown_and_malformed_nodes_refused_before_any_call(sched: DemoScheduler) -> None:
    for expr, status in (
        ("gpu[001-", ExitStatus.USAGE),
        ("gpu999", ExitStatus.NOT_FOUND),
        ("a;b", ExitStatus.USAGE),
    ):
        with pytest.raises(FactoryctlError) as info:
            prepare(sched, _req(Verb.DRAIN, expr), RADIUS)
        assert info.value.status is status
    assert sched.calls == []


def test_drain_then_drain_again_is_idempotent(sched: DemoScheduler, audit: AuditLog) -> None:
    first = execute(sched, _req(Verb.DRAIN, "gpu[001,003]"), RADIUS, audit)
    assert first.status is ExitStatus.OK
    assert first.results["gpu001"] == {"result": CHANGED, "state": "draining"}
    assert first.results["gpu003"] == {"result": CHANGED, "state": "drained"}
    again = execute(sched, _req(Verb.DRAIN, "gpu[001,003]", reason="other"), RADIUS, audit)
    assert again.status is ExitStatus.OK
    assert again.plan.targets == [] and "nothing to do" in again.message
    assert all(r["result"] == "unchanged" for r in again.results.values())
    # The first reason is kept: a second drain never overwrites who drained it and why.
    assert {n.name: n.reason for n in sched.nodes()}["gpu003"] == "factoryctl: disk swap (alice)"
    assert len(sched.calls) == 1


def test_resume_only_what_factoryctl_drained(sched: DemoScheduler, audit: AuditLog) -> None:
    sched.sim.set_admin("gpu004", drain=True, reason="NHC: check_gpu failed")
    execute(sched, _req(Verb.DRAIN, "gpu003"), RADIUS, audit)
    plan = prepare(sched, _req(Verb.RESUME, "gpu[003-005]", reason=""), RADIUS)
    steps = {n.name: (n.step, n.note) for n in plan.nodes}
    assert steps["gpu003"][0] is Step.ACT
    assert steps["gpu004"][0] is Step.REFUSE and "NHC: check_gpu failed" in steps["gpu004"][1]
    assert steps["gpu005"] == (Step.SKIP, "already in service")
    with pytest.raises(FactoryctlError) as info:
        execute(sched, _req(Verb.RESUME, "gpu[003-005]", reason=""), RADIUS, audit)
    assert info.value.status is ExitStatus.REFUSED and "--force" in info.value.message
    assert {n.name: n.state for n in sched.nodes()}["gpu003"] is NodeState.DRAINED  # untouched
    forced = execute(sched, _req(Verb.RESUME, "gpu[003-005]", reason="", force=True), RADIUS, audit)
    assert forced.status is ExitStatus.OK
    states = {n.name: n.state for n in sched.nodes()}
    assert states["gpu003"] is NodeState.IDLE and states["gpu004"] is NodeState.IDLE
    events = [r["event"] for r in audit.records()]
    assert events == ["start", "result", "refused", "start", "result"]


def test_drain_wait_until_drained_and_timeout(sched: DemoScheduler, audit: AuditLog) -> None:
    outcome = execute(sched, _req(Verb.DRAIN, "gpu001"), RADIUS, audit)
    clock = [0.0]
    progress: list[tuple[int, int]] = []

    def sleep(s: float) -> None:
        clock[0] += s
        if clock[0] >= 3:
            sched.sim.release("101")

    done = wait(
        sched,
        outcome,
        10,
        audit,
        interval=1,
        sleep=sleep,
        clock=lambda: clock[0],
        progress=lambda d, t, v: progress.append((d, t)),
    )
    assert done.status is ExitStatus.OK and done.results["gpu001"]["state"] == "drained"
    assert progress[0] == (0, 1) and progress[-1] == (1, 1)
    outcome2 = execute(sched, _req(Verb.DRAIN, "gpu002"), RADIUS, audit)
    clock[0] = 0.0
    late = wait(
        sched,
        outcome2,
        5,
        audit,
        interval=1,
        sleep=lambda s: clock.__setitem__(0, clock[0] + s),
        clock=lambda: clock[0],
    )
    assert late.status is ExitStatus.TIMEOUT and late.results["gpu002"]["result"] == PENDING
    assert summarize(audit.records())[-1]["wait"]["status"] == "timeout"


def test_reboot_next_state_resume(sched: DemoScheduler, audit: AuditLog) -> None:
    outcome = execute(
        sched, _req(Verb.REBOOT, "gpu003", next_state="resume", asap=False), RADIUS, audit
    )
    assert outcome.status is ExitStatus.OK
    assert outcome.results["gpu003"]["state"] == "rebooting"

    def sleep(s: float) -> None:
        sched.sim.advance(s * 10)

    done = wait(sched, outcome, 60, audit, interval=1, sleep=sleep)
    assert done.status is ExitStatus.OK and done.results["gpu003"]["state"] == "idle"


def test_scheduler_failure_midway_is_partial(sched: DemoScheduler, audit: AuditLog) -> None:
    real_drain = sched.drain

    def half(nodes: list[str], reason: str) -> None:
        real_drain(nodes[:1], reason)
        raise FactoryctlError("scontrol update: boom", ExitStatus.SCHEDULER_ERROR)

    sched.drain = half  # type: ignore[method-assign]
    outcome = execute(sched, _req(Verb.DRAIN, "gpu[003-004]"), RADIUS, audit)
    assert outcome.status is ExitStatus.PARTIAL
    assert outcome.results["gpu003"]["result"] == "changed"
    assert outcome.results["gpu004"]["result"] == "failed"
    assert "boom" in outcome.message


def test_crash_mid_action_leaves_an_incomplete_record(
    sched: DemoScheduler, audit: AuditLog
) -> None:
    def crash(nodes: list[str], reason: str) -> None:
        raise KeyboardInterrupt

    sched.drain = crash  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        execute(sched, _req(Verb.DRAIN, "gpu003"), RADIUS, audit)
    (entry,) = summarize(audit.records())
    assert entry["status"] == "interrupted"
    # A process killed outright writes no result at all: the start record remains.
    lines = audit.path.read_text().splitlines()
    audit.path.write_text(lines[0] + "\n")
    (entry,) = summarize(audit.records())
    assert entry["status"] == "incomplete" and entry["plan"]["targets"] == ["gpu003"]


def test_audit_records_are_complete_json_lines(sched: DemoScheduler, audit: AuditLog) -> None:
    execute(
        sched,
        _req(Verb.DRAIN, "gpu003", reason="it's; `id` $(x)"),
        RADIUS,
        audit,
        argv=["factoryctl", "drain"],
    )
    start, result = (json.loads(line) for line in audit.path.read_text().splitlines())
    assert start["event"] == "start" and result["event"] == "result" and start["id"] == result["id"]
    assert start["user"] == "alice" and start["verb"] == "drain" and start["nodes"] == "gpu003"
    assert start["reason"] == "factoryctl: it's; `id` $(x) (alice)"
    assert start["plan"]["nodes"][0]["state"] == "idle" and start["argv"] == ["factoryctl", "drain"]
    assert result["status"] == "ok" and result["result"]["gpu003"]["state"] == "drained"
    assert oct(audit.path.stat().st_mode & 0o777) == "0o600"


def test_two_operators_on_overlapping_nodes(sched: DemoScheduler, audit: AuditLog) -> None:
    outcomes = []
    errors = []

    def act(nodes: str, user: str) -> None:
        try:
            outcomes.append(execute(sched, Request(Verb.DRAIN, nodes, "swap", user), RADIUS, audit))
        except FactoryctlError as err:  # pragma: no cover - would fail the test below
            errors.append(err)

    threads = [
        threading.Thread(target=act, args=(n, u))
        for n, u in (("gpu[003-004]", "alice"), ("gpu[004-005]", "bob"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(o.status is ExitStatus.OK for o in outcomes)
    entries = summarize(audit.records())
    assert len(entries) == 2 and all(e["status"] == "ok" for e in entries)
    # Whoever came second saw gpu004 already drained and left the first reason in place.
    second = entries[1]
    assert second["result"]["gpu004"]["result"] == "unchanged"
    reasons = {n.name: n.reason for n in sched.nodes()}
    assert reasons["gpu004"] == f"factoryctl: swap ({entries[0]['user']})"
    assert {reasons["gpu003"], reasons["gpu005"]} == {
        "factoryctl: swap (alice)",
        "factoryctl: swap (bob)",
    }


def test_maintenance_create_and_delete(sched: DemoScheduler, audit: AuditLog) -> None:
    now = sched.sim.now
    outcome = execute(
        sched,
        _req(
            Verb.MAINTENANCE,
            "gpu[005-006]",
            name="m1",
            start_time=now,
            duration_seconds=3600,
            users=["root"],
        ),
        RADIUS,
        audit,
    )
    assert outcome.status is ExitStatus.OK
    assert [r.name for r in sched.reservations()] == ["m1"]
    assert {n.name: n.state for n in sched.nodes()}["gpu005"] is NodeState.MAINT
    gone = execute(sched, _req(Verb.MAINTENANCE_DELETE, "", reason="", name="m1"), RADIUS, audit)
    assert gone.status is ExitStatus.OK and sched.reservations() == []
    with pytest.raises(FactoryctlError) as info:
        execute(sched, _req(Verb.MAINTENANCE_DELETE, "", reason="", name="m1"), RADIUS, audit)
    assert info.value.status is ExitStatus.NOT_FOUND


def test_time_specs() -> None:
    assert (
        parse_duration("90") == 90
        and parse_duration("1h30m") == 5400
        and parse_duration("2d") == 172800
    )
    assert parse_start("now+2h", 1000.0) == 8200.0 and parse_start("now", 5.0) == 5.0
    for bad in ("", "5x", "-3", "h"):
        with pytest.raises(FactoryctlError):
            parse_duration(bad)
    with pytest.raises(FactoryctlError):
        parse_start("tomorrow-ish", 0.0)


def test_wait_covers_nodes_already_draining(sched: DemoScheduler, audit: AuditLog) -> None:
    execute(sched, _req(Verb.DRAIN, "gpu001"), RADIUS, audit)
    again = execute(sched, _req(Verb.DRAIN, "gpu001"), RADIUS, audit)
    assert again.results["gpu001"]["result"] == "unchanged"
    clock = [0.0]

    def sleep(s: float) -> None:
        clock[0] += s
        sched.sim.release("101")

    done = wait(sched, again, 10, audit, interval=1, sleep=sleep, clock=lambda: clock[0])
    assert done.status is ExitStatus.OK and clock[0] >= 1
    assert done.results["gpu001"] == {"result": "unchanged", "state": "drained"}


def test_audit_lock_times_out_as_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", lock_timeout=0.2)
    with log.lock():
        other = AuditLog(tmp_path / "audit.jsonl", lock_timeout=0.2)
        with pytest.raises(FactoryctlError) as info, other.lock():
            pass
    assert info.value.status is ExitStatus.REFUSED
    with log.lock():  # released: free again
        pass


def test_unwritable_audit_log_stops_the_action(sched: DemoScheduler, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = AuditLog(blocker / "audit.jsonl")  # parent is a file: cannot be created
    with pytest.raises(FactoryctlError):
        execute(sched, _req(Verb.DRAIN, "gpu003"), RADIUS, log)
    assert sched.calls == []  # nothing changed without a record


def test_drain_racing_another_operator_is_unchanged_not_failed(
    sched: DemoScheduler, audit: AuditLog
) -> None:
    real_drain = sched.drain

    def raced(nodes: list[str], reason: str) -> None:
        real_drain(nodes, reason)
        real_drain(nodes, "factoryctl: theirs (bob)")  # bob's write lands last

    sched.drain = raced  # type: ignore[method-assign]
    outcome = execute(sched, _req(Verb.DRAIN, "gpu003"), RADIUS, audit)
    assert outcome.status is ExitStatus.OK
    assert outcome.results["gpu003"]["result"] == "unchanged"
    assert "theirs (bob)" in outcome.results["gpu003"]["note"]


def test_reboot_that_would_resume_a_health_check_drain_is_refused(sched: DemoScheduler) -> None:
    sched.sim.set_admin("gpu006", drain=True, reason="NHC: XID 79")
    plan = prepare(sched, _req(Verb.REBOOT, "gpu006", next_state="resume"), RADIUS)
    assert plan.nodes[0].step is Step.REFUSE and "--next-state down" in plan.nodes[0].note
    ok = prepare(sched, _req(Verb.REBOOT, "gpu006", next_state="down"), RADIUS)
    assert ok.nodes[0].step is Step.ACT
    forced = prepare(sched, _req(Verb.REBOOT, "gpu006", force=True, next_state="resume"), RADIUS)
    assert forced.nodes[0].step is Step.ACT and "--force" in forced.nodes[0].note
