"""The console's actions through the real action layer (``factoryctl.actions``).

The same path as ``factoryctl drain/resume/reboot``: plan from the scheduler's state,
guards (blast radius, reason ownership), audit lock, re-plan under the lock, one
scheduler call, verify, audit record. The console's dialog shows the plan before the
operator has typed a reason, so the preview plan is built without the reason check
(``build_plan`` + ``apply_guards``); ``execute`` then validates the reason as the CLI does.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from factoryctl import hostlists
from factoryctl.actions.audit import AuditLog
from factoryctl.actions.execute import execute, record_refusal, resolve_targets
from factoryctl.actions.guards import BlastRadius, apply_guards, refusal_error
from factoryctl.actions.outcome import CHANGED, UNCHANGED, Request
from factoryctl.actions.plan import Plan, Step, Verb, build_plan
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.scheduler.base import Scheduler
from factoryctl.tui.backend import Action, ActionPlan, ActionResult, PlanJob

VERBS = {Action.DRAIN: Verb.DRAIN, Action.RESUME: Verb.RESUME, Action.REBOOT: Verb.REBOOT}


@dataclass
class ActionLayerBackend:
    scheduler: Scheduler
    radius: BlastRadius
    audit: AuditLog
    user: str
    # The demo scheduler drives the simulator the poller reads: share its lock.
    lock: threading.Lock | None = None
    argv: Sequence[str] = ("factoryctl", "top")
    _seen_refusals: set[tuple[str, str]] = field(default_factory=set)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.lock is None:
            yield
        else:
            with self.lock:
                yield

    def _verb(self, action: Action) -> Verb:
        verb = VERBS.get(action)
        if verb is None:
            raise FactoryctlError(
                "a maintenance window needs a start and a duration: use "
                "factoryctl maintenance create NODES --start ... --duration ...",
                ExitStatus.USAGE,
            )
        return verb

    def plan(self, action: Action, nodes: Sequence[str], reason: str) -> ActionPlan:
        verb = self._verb(action)
        with self._locked():
            known = self.scheduler.nodes()
            targets = resolve_targets(hostlists.collect(nodes), known)
            jobs = self.scheduler.jobs()
        plan = apply_guards(
            build_plan(verb, targets, known, jobs, self.user, reason), self.radius, False
        )
        refused = refusal_error(plan)
        if refused is not None:
            key = (verb.value, hostlists.collect(targets))
            if key not in self._seen_refusals:  # once per attempt, not per redraw
                self._seen_refusals.add(key)
                record_refusal(self.audit, plan, refused.message, [*self.argv, verb.value, key[1]])
        return _to_console_plan(action, plan, refused.message if refused else None)

    def execute(self, plan: ActionPlan) -> ActionResult:
        verb = self._verb(plan.action)
        request = Request(verb, hostlists.collect(plan.nodes), plan.reason, self.user)
        argv = [*self.argv, verb.value, request.nodes, "--reason", plan.reason]
        with self._locked():
            outcome = execute(self.scheduler, request, self.radius, self.audit, argv)
        ok = tuple(n for n, r in outcome.results.items() if r["result"] in (CHANGED, UNCHANGED))
        failed = tuple(
            (n, r.get("note") or r["result"])
            for n, r in outcome.results.items()
            if r["result"] not in (CHANGED, UNCHANGED)
        )
        if outcome.status is not ExitStatus.OK and not ok:
            raise FactoryctlError(outcome.message, outcome.status)
        audit = (
            f"audit {outcome.action_id}: {verb.value} {request.nodes} by {self.user}: "
            f"{outcome.message} (log {self.audit.path})",
        )
        console_plan = _to_console_plan(plan.action, outcome.plan, None)
        return ActionResult(console_plan, ok, failed, audit)


def _to_console_plan(action: Action, plan: Plan, refused: str | None) -> ActionPlan:
    notes = [f"{n.name}: {n.note}" for n in plan.nodes if n.step is not Step.ACT and n.note]
    effects = sorted({j.effect for j in plan.jobs})
    notes.extend(f"jobs: {e}" for e in effects)
    gpus = plan.gpus_out_of_service or -plan.gpus_back_in_service
    return ActionPlan(
        action=action,
        nodes=tuple(n.name for n in plan.nodes),
        reason=plan.reason,
        jobs=tuple(PlanJob(j.job_id, j.user, j.gpus) for j in plan.jobs),
        gpus_lost=gpus,
        refused=refused,
        notes=tuple(notes),
    )
