"""Maintenance campaigns in waves: ``factoryctl rollout``.

A campaign takes each of its nodes through drain -> wait DRAINED -> ``--exec`` ->
``--reboot`` -> ``--check`` -> resume, never more than ``--max-unavailable`` nodes of the
partition out of service at once (nodes out for other reasons count), and stops starting
nodes after ``--max-failures`` failed ones.

The parts: ``rollout_phases`` (node phases, campaign statuses, the reason format),
``rollout_journal`` (the fsync'ed journal, its replay, the store and its locks),
``rollout_plan`` (checks and the plan, before anything changes), ``rollout_records``
(journal, then audit log, then event), ``rollout_work`` (the ``--exec``/``--check``
processes), ``rollout_gate`` (the telemetry gate), ``rollout_steps`` (one node's steps) and
this module (the campaign loop, what a cut-off runner left, and ``rollout pause|abort`` as
control records the loop reads on every tick).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import IO, Any

from factoryctl import hostlists
from factoryctl.actions.rollout_journal import Store, replay
from factoryctl.actions.rollout_phases import (
    ABORTED,
    ACTIVE,
    BREAKER,
    DONE,
    DRAINING,
    FAILED,
    FINISHED,
    PAUSED,
    PENDING,
    RUNNING,
    SKIPPED,
    TERMINAL,
)
from factoryctl.actions.rollout_plan import unavailable
from factoryctl.actions.rollout_steps import Emit, NodeSteps, kill_session
from factoryctl.errors import ExitStatus, FactoryctlError

# How many failed nodes the campaign's last message names with their notes, and how much
# of each note (a check's last line is at most 200 characters already).
SUMMARY_NODES = 5
SUMMARY_NOTE = 200


@dataclass(kw_only=True)
class Runner(NodeSteps):
    # -- capacity -------------------------------------------------------------------------
    def out_of_service(self) -> set[str]:
        part = set(self._spec("partition") or self._nodes)
        out = {n for n in part if n in self._nodes and unavailable(self._nodes[n])}
        return out | set(self.campaign.names(*ACTIVE))

    def breaker_tripped(self) -> bool:
        k = self._spec("max_failures")
        return k is not None and self.campaign.count(FAILED) - self.campaign.breaker_base >= int(k)

    def _start_more(self) -> None:
        limit = int(self._spec("max_unavailable"))
        for name in self.campaign.names(PENDING):
            if len(self.out_of_service()) >= limit:
                return
            node = self._nodes.get(name)
            if node is None:
                continue
            if not node.state.in_service:
                self.phase(
                    name,
                    SKIPPED,
                    note=f"out of service by someone else before its turn: {node.reason or node.state.value}",
                )
                continue
            with self.audit.lock():  # a plain drain elsewhere waits for this one
                self._drain(name)

    def _controls(self) -> None:
        records = self.journal.records()
        fresh = replay(records)
        if fresh.controls_seen != self.campaign.controls_seen:
            self.campaign.pause_requested = fresh.pause_requested
            self.campaign.abort_requested = fresh.abort_requested
            self.campaign.controls_seen = fresh.controls_seen

    # -- reconcile what a cut-off runner left ---------------------------------------------
    def reconcile(self) -> None:
        for name, rec in self.campaign.nodes.items():
            node = self._nodes.get(name)
            if node is None:
                continue
            failure = self.campaign.stored_reason(f"{rec.step} failed")
            if rec.phase == FAILED and self._ours(node) and not node.reason.startswith(failure):
                # Cut off between the record and the reason. A failed node an operator
                # has put back since (not ours any more) is theirs: left alone.
                self._set_failed_reason(name, failure)
            elif rec.phase == SKIPPED and rec.step == "drain" and self._ours(node):
                with contextlib.suppress(FactoryctlError):
                    self.scheduler.resume([name])
            elif (
                rec.phase == DONE
                and self._spec("next_state") == "resume"
                and self._ours(node)
                and not node.state.in_service
            ):
                self._issue_resume(name)

    # -- the loop -----------------------------------------------------------------------------
    def _sync_audit(self) -> None:
        """A runner killed between a journal record and its audit copy left the audit log
        one step short: copy what it lacks, so the two agree."""
        steps = [r for r in self.journal.records() if r.get("event") == "node"]
        audited = sum(
            1
            for r in self.audit.records()
            if r.get("id") == self.campaign.id and r.get("event") == "step"
        )
        for rec in steps[audited:]:
            extra = {k: rec[k] for k in ("step", "note") if k in rec}
            self._audit("step", node=rec["node"], phase=rec["phase"], replayed=True, **extra)

    def run(self) -> ExitStatus:
        self._sync_audit()
        self._audit("resume" if self.campaign.spec.get("resumed") else "run", status=RUNNING)
        while not self._read():
            self.sleep(self.interval)
        self.reconcile()
        left = len(self.campaign.nodes) - self.campaign.count(*TERMINAL)
        self.status(RUNNING, f"{left} node(s) to go")
        try:
            status = self._loop()
        except BaseException:
            for work in self.work.values():
                kill_session(work.proc)
            raise
        self._sweep_reasons()
        return status

    def _sweep_reasons(self) -> None:
        """Nodes given back during the run (drain undone, skipped, aborted) may still
        show this campaign's reason where Slurm keeps one after a resume: blank them."""
        if self._read():
            for name in self.campaign.nodes:
                if name in self._nodes:
                    self.clear_stale_reason(self._nodes[name])

    def _loop(self) -> ExitStatus:
        while True:
            self._controls()
            if self.campaign.abort_requested:
                return self._abort()
            if self._read():
                for name in self.campaign.names(*ACTIVE):
                    self.advance(name)
                stop_starting = self.campaign.pause_requested or self.breaker_tripped()
                if not stop_starting:
                    self._start_more()
            in_flight = self.campaign.names(*ACTIVE)
            pending = self.campaign.names(PENDING)
            if not in_flight:
                if self.breaker_tripped() and pending:
                    failed = hostlists.collect(self.campaign.names(FAILED))
                    self.status(
                        BREAKER,
                        f"circuit breaker: {self.campaign.count(FAILED)} node(s) failed ({failed}); "
                        f"{len(pending)} not started; factoryctl rollout resume {self.campaign.id} "
                        "continues",
                    )
                    self._audit("result", status=BREAKER, message=self.campaign.message)
                    return ExitStatus.ROLLOUT_BREAKER
                if self.campaign.pause_requested and pending:
                    self.status(
                        PAUSED,
                        f"paused: {len(pending)} node(s) not started; "
                        f"factoryctl rollout resume {self.campaign.id} continues",
                    )
                    self._audit("result", status=PAUSED, message=self.campaign.message)
                    return ExitStatus.ROLLOUT_PAUSED
                if not pending:
                    return self._finished()
                if self._nodes and len(self.out_of_service()) >= int(self._spec("max_unavailable")):
                    out = hostlists.collect(sorted(self.out_of_service()))
                    self.status(
                        PAUSED,
                        f"paused: no capacity: {out} out of service, --max-unavailable "
                        f"{self._spec('max_unavailable')}; {len(pending)} node(s) not started; "
                        f"factoryctl rollout resume {self.campaign.id} continues",
                    )
                    self._audit("result", status=PAUSED, message=self.campaign.message)
                    return ExitStatus.ROLLOUT_PAUSED
            self.sleep(self.interval)

    def _finished(self) -> ExitStatus:
        failed = self.campaign.names(FAILED)
        skipped = self.campaign.names(SKIPPED)
        done = self.campaign.count(DONE)
        parts = [f"{done} node(s) done"]
        if failed:
            parts.append(f"{len(failed)} failed and left drained ({self._why_failed(failed)})")
        if skipped:
            parts.append(f"{len(skipped)} skipped ({hostlists.collect(skipped)})")
        self.status(FINISHED, "; ".join(parts))
        self._audit(
            "result", status="partial" if failed or skipped else "ok", message=self.campaign.message
        )
        return ExitStatus.PARTIAL if failed or skipped else ExitStatus.OK

    def _why_failed(self, failed: list[str]) -> str:
        """Each failed node's step and what it said, the first few of them: the one line
        a script or CI keeps must say why (a "resume failed" alone cannot be diagnosed);
        the rest are in ``factoryctl rollout status``."""
        shown = []
        for name in failed[:SUMMARY_NODES]:
            rec = self.campaign.nodes[name]
            note = f": {rec.note[:SUMMARY_NOTE]}" if rec.note else ""
            shown.append(f"{name}: {rec.step} failed{note}")
        if len(failed) > SUMMARY_NODES:
            shown.append(
                f"{len(failed) - SUMMARY_NODES} more: factoryctl rollout status {self.campaign.id}"
            )
        return "; ".join(shown)

    def _abort(self) -> ExitStatus:
        for work in self.work.values():
            kill_session(work.proc)
        self.work.clear()
        self._read()
        left: list[str] = []
        for name in self.campaign.names(*ACTIVE):
            rec = self.campaign.nodes[name]
            if rec.phase == DRAINING:
                # Nothing was done to it yet: give it back.
                self.phase(
                    name, SKIPPED, step="abort", note="aborted before its work: drain undone"
                )
                with contextlib.suppress(FactoryctlError):
                    self.scheduler.resume([name])
            else:
                self._fail(name, "abort", f"aborted during {rec.phase}")
        for name in self.campaign.names(FAILED):
            left.append(
                f"{name} ({self.campaign.nodes[name].step} failed: {self.campaign.nodes[name].note})"
            )
        pending = self.campaign.count(PENDING)
        message = f"aborted: {self.campaign.count(DONE)} done, {pending} not started; " + (
            f"left drained: {'; '.join(left)}" if left else "no node left drained"
        )
        self.status(ABORTED, message)
        self._audit("result", status="aborted", message=message)
        return ExitStatus.ROLLOUT_ABORTED


def control(
    store: Store, campaign_id: str, action: str, user: str, reason: str, now: float
) -> None:
    store.journal(campaign_id).append(
        {"event": "control", "action": action, "user": user, "reason": reason, "time": now}
    )


def write_events(stream: IO[str]) -> Emit:
    def emit(event: dict[str, Any]) -> None:
        stream.write(json.dumps(event, sort_keys=True, default=str) + "\n")
        stream.flush()

    return emit
