"""Actions over the simulated factory: the stand-in action layer for the demo and tests.

The real layer (``factoryctl.actions`` with a scheduler) arrives on another branch with
the same plan/execute shape; this adapter only exists so the console's confirm flow,
blast-radius refusal and audit display can be built and tested now. The simulator is not
thread-safe, so the adapter and ``LiveDemoSource`` share one lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import JobState
from factoryctl.sim import SimFactory
from factoryctl.tui.backend import Action, ActionPlan, ActionResult, PlanJob

# Actions that take GPUs out of service; resume gives them back.
_REMOVES = {Action.DRAIN, Action.REBOOT, Action.MAINT}


@dataclass
class SimActionBackend:
    sim: SimFactory
    lock: threading.Lock = field(default_factory=threading.Lock)
    max_nodes: int = 16  # blast radius: refuse plans touching more nodes than this
    clock: Callable[[], float] = time.time
    audit_log: list[str] = field(default_factory=list)

    def plan(self, action: Action, nodes: Sequence[str], reason: str) -> ActionPlan:
        with self.lock:
            unknown = [n for n in nodes if n not in self.sim.node_index]
            if unknown:
                raise FactoryctlError(f"unknown node {unknown[0]!r}", ExitStatus.NOT_FOUND)
            wanted = set(nodes)
            jobs: list[PlanJob] = []
            for job in self.sim.jobs.values():
                if job.state is not JobState.RUNNING:
                    continue
                here = [g for g in job.slots if self.sim.node_names[g // self.sim.gpn] in wanted]
                if here:
                    jobs.append(PlanJob(job.job_id, job.user, len(here)))
            gpus = len(nodes) * self.sim.gpn
        refused = None
        if len(nodes) > self.max_nodes:
            refused = (
                f"blast radius: {len(nodes)} nodes exceeds the limit of {self.max_nodes} per action"
            )
        notes: tuple[str, ...] = ()
        if action is Action.REBOOT and jobs:
            notes = (f"reboot kills {len(jobs)} running job(s)",)
        elif action is Action.DRAIN and jobs:
            notes = ("running jobs finish first (the nodes show as draining)",)
        return ActionPlan(
            action=action,
            nodes=tuple(nodes),
            reason=reason,
            jobs=tuple(sorted(jobs, key=lambda j: j.job_id)),
            gpus_lost=gpus if action in _REMOVES else -gpus,
            refused=refused,
            notes=notes,
        )

    def execute(self, plan: ActionPlan) -> ActionResult:
        if plan.refused:
            raise FactoryctlError(f"refused: {plan.refused}", ExitStatus.REFUSED)
        if not plan.reason.strip():
            raise FactoryctlError("a reason is required", ExitStatus.USAGE)
        ok: list[str] = []
        failed: list[tuple[str, str]] = []
        audit: list[str] = []
        with self.lock:
            for node in plan.nodes:
                try:
                    self._apply(plan.action, node, plan.reason)
                except (KeyError, ValueError) as err:
                    failed.append((node, str(err)))
                    continue
                ok.append(node)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))
        audit.append(
            f"{stamp} action={plan.action.value} nodes={','.join(ok) or '-'} "
            f"reason={plan.reason!r} ok={len(ok)} failed={len(failed)}"
        )
        self.audit_log.extend(audit)
        return ActionResult(plan, tuple(ok), tuple(failed), tuple(audit))

    def _apply(self, action: Action, node: str, reason: str) -> None:
        sim = self.sim
        if action is Action.DRAIN:
            sim.set_admin(node, drain=True, reason=reason)
        elif action is Action.RESUME:
            admin = sim.admin[sim.node_index[node]]
            if admin.reboot_until is not None:
                # What slurmctld says when asked to resume a node mid-reboot.
                raise ValueError(f"{node} is rebooting; resume it once it is back")
            sim.set_admin(node, drain=False, down=False, maint=False, reason="")
        elif action is Action.REBOOT:
            sim.set_admin(node, reason=reason)
            sim.reboot(node)
        elif action is Action.MAINT:
            sim.set_admin(node, maint=True, reason=reason)
