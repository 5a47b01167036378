"""What every step of a node's rollout stands on: the runner's state, Slurm's view of the
nodes, failing a node (its phase, then its failure reason in Slurm) and the ``--exec`` and
``--check`` work processes. ``rollout_steps.NodeSteps`` builds the steps on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from factoryctl.actions import rollout_work
from factoryctl.actions.rollout_gate import TelemetryGate
from factoryctl.actions.rollout_phases import CHECK, EXEC, FAILED, owned_by_campaign
from factoryctl.actions.rollout_plan import substitute
from factoryctl.actions.rollout_records import Records
from factoryctl.actions.rollout_work import Work
from factoryctl.errors import FactoryctlError
from factoryctl.model import Node
from factoryctl.scheduler.base import Scheduler


@dataclass(kw_only=True)
class NodeWork(Records):
    """The runner's state and what every step uses; ``NodeSteps`` adds the steps."""

    scheduler: Scheduler
    environ: Mapping[str, str]
    sleep: Callable[[float], None] = time.sleep
    interval: float = 1.0
    gate: TelemetryGate | None = None  # None: the telemetry gate is off (the plan says so)
    work: dict[str, Work] = field(default_factory=dict)
    _nodes: dict[str, Node] = field(default_factory=dict)

    # -- Slurm ------------------------------------------------------------------------------
    def _read(self) -> bool:
        try:
            self._nodes = {n.name: n for n in self.scheduler.nodes()}
            return True
        except FactoryctlError as err:
            self.emit({"event": "warning", "campaign": self.campaign.id, "message": err.message})
            return False

    def _ours(self, node: Node) -> bool:
        return owned_by_campaign(node.reason, self.campaign.id)

    def _spec(self, key: str) -> Any:
        return self.campaign.spec.get(key)

    # -- one node ---------------------------------------------------------------------------
    def _fail(self, name: str, step: str, note: str) -> None:
        reason = self.campaign.stored_reason(f"{step} failed")
        self.phase(name, FAILED, step=step, note=note)
        self._set_failed_reason(name, reason)

    def _set_failed_reason(self, name: str, reason: str) -> None:
        try:
            self.scheduler.drain([name], reason)
        except FactoryctlError as err:
            self.emit(
                {
                    "event": "warning",
                    "campaign": self.campaign.id,
                    "node": name,
                    "message": f"could not set the failure reason: {err.message}",
                }
            )

    def _start_work(self, name: str, step: str) -> None:
        argv = substitute(self._spec(step) or [], name)
        log = self.store.directory / self.campaign.id / f"{name}.{step}.log"
        rec = self.campaign.nodes[name]
        self.phase(name, EXEC if step == "exec" else CHECK, argv=argv, attempts=rec.attempts + 1)
        try:
            proc = rollout_work.start(argv, log, self.environ)
        except OSError as err:
            self._fail(name, step, f"cannot run {argv[0]}: {err.strerror}")
            return
        self.work[name] = Work(step, proc, self.clock(), log)
        # Its PID (and session): whoever cleans up after a kill -9 of this runner can find it.
        self.journal.append(
            {"event": "work", "node": name, "step": step, "pid": proc.pid, "time": self.clock()}
        )

    def _poll_work(self, name: str) -> str | None:
        """'ok', 'failed: ...' or None while it runs."""
        timeout = float(self._spec("step_timeout") or 3600)
        verdict = rollout_work.verdict(self.work[name], self.clock(), timeout)
        if verdict is not None:
            del self.work[name]
        return verdict
