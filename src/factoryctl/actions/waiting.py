"""``--wait``: poll until every node reached the state its action promised.

A drain is done when the node is DRAINED (its jobs have ended), a reboot when the node is
back (next state resume) or down as asked (next state down). Nodes the action skipped
because they were already on their way (a second ``drain --wait``) are waited for too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from factoryctl import hostlists
from factoryctl.actions.audit import AuditLog
from factoryctl.actions.execute import audit_record
from factoryctl.actions.outcome import CHANGED, FAILED, PENDING, UNCHANGED, Outcome
from factoryctl.actions.plan import Plan, Verb
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Node, NodeState
from factoryctl.scheduler.base import NextState, Scheduler


def wait(
    scheduler: Scheduler,
    outcome: Outcome,
    timeout: float,
    audit: AuditLog,
    interval: float = 1.0,
    progress: Callable[[int, int, str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Block until every acted-on node reached its goal; TIMEOUT otherwise."""
    plan = outcome.plan
    # Skipped nodes count too: "drain --wait" run twice must still wait for DRAINED.
    before = {n: r["result"] for n, r in outcome.results.items()}
    targets = [n for n, r in before.items() if r in (CHANGED, UNCHANGED)]
    deadline = clock() + timeout
    outcome.waited = True
    done: dict[str, str] = {}
    while True:
        try:
            now = {n.name: n for n in scheduler.nodes()}
        except FactoryctlError:
            now = {}  # a slurmctld restart mid-wait: keep polling until the deadline
        for name in targets:
            if name in now and name not in done:
                verdict = _goal(plan, now[name])
                if verdict is not None:
                    done[name] = verdict
        if progress is not None:
            progress(len(done), len(targets), plan.verb.value)
        if len(done) == len(targets) or clock() >= deadline:
            break
        sleep(interval)
    for name in targets:
        state = now[name].state.value if name in now else "unknown"
        verdict = done.get(name, PENDING)
        if verdict == CHANGED and before[name] == UNCHANGED:
            verdict = UNCHANGED
        outcome.results[name] = {"result": verdict, "state": state}
    failed = [n for n in targets if done.get(n) == FAILED]
    pending = [n for n in targets if n not in done]
    if pending:
        outcome.status = ExitStatus.TIMEOUT
        outcome.message = (
            f"{plan.verb.value}: timed out after {timeout:.0f}s waiting for "
            f"{hostlists.collect(pending)}"
        )
    elif failed:
        outcome.status = (
            ExitStatus.PARTIAL if len(failed) < len(targets) else ExitStatus.SCHEDULER_ERROR
        )
        outcome.message = f"{plan.verb.value}: failed on {hostlists.collect(failed)}"
    else:
        outcome.message = f"{plan.verb.value}: {len(targets)} node(s) reached their goal"
    audit.append(
        audit_record(
            outcome.action_id,
            "wait",
            plan,
            status=outcome.status.name.lower(),
            message=outcome.message,
            result=outcome.results,
        )
    )
    return outcome


def _goal(plan: Plan, node: Node) -> str | None:
    """CHANGED when ``node`` reached the state the action promised, FAILED when it never
    will, None while still on its way."""
    if plan.verb is Verb.DRAIN:
        if node.state is NodeState.DRAINED or node.state is NodeState.DOWN:
            return CHANGED
        return None if node.state is NodeState.DRAINING else FAILED
    if plan.verb is Verb.REBOOT:
        if node.state is NodeState.REBOOTING:
            return None
        if plan.params.get("next_state", "resume") == NextState.DOWN.value:
            return CHANGED if node.state in (NodeState.DOWN, NodeState.DRAINED) else None
        if node.state.in_service:
            return CHANGED
        return FAILED if node.state is NodeState.DOWN else None
    return CHANGED
