"""rollout: the planner, the per-node state machine, capacity, the breaker and journal
replay, over a fake scheduler whose clock the runner's sleep advances."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from factoryctl.actions.audit import AuditLog
from factoryctl.actions.guards import BlastRadius
from factoryctl.actions.rollout_journal import Campaign, Store, replay
from factoryctl.actions.rollout_phases import (
    BREAKER,
    DONE,
    DRAINING,
    EXEC,
    FAILED,
    FINISHED,
    PAUSED,
    PENDING,
    REBOOT,
    RESUMING,
    SKIPPED,
)
from factoryctl.actions.rollout_plan import (
    RolloutSpec,
    build_rollout_plan,
    command_template,
    create,
    refusal,
    substitute,
)
from factoryctl.actions.rollout_runner import Runner, control
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Allocation, Job, JobState, Node, NodeState
from factoryctl.scheduler.base import NextState, Reservation, ReservationRequest

RADIUS = BlastRadius(ratio=0.5, max_nodes=64)
ENV = {"PATH": "/usr/bin:/bin"}


@dataclasses.dataclass
class FakeNode:
    state: NodeState = NodeState.IDLE
    reason: str = ""
    jobs_until: float = 0.0  # a job runs on the node until this fake time
    reboot_done: float | None = None
    back_by_itself: float | None = None  # when Slurm returns this DOWN node to service
    invalid_reg: bool = False  # registered with a configuration Slurm rejects


class FakeSlurm:
    """Enough of Slurm: drain goes DRAINING while a job runs, reboots take 2 s, a resume
    of a node in service (or of one with an invalid registration) is refused as Slurm
    refuses it."""

    name = "fake"

    def __init__(
        self, count: int = 8, keeps_reason: bool = False, return_to_service: float | None = None
    ) -> None:
        self.keeps_reason = keeps_reason  # Slurm 24.11 without accounting storage
        # ReturnToService=2: a node a reboot left DOWN goes IDLE by itself at its next
        # registration, this many seconds after the reboot is over (None: it stays DOWN).
        self.return_to_service = return_to_service
        self.now = 1000.0
        self.n = {f"n{i:02d}": FakeNode() for i in range(1, count + 1)}
        self.calls: list[tuple[str, str]] = []

    def tick(self, seconds: float) -> None:
        self.now += seconds
        for node in self.n.values():
            busy = node.jobs_until > self.now
            if node.state is NodeState.DRAINING and not busy:
                node.state = NodeState.DRAINED
            if node.state is NodeState.MIXED and not busy:
                node.state = NodeState.IDLE
            if node.back_by_itself is not None and self.now >= node.back_by_itself:
                if node.state is NodeState.DOWN:
                    node.state = NodeState.IDLE
                node.back_by_itself = None
            if node.reboot_done is not None and self.now >= node.reboot_done:
                node.state, node.reboot_done = NodeState.DOWN, None
                if self.return_to_service is not None:
                    node.back_by_itself = self.now + self.return_to_service

    def nodes(self) -> list[Node]:
        return [
            Node(name=k, state=v.state, reason=v.reason, partitions=("gpu",), gpu_count=8)
            for k, v in self.n.items()
        ]

    def jobs(self) -> list[Job]:
        return [
            Job(
                job_id=f"9{k[-2:]}",
                user="alice",
                name="train",
                state=JobState.RUNNING,
                allocations=(Allocation(k, (0, 1)),),
            )
            for k, v in self.n.items()
            if v.jobs_until > self.now
        ]

    def reservations(self) -> list[Reservation]:
        return []

    def drain(self, nodes: Sequence[str], reason: str) -> None:
        for name in nodes:
            self.calls.append(("drain", name))
            node = self.n[name]
            node.reason = reason
            if node.state is not NodeState.DOWN:
                busy = node.jobs_until > self.now
                node.state = NodeState.DRAINING if busy else NodeState.DRAINED

    def resume(self, nodes: Sequence[str]) -> None:
        for name in nodes:
            self.calls.append(("resume", name))
            node = self.n[name]
            if node.state.in_service or node.invalid_reg:
                # slurmctld's _valid_node_state_change: RESUME only for DOWN, DRAIN, FAIL.
                raise FactoryctlError(
                    "scontrol update: slurm_update error: Invalid node state specified",
                    ExitStatus.SCHEDULER_ERROR,
                )
            node.reason = node.reason if self.keeps_reason else ""
            node.state = NodeState.MIXED if node.jobs_until > self.now else NodeState.IDLE

    def clear_reason(self, nodes: Sequence[str]) -> None:
        for name in nodes:
            self.calls.append(("clear_reason", name))
            self.n[name].reason = " "

    def reboot(self, nodes: Sequence[str], reason: str, asap: bool, next_state: NextState) -> None:
        for name in nodes:
            self.calls.append(("reboot", name))
            node = self.n[name]
            node.state, node.reason, node.reboot_done = NodeState.REBOOTING, reason, self.now + 2

    def create_reservation(self, request: ReservationRequest) -> str:
        raise NotImplementedError

    def delete_reservation(self, name: str) -> None:
        raise NotImplementedError


@pytest.fixture
def slurm() -> FakeSlurm:
    return FakeSlurm()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "rollouts")


def _spec(**kw: Any) -> RolloutSpec:
    base: dict[str, Any] = {"hostlist": "n[01-08]", "reason": "driver 550", "user": "erin"}
    return RolloutSpec(**(base | kw))


def _plan(slurm: FakeSlurm, store: Store | None = None, **kw: Any) -> dict[str, Any]:
    held = store.held_nodes() if store else {}
    return build_rollout_plan(_spec(**kw), slurm, RADIUS, ENV, "c0ffee01", held)


class Harness:
    def __init__(self, slurm: FakeSlurm, store: Store, tmp_path: Path) -> None:
        self.slurm, self.store = slurm, store
        self.audit = AuditLog(tmp_path / "audit.jsonl")
        self.events: list[dict[str, Any]] = []
        self.samples: list[int] = []

    def runner(self, campaign: Campaign) -> Runner:
        def sleep(seconds: float) -> None:
            # Sample capacity as Slurm sees it between ticks, then let time pass.
            out = [n for n in self.slurm.nodes() if not n.state.in_service]
            self.samples.append(len(out))
            self.slurm.tick(seconds)

        return Runner(
            store=self.store,
            campaign=campaign,
            scheduler=self.slurm,
            audit=self.audit,
            environ=ENV,
            emit=self.events.append,
            clock=lambda: self.slurm.now,
            sleep=sleep,
            interval=0.5,
        )

    def start(self, **kw: Any) -> tuple[ExitStatus, Runner]:
        plan = build_rollout_plan(_spec(**kw), self.slurm, RADIUS, ENV, "c0ffee01", {})
        assert not plan["refusals"], plan["refusals"]
        campaign = create(self.store, plan, ["test"], self.slurm.now)
        runner = self.runner(campaign)
        return runner.run(), runner


@pytest.fixture
def h(slurm: FakeSlurm, store: Store, tmp_path: Path) -> Harness:
    return Harness(slurm, store, tmp_path)


# -- the plan -----------------------------------------------------------------------------


def test_plan_waves_idle_first_jobs_users_and_floor(slurm: FakeSlurm) -> None:
    slurm.n["n01"].jobs_until = slurm.now + 100
    slurm.n["n01"].state = NodeState.MIXED
    slurm.n["n05"].state, slurm.n["n05"].reason = NodeState.DRAINED, "NHC: gpu lost"
    plan = _plan(slurm, max_unavailable="3")
    # n05 is out for someone else: skipped, and it takes one of the 3 slots.
    assert plan["out_of_service_now"] == ["n05"]
    assert plan["waves"] == [["n02", "n03"], ["n04", "n06"], ["n07", "n08"], ["n01"]]
    assert plan["floor"] == 5 and plan["max_unavailable"] == 3
    by = {n["name"]: n for n in plan["nodes"]}
    assert by["n01"]["jobs"] == ["901"] and by["n01"]["users"] == ["alice"]
    assert by["n05"]["step"] == "skip" and "NHC: gpu lost" in by["n05"]["note"]
    assert plan["stored_reason"] == "factoryctl rollout c0ffee01: driver 550 (erin)"
    assert plan["refusals"] == []


def test_plan_percentage_of_the_partition(slurm: FakeSlurm) -> None:
    assert _plan(slurm, max_unavailable="25%")["max_unavailable"] == 2
    assert _plan(slurm, max_unavailable="1%")["max_unavailable"] == 1


def test_floor_that_cannot_hold_is_refused(slurm: FakeSlurm) -> None:
    for name in ("n07", "n08"):
        slurm.n[name].state = NodeState.DOWN
    plan = _plan(slurm, hostlist="n[01-06]", max_unavailable="2")
    err = refusal(plan)
    assert err is not None and err.status is ExitStatus.REFUSED
    assert "capacity floor cannot hold" in err.message and "n[07-08]" in err.message
    assert slurm.calls == []


def test_blast_radius_applies_to_nodes_out_at_once(slurm: FakeSlurm) -> None:
    # 8 nodes, ratio 0.5: at most 4 at once; the campaign may cover all 8.
    assert _plan(slurm, max_unavailable="4")["refusals"] == []
    assert "blast radius" in _plan(slurm, max_unavailable="5")["refusals"][0]
    assert _plan(slurm, max_unavailable="5", force=True)["refusals"] == []


@pytest.mark.parametrize(
    ("kw", "status", "words"),
    [
        ({"hostlist": "n[01-"}, ExitStatus.USAGE, "malformed"),
        ({"hostlist": "n[01,99]"}, ExitStatus.NOT_FOUND, "n99"),
        ({"exec_cmd": "true"}, ExitStatus.USAGE, "{node}"),
        ({"check_cmd": "/nonexistent/gate {node}"}, ExitStatus.USAGE, "not an executable"),
        ({"check_cmd": "no-such-program-x {node}"}, ExitStatus.USAGE, "no-such-program-x"),
        ({"exec_cmd": "sh -c 'unbalanced {node}"}, ExitStatus.USAGE, "cannot split"),
        ({"max_unavailable": "0"}, ExitStatus.USAGE, "--max-unavailable"),
        ({"max_unavailable": "150%"}, ExitStatus.USAGE, "--max-unavailable"),
        ({"max_failures": 0}, ExitStatus.USAGE, "--max-failures"),
        ({"reason": " "}, ExitStatus.USAGE, "reason"),
    ],
)
def test_bad_input_is_one_error_before_anything(
    slurm: FakeSlurm, kw: dict[str, Any], status: ExitStatus, words: str
) -> None:
    with pytest.raises(FactoryctlError) as info:
        _plan(slurm, **kw)
    assert info.value.status is status and words in info.value.message
    assert "\n" not in info.value.message
    assert slurm.calls == []


def test_exec_argv_is_split_not_a_shell() -> None:
    argv = command_template("--exec", "echo '{node}; id' $(x)", ENV)
    assert substitute(argv, "n01") == ["echo", "n01; id", "$(x)"]


# -- running ------------------------------------------------------------------------------


def test_campaign_check_fails_on_two_nodes_capacity_never_below_floor(h: Harness) -> None:
    status, runner = h.start(
        max_unavailable="2", reboot=True, check_cmd="sh -c 'case {node} in n03|n08) exit 3;; esac'"
    )
    assert status is ExitStatus.PARTIAL
    c = runner.campaign
    assert c.names(DONE) == ["n01", "n02", "n04", "n05", "n06", "n07"]
    assert c.names(FAILED) == ["n03", "n08"]
    assert c.nodes["n03"].step == "check" and "exit status 3" in c.nodes["n03"].note
    for name in ("n03", "n08"):
        node = h.slurm.n[name]
        assert node.state is NodeState.DOWN
        assert node.reason == "factoryctl rollout c0ffee01: check failed: driver 550 (erin)"
    assert all(h.slurm.n[n].state is NodeState.IDLE for n in c.names(DONE))
    assert max(h.samples) <= 2 and h.samples.count(2) > 0
    # Every node drained and rebooted once, resumed only after its check passed.
    assert sorted(n for v, n in h.slurm.calls if v == "reboot") == [
        f"n{i:02d}" for i in range(1, 9)
    ]
    assert {n for v, n in h.slurm.calls if v == "resume"} == set(c.names(DONE))
    # Journal replay agrees with the runner's own view.
    again = replay(h.store.journal(c.id).records())
    assert {n: r.phase for n, r in again.nodes.items()} == {n: r.phase for n, r in c.nodes.items()}
    assert again.status == FINISHED
    audit = [r for r in h.audit.records() if r["event"] == "step"]
    journal = [r for r in h.store.journal(c.id).records() if r["event"] == "node"]
    assert [(r["node"], r["phase"]) for r in audit] == [(r["node"], r["phase"]) for r in journal]


def test_job_outliving_drain_timeout_is_skipped_and_undrained(h: Harness) -> None:
    h.slurm.n["n02"].jobs_until = h.slurm.now + 10_000
    h.slurm.n["n02"].state = NodeState.MIXED
    status, runner = h.start(hostlist="n[01-03]", max_unavailable="1", drain_timeout=5.0)
    assert status is ExitStatus.PARTIAL
    rec = runner.campaign.nodes["n02"]
    assert rec.phase == SKIPPED and "902 (alice)" in rec.note
    assert h.slurm.n["n02"].state is NodeState.MIXED and h.slurm.n["n02"].reason == ""
    assert runner.campaign.names(DONE) == ["n01", "n03"]


def test_breaker_stops_new_nodes_and_pauses(h: Harness) -> None:
    status, runner = h.start(
        max_unavailable="3",
        exec_cmd="sh -c 'test {node} != n01 && test {node} != n02'",
        max_failures=2,
    )
    assert status is ExitStatus.ROLLOUT_BREAKER
    c = runner.campaign
    assert c.names(FAILED) == ["n01", "n02"] and c.names(DONE) == ["n03"]
    assert c.count(PENDING) == 5
    assert c.status == BREAKER and "circuit breaker" in c.message
    # An operator fixes the two nodes by hand, then resumes: the breaker counts afresh.
    for name in ("n01", "n02"):
        h.slurm.resume([name])
    control(h.store, c.id, "resume", "erin", "fixed", h.slurm.now)
    resumed = h.store.load(c.id)
    assert resumed.breaker_base == 2 and not resumed.pause_requested
    assert h.runner(resumed).run() is ExitStatus.PARTIAL
    assert h.store.load(c.id).count(DONE) == 6


def test_pause_finishes_in_flight_then_stops(h: Harness) -> None:
    plan = build_rollout_plan(_spec(max_unavailable="2"), h.slurm, RADIUS, ENV, "c0ffee01", {})
    campaign = create(h.store, plan, [], h.slurm.now)
    runner = h.runner(campaign)
    original = runner.emit

    def emit(event: dict[str, Any]) -> None:
        original(event)
        if event.get("phase") == DRAINING and event["node"] == "n02":
            control(h.store, campaign.id, "pause", "bob", "", h.slurm.now)

    runner.emit = emit
    assert runner.run() is ExitStatus.ROLLOUT_PAUSED
    c = h.store.load(campaign.id)
    assert c.names(DONE) == ["n01", "n02"] and c.count(PENDING) == 6
    assert c.status == PAUSED


def test_abort_leaves_worked_nodes_drained_and_says_why(h: Harness) -> None:
    plan = build_rollout_plan(
        _spec(max_unavailable="2", exec_cmd="sleep 30 {node}"),
        h.slurm,
        RADIUS,
        ENV,
        "c0ffee01",
        {},
    )
    plan["exec"] = ["sh", "-c", "sleep 30", "{node}"]
    campaign = create(h.store, plan, [], h.slurm.now)
    runner = h.runner(campaign)
    original = runner.emit

    def emit(event: dict[str, Any]) -> None:
        original(event)
        if event.get("phase") == EXEC and event["node"] == "n02":
            control(h.store, campaign.id, "abort", "bob", "", h.slurm.now)

    runner.emit = emit
    assert runner.run() is ExitStatus.ROLLOUT_ABORTED
    c = h.store.load(campaign.id)
    assert c.names(FAILED) == ["n01", "n02"]
    assert "n01 (abort failed: aborted during exec)" in c.message
    assert h.slurm.n["n01"].reason.startswith("factoryctl rollout c0ffee01: abort failed")
    assert c.count(PENDING) == 6 and runner.work == {}


# -- crash and replay -----------------------------------------------------------------------


def _journal(h: Harness, phases: dict[str, str], **kw: Any) -> Campaign:
    plan = build_rollout_plan(_spec(**kw), h.slurm, RADIUS, ENV, "c0ffee01", {})
    campaign = create(h.store, plan, [], h.slurm.now)
    for name, phase in phases.items():
        h.store.journal(campaign.id).append(
            {"event": "node", "node": name, "phase": phase, "time": h.slurm.now}
        )
    return h.store.load(campaign.id)


def test_replay_rechecks_each_cut_off_step_against_slurm(h: Harness) -> None:
    s = h.slurm
    ours = "factoryctl rollout c0ffee01: driver 550 (erin)"
    # n01: drain intent written, scontrol never ran (still idle) -> drained again.
    # n02: reboot intent, and the reboot is already over (DOWN, ours) -> not rebooted again.
    s.n["n02"].state, s.n["n02"].reason = NodeState.DOWN, ours
    # n03: done, but the resume was lost -> resumed.
    s.n["n03"].state, s.n["n03"].reason = NodeState.DRAINED, ours
    # n04: failed, and someone resumed it by hand? no: the fail reason was never set.
    s.n["n04"].state, s.n["n04"].reason = NodeState.DRAINED, ours
    # n05: resuming intent, Slurm never got it.
    s.n["n05"].state, s.n["n05"].reason = NodeState.DRAINED, ours
    campaign = _journal(
        h,
        {
            "n01": DRAINING,
            "n02": REBOOT,
            "n03": DONE,
            "n04": FAILED,
            "n05": RESUMING,
        },
        hostlist="n[01-06]",
        max_unavailable="4",
        reboot=True,
    )
    h.store.journal(campaign.id).append(
        {"event": "node", "node": "n04", "phase": FAILED, "step": "check", "time": s.now}
    )
    campaign = h.store.load(campaign.id)
    assert h.runner(campaign).run() is ExitStatus.PARTIAL
    c = h.store.load(campaign.id)
    assert sorted(c.names(DONE)) == ["n01", "n02", "n03", "n05", "n06"]
    reboots = [n for v, n in s.calls if v == "reboot"]
    assert "n02" not in reboots and "n01" in reboots and "n06" in reboots
    assert ("drain", "n01") in s.calls
    assert s.n["n03"].state is NodeState.IDLE and s.n["n05"].state is NodeState.IDLE
    assert s.n["n04"].reason == "factoryctl rollout c0ffee01: check failed: driver 550 (erin)"
    # No node done twice: one "done" record per node.
    done = [r["node"] for r in h.store.journal(c.id).records() if r.get("phase") == DONE]
    assert sorted(done) == sorted(set(done))


def test_replay_of_a_cut_off_reboot_that_never_ran_issues_it(h: Harness) -> None:
    ours = "factoryctl rollout c0ffee01: driver 550 (erin)"
    h.slurm.n["n01"].state, h.slurm.n["n01"].reason = NodeState.DRAINED, ours
    campaign = _journal(h, {"n01": REBOOT}, hostlist="n01", reboot=True)
    assert h.runner(campaign).run() is ExitStatus.OK
    assert [n for v, n in h.slurm.calls if v == "reboot"] == ["n01"]


def test_torn_last_line_is_ignored(h: Harness) -> None:
    campaign = _journal(h, {"n01": DRAINING}, hostlist="n[01-02]")
    with open(h.store.journal(campaign.id).path, "a") as f:
        f.write('{"event":"node","node":"n01","pha')
    assert h.store.load(campaign.id).nodes["n01"].phase == DRAINING


def test_a_node_held_by_an_unfinished_campaign_cannot_be_taken(
    h: Harness, slurm: FakeSlurm, store: Store
) -> None:
    _journal(h, {"n01": DRAINING}, hostlist="n[01-02]")
    plan = _plan(slurm, store, hostlist="n[02-03]")
    assert "held by campaign c0ffee01" in plan["refusals"][0] and "n02" in plan["refusals"][0]
    assert _plan(slurm, store, hostlist="n[03-04]")["refusals"] == []


def test_runner_lock_is_exclusive(store: Store) -> None:
    with store.runner_lock("abc") as got:
        assert got and store.running("abc")
        with store.runner_lock("abc") as again:
            assert not again
    assert not store.running("abc")


def test_a_step_missing_from_the_audit_log_is_copied_on_resume(h: Harness) -> None:
    # Killed between the journal record and its audit copy: the journal has one more.
    campaign = _journal(h, {"n01": DRAINING}, hostlist="n[01-02]")
    assert h.runner(campaign).run() is ExitStatus.OK
    journal = [
        (r["node"], r["phase"])
        for r in h.store.journal(campaign.id).records()
        if r["event"] == "node"
    ]
    audit = [(r["node"], r["phase"]) for r in h.audit.records() if r["event"] == "step"]
    assert audit == journal and ("n01", DRAINING) in audit


@pytest.mark.parametrize("keeps", [False, True], ids=["clears", "keeps-like-24.11"])
def test_nodes_back_in_service_keep_no_campaign_reason(tmp_path: Path, keeps: bool) -> None:
    slurm = FakeSlurm(keeps_reason=keeps)
    slurm.n["n02"].jobs_until = 1e9  # outlives the drain timeout: drain undone, skipped
    h = Harness(slurm, Store(tmp_path / "rollouts"), tmp_path)
    status, runner = h.start(max_unavailable="2", drain_timeout=3.0, reboot=True)
    assert status is ExitStatus.PARTIAL
    assert runner.campaign.nodes["n02"].phase == SKIPPED
    for name, node in slurm.n.items():
        assert not node.reason.startswith("factoryctl rollout "), (name, node)
    cleared = sorted(n for what, n in slurm.calls if what == "clear_reason")
    # Only where Slurm kept ours: a generation that clears it is left alone.
    assert cleared == (sorted(slurm.n) if keeps else [])


def test_a_node_slurm_put_back_in_service_during_its_check_is_done_not_failed(
    tmp_path: Path,
) -> None:
    # ReturnToService=2 (the lab's, and many sites'): the node the reboot left DOWN
    # registers again while its check runs (slurmctld asks every node on every 20th ping;
    # another node's resume triggers one) and Slurm returns it to service itself. Slurm
    # then refuses our resume: the answer sequence seen in CI on 24.11 (DOWN, then IDLE,
    # then "Invalid node state specified"), which left a healthy node drained.
    slurm = FakeSlurm(return_to_service=0.5)
    h = Harness(slurm, Store(tmp_path / "rollouts"), tmp_path)
    status, runner = h.start(
        hostlist="n[01-02]", max_unavailable="2", reboot=True, check_cmd="true {node}"
    )
    c = runner.campaign
    assert status is ExitStatus.OK, c.message
    assert c.names(DONE) == ["n01", "n02"]
    assert "already back in service (idle)" in c.nodes["n01"].note
    assert "Invalid node state specified" in c.nodes["n01"].note
    rebooted = [e for e in h.events if e.get("phase") == "rebooted"]
    assert [e["state"] for e in rebooted] == ["down", "down"]  # DOWN when the check began
    for name in ("n01", "n02"):
        node = slurm.n[name]
        assert node.state is NodeState.IDLE and not node.reason.startswith("factoryctl rollout")
        # Resumed once, never drained again with a failure reason.
        assert [v for v, n in slurm.calls if n == name].count("resume") == 1
        assert [v for v, n in slurm.calls if n == name].count("drain") == 1


def test_a_refused_resume_of_a_node_out_of_service_fails_it_and_says_why(h: Harness) -> None:
    h.slurm.n["n02"].invalid_reg = True  # Slurm refuses to resume it; it stays drained
    status, runner = h.start(hostlist="n[01-02]", max_unavailable="2")
    c = runner.campaign
    assert status is ExitStatus.PARTIAL
    assert c.names(DONE) == ["n01"] and c.names(FAILED) == ["n02"]
    why = (
        "n02: resume failed: scontrol update: slurm_update error: Invalid node state "
        "specified (then Slurm showed n02 drained, reason "
        "'factoryctl rollout c0ffee01: driver 550 (erin)')"
    )
    assert why in c.message  # the campaign's one line says what Slurm answered and showed
    assert (
        h.slurm.n["n02"].reason == "factoryctl rollout c0ffee01: resume failed: driver 550 (erin)"
    )


def test_the_last_message_names_a_few_failures_with_their_notes(tmp_path: Path) -> None:
    h = Harness(FakeSlurm(count=16), Store(tmp_path / "rollouts"), tmp_path)
    status, runner = h.start(
        hostlist="n[01-07]", max_unavailable="7", check_cmd="sh -c 'echo XID 79 on {node}; exit 1'"
    )
    c = runner.campaign
    assert status is ExitStatus.PARTIAL and len(c.names(FAILED)) == 7
    assert "7 failed and left drained (n01: check failed: exit status 1: XID 79 on n01; " in (
        c.message
    )
    assert "n05: check failed" in c.message and "n06:" not in c.message
    assert c.message.endswith(f"; 2 more: factoryctl rollout status {c.id})")
