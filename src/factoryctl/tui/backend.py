"""What the console needs from the outside world, as two small protocols.

``SnapshotSource`` is anything with ``snapshot()`` (the demo source today, Prometheus
later). ``ActionBackend`` is the slice of the action layer the console uses: plan an
action, then execute the plan. ``factoryctl.tui.sim_backend`` implements it over the
simulator until the real action layer (``factoryctl.actions``) is wired in; any object
with the same two methods and plan/result shapes can replace it.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from factoryctl.model import FactorySnapshot
from factoryctl.telemetry.poll_detail import Detail


class SnapshotSource(Protocol):
    def snapshot(self) -> FactorySnapshot: ...


def poll_snapshot(source: object, detail: Detail | None = None) -> FactorySnapshot:
    """One console poll: the source's ``console_snapshot()`` where it has one (what the
    screen shows, summarized at scale: Prometheus with rollups), else ``snapshot()``.
    ``detail``: what the shown view needs read (``telemetry.poll_detail``), for a source
    that reads less for less (``takes_detail``); None: everything."""
    take = getattr(source, "console_snapshot", None)
    if not callable(take):
        snap = source.snapshot()  # type: ignore[attr-defined]
    elif detail is not None:
        snap = take(detail=detail)
    else:
        snap = take()
    assert isinstance(snap, FactorySnapshot)
    return snap


def takes_detail(source: object) -> bool:
    """Whether the source's console poll reads less for a view that shows less: a source
    that cannot always reads everything (``poll_detail.FULL``)."""
    take = getattr(source, "console_snapshot", None)
    return callable(take) and "detail" in inspect.signature(take).parameters


class Action(StrEnum):
    DRAIN = "drain"
    RESUME = "resume"
    REBOOT = "reboot"
    MAINT = "maint"

    @property
    def needs_reason(self) -> bool:
        # Every action is recorded with a reason; resume clears the node's reason but
        # the audit log still says why it was put back.
        return True


@dataclass(frozen=True, slots=True)
class PlanJob:
    job_id: str
    user: str
    gpus: int  # GPUs of this job on the planned nodes


@dataclass(frozen=True, slots=True)
class ActionPlan:
    """What an action will do, shown before anything changes."""

    action: Action
    nodes: tuple[str, ...]
    reason: str = ""
    jobs: tuple[PlanJob, ...] = ()
    gpus_lost: int = 0  # GPUs taken out of service (or returned, for resume)
    refused: str | None = None  # why a guard refuses it (e.g. the blast-radius limit)
    notes: tuple[str, ...] = ()

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(sorted({j.user for j in self.jobs}))


@dataclass(frozen=True, slots=True)
class ActionResult:
    plan: ActionPlan
    ok: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()  # (node, error)
    audit: tuple[str, ...] = field(default_factory=tuple)  # the audit records written

    @property
    def summary(self) -> str:
        verb = self.plan.action.value
        if not self.failed:
            return f"{verb}: {len(self.ok)} node(s) done"
        return f"{verb}: {len(self.ok)} done, {len(self.failed)} failed ({self.failed[0][1]})"


class ActionBackend(Protocol):
    def plan(self, action: Action, nodes: Sequence[str], reason: str) -> ActionPlan: ...

    def execute(self, plan: ActionPlan) -> ActionResult:
        """Run a plan. Raise ``FactoryctlError`` when the scheduler refuses it."""
        ...
