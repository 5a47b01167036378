"""Guards that refuse an action before it runs: blast radius and reason ownership.

Reason ownership is applied per node while planning (``plan._node_step``); this module
turns a plan into the refusal an operator or a script sees.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from factoryctl.actions.plan import Plan
from factoryctl.errors import ExitStatus, FactoryctlError


@dataclass(frozen=True, slots=True)
class BlastRadius:
    """Refuse, without --force, an action over more than ``ratio`` of the factory's
    nodes or more than ``max_nodes`` nodes. One node is always allowed: on a small
    cluster 10% rounds down to nothing, and refusing every action helps no one."""

    ratio: float = 0.10
    max_nodes: int = 64

    def limit(self, factory_nodes: int) -> int:
        share = math.floor(self.ratio * factory_nodes + 1e-9)
        return max(1, min(self.max_nodes, share))

    def check(self, plan: Plan) -> str | None:
        count = len(plan.targets)
        limit = self.limit(plan.factory_nodes)
        if count > limit:
            return (
                f"blast radius: {plan.verb.value} would act on {count} of {plan.factory_nodes} "
                f"nodes, more than the limit of {limit} ({self.ratio:.0%} of the factory, at "
                f"most {self.max_nodes} nodes); use --force to override"
            )
        return None


class RefusedError(FactoryctlError):
    status = ExitStatus.REFUSED


def apply_guards(plan: Plan, radius: BlastRadius, force: bool) -> Plan:
    """The plan with its action-wide refusals filled in (empty when it may run)."""
    refusals = []
    if not force:
        message = radius.check(plan)
        if message:
            refusals.append(message)
    return dataclasses.replace(plan, refusals=tuple(refusals))


def refusal_error(plan: Plan) -> RefusedError | None:
    """Why the plan may not run as a whole, or None. Nodes refused one by one (reason
    ownership) stop the action too: acting on the rest would leave the operator's
    intent half-done, which is worse than a clear refusal."""
    if plan.refusals:
        return RefusedError(plan.refusals[0])
    refused = plan.refused
    if refused:
        first = refused[0]
        more = f" (and {len(refused) - 1} more node(s))" if len(refused) > 1 else ""
        return RefusedError(f"{first.name}: {first.note}{more}")
    return None
