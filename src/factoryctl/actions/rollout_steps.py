"""One node's way through a rollout campaign: drain -> wait DRAINED -> ``--exec`` ->
``--reboot`` -> ``--check`` -> resume, each step journaled before it is taken.

A node's last record is an intent ("draining", "reboot", "resuming"...): after a ``kill -9``
the runner that resumes the campaign re-checks that intent against Slurm instead of
assuming it happened (a drain that never landed is issued again, a reboot that is over is
not redone, a node whose resume was cut off is resumed). Work steps (``--exec``,
``--check``) that were cut off run again: they must be safe to repeat. Terminal nodes are
reconciled too: a failed node is drained with its failure reason, a done node is back in
service.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from factoryctl.actions.rollout_gate import Counters
from factoryctl.actions.rollout_node_work import NodeWork
from factoryctl.actions.rollout_phases import (
    CHECK,
    DONE,
    DRAINING,
    EXEC,
    GATE,
    REBOOT,
    REBOOT_ISSUED,
    RESUMING,
    SKIPPED,
)
from factoryctl.actions.rollout_records import Emit
from factoryctl.actions.rollout_work import kill_session
from factoryctl.errors import FactoryctlError
from factoryctl.model import Node, NodeState
from factoryctl.scheduler.base import NextState

__all__ = ["Emit", "NodeSteps", "kill_session"]


@dataclass(kw_only=True)
class NodeSteps(NodeWork):
    """The per-node steps, on ``NodeWork``'s state; ``rollout_runner.Runner`` adds the
    campaign loop (capacity, control, the end of the campaign) on top."""

    # -- one node ---------------------------------------------------------------------------
    def _after_drained(self, name: str) -> None:
        if self.gate is not None:
            self._baseline(name)
        if self._spec("exec"):
            self._start_work(name, "exec")
        else:
            self._after_exec(name)

    def _after_exec(self, name: str) -> None:
        if self._spec("reboot"):
            self.phase(name, REBOOT)
            self._issue_reboot(name)
        else:
            self._after_reboot(name)

    def _issue_reboot(self, name: str) -> None:
        try:
            self.scheduler.reboot(
                [name], self.campaign.stored_reason("rebooting"), False, NextState.DOWN
            )
        except FactoryctlError as err:
            self._fail(name, "reboot", err.message)
            return
        self.phase(name, REBOOT_ISSUED)

    def _after_reboot(self, name: str) -> None:
        if self._spec("check"):
            self._start_work(name, "check")
        else:
            self._after_check(name)

    def _after_check(self, name: str) -> None:
        if self.gate is not None:
            self.phase(name, GATE, note=f"waiting up to {self.gate.wait:.0f}s for its GPUs")
        else:
            self._finish(name)

    # -- the telemetry gate (rollout_gate) -------------------------------------------------
    def _baseline(self, name: str) -> None:
        """The error counters at the work's start, journaled; one that cannot be read now
        is asked for again at the gate, at the same instant."""
        assert self.gate is not None
        rec = self.campaign.nodes[name]
        try:
            counters = self.gate.baseline(name, rec.work_start)
        except FactoryctlError as err:
            self.emit(
                {
                    "event": "warning",
                    "campaign": self.campaign.id,
                    "node": name,
                    "message": f"GPU error baseline not read now ({err.message}); "
                    "the gate asks again for the same instant",
                }
            )
            return
        rec.baseline = counters.to_record()
        self.journal.append(
            {"event": "baseline", "node": name, "time": self.clock(), "counters": rec.baseline}
        )

    def _advance_gate(self, name: str, node: Node) -> None:
        assert self.gate is not None
        rec = self.campaign.nodes[name]
        verdict = self.gate.evaluate(
            name,
            expected_gpus=node.gpu_count,
            started=rec.since,
            fresh_after=rec.back,
            baseline=Counters.from_record(rec.baseline) if rec.baseline else None,
            work_start=rec.work_start,
            now=self.clock(),
        )
        if verdict.pending:
            return
        if not verdict.passed:
            self._fail(name, verdict.step, verdict.note)
            return
        self.phase(name, "gate-passed", note=verdict.note)
        rec.phase = "gate-passed"
        self._finish(name)

    def _finish(self, name: str) -> None:
        if self._spec("next_state") == "down":
            self.phase(name, DONE, note="left out of service (--next-state down)")
            self._set_failed_reason(name, self.campaign.stored_reason("done, left down"))
            return
        self.phase(name, RESUMING)
        self._issue_resume(name)

    def _issue_resume(self, name: str) -> None:
        try:
            self.scheduler.resume([name])
        except FactoryctlError as err:
            self._resume_refused(name, err)

    def _resume_refused(self, name: str, err: FactoryctlError) -> None:
        """A refused resume, judged by what Slurm shows right after it. Slurm refuses to
        resume a node already in service ("Invalid node state specified"; 26.05: "...
        transition"), and under ReturnToService=2 it puts a node that a reboot left DOWN
        back in service itself at the node's next registration. slurmctld asks a rolling
        window of nodes (TreeWidth of them: all 8 of the lab's on every 20th ping) to
        register, and any resume triggers a ping (seen on 22.05, 24.11 and 26.05), so a
        registration can come during this node's --check.
        A node in service is done; any other stays failed, and the note says what Slurm
        answered and showed. One read: a state Slurm refused on is not transient."""
        node = self._nodes.get(name) if self._read() else None
        if node is not None and node.state.in_service:
            self.phase(
                name,
                DONE,
                note=f"already back in service ({node.state.value}) when resumed: "
                f"Slurm said {err.message!r}",
            )
            self.clear_stale_reason(node)
            return
        if node is None:
            seen = f"{name} could not be read after it"
        else:
            seen = f"{name} {node.state.value}, reason {node.reason or 'none'!r}"
        self._fail(name, "resume", f"{err.message} (then Slurm showed {seen})")

    def advance(self, name: str) -> None:
        """Move one in-flight node on, from what Slurm says now."""
        rec = self.campaign.nodes[name]
        node = self._nodes.get(name)
        if node is None:
            return  # not in this read (Slurm hiccup): next tick
        now = self.clock()
        state = node.state
        if rec.phase == DRAINING:
            if state in (NodeState.DRAINED, NodeState.DOWN) and self._ours(node):
                self.phase(name, "drained")
                rec.phase = "drained"
                self._after_drained(name)
            elif state is NodeState.DRAINING and self._ours(node):
                if now - rec.drain_since > float(self._spec("drain_timeout")):
                    self._skip_timed_out(name)
            elif state.in_service:
                # The drain never landed (cut off before scontrol ran): issue it again.
                self._drain(name, retry=True)
            else:
                self.phase(
                    name,
                    SKIPPED,
                    note=f"taken out of service by someone else meanwhile: {node.reason or state.value}",
                )
        elif rec.phase in (EXEC, CHECK):
            step = "exec" if rec.phase == EXEC else "check"
            if name not in self.work:
                self._start_work(name, step)  # cut off mid-step: run it again
                return
            verdict = self._poll_work(name)
            if verdict is None:
                return
            if verdict != "ok":
                self._fail(name, step, verdict)
            elif step == "exec":
                self._after_exec(name)
            else:
                self.phase(name, "check-passed")
                rec.phase = "check-passed"
                self._after_check(name)
        elif rec.phase == GATE:
            if self.gate is None:  # resumed where the gate is off: the plan said so
                self.phase(name, "gate-passed", note="telemetry gate off in this run")
                self._finish(name)
            else:
                self._advance_gate(name, node)
        elif rec.phase == REBOOT:
            # Cut off around scontrol reboot: Slurm says whether it was issued.
            if state is NodeState.REBOOTING:
                self.phase(name, REBOOT_ISSUED, note="reboot was issued before the cut")
            elif state is NodeState.DOWN and self._ours(node):
                self.phase(name, REBOOT_ISSUED, note="reboot done before the cut")
            else:
                self._issue_reboot(name)
        elif rec.phase == REBOOT_ISSUED:
            if state is NodeState.REBOOTING:
                if now - rec.since > float(self._spec("reboot_timeout")):
                    self._fail(name, "reboot", "the node did not come back in time")
                return
            if state is NodeState.UNKNOWN:
                return
            # Back: slurmd registered (Slurm sets DOWN for nextstate=down).
            self.phase(name, "rebooted", state=state.value)
            rec.phase = "rebooted"
            self._after_reboot(name)
        elif rec.phase == RESUMING:
            if state.in_service:
                self.phase(name, DONE)
                self.clear_stale_reason(node)
            elif state is NodeState.DRAINING and not self._ours(node):
                self.phase(name, DONE, note=f"drained by someone else since: {node.reason}")
            else:
                self._issue_resume(name)
        elif rec.phase in ("drained", "rebooted", "check-passed", "gate-passed"):
            # Cut off right after one of these: continue from there.
            {
                "drained": self._after_drained,
                "rebooted": self._after_reboot,
                "check-passed": self._after_check,
            }.get(rec.phase, self._finish)(name)

    def clear_stale_reason(self, node: Node) -> None:
        """A node back in service that still shows this campaign's reason: Slurm 24.11
        with AccountingStorageType=accounting_storage/none keeps a drain's reason after
        the resume (measured on 24.11.5; 22.05 and 26.05 clear it. Slurm frees the reason
        on that path through its accounting layer's node-up, which likely does nothing
        without a database in 24.11). Slurm ignores an empty Reason=, so it is blanked;
        ours only, never anyone else's."""
        if not (node.state.in_service and self._ours(node)):
            return
        try:
            self.scheduler.clear_reason([node.name])
        except FactoryctlError as err:
            self.emit(
                {
                    "event": "warning",
                    "campaign": self.campaign.id,
                    "node": node.name,
                    "message": f"could not clear the stale reason: {err.message}",
                }
            )

    def _skip_timed_out(self, name: str) -> None:
        jobs = ", ".join(
            f"{j.job_id} ({j.user})"
            for j in self._jobs()
            if name in j.nodes and j.state.value == "running"
        )
        self.phase(
            name,
            SKIPPED,
            step="drain",
            note=f"jobs outlived --drain-timeout ({jobs or 'still running'}); drain undone, left in service",
        )
        with contextlib.suppress(FactoryctlError):
            self.scheduler.resume([name])

    def _jobs(self) -> list[Any]:
        try:
            return list(self.scheduler.jobs())
        except FactoryctlError:
            return []

    def _drain(self, name: str, retry: bool = False) -> None:
        extra: dict[str, Any] = {"retry": True} if retry else {}
        self.phase(name, DRAINING, **extra)
        try:
            self.scheduler.drain([name], self.campaign.stored_reason())
        except FactoryctlError as err:
            self._fail(name, "drain", err.message)
