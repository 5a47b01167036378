"""A scheduler over the simulated factory, for ``--demo`` and the actions' unit tests.

It keeps Slurm's observable behaviour where the actions depend on it: a drained node
with jobs reads DRAINING until they end, a reboot takes the node out of service for a
while, and an unknown node name is an error with nothing changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from factoryctl.errors import NotFoundError
from factoryctl.model import Job, Node, NodeState
from factoryctl.scheduler.base import NextState, Reservation, ReservationRequest
from factoryctl.scheduler.slurm_cli import validate_nodes, validate_reason
from factoryctl.sim import SimFactory
from factoryctl.sim.snapshot import build_snapshot


@dataclass
class DemoScheduler:
    sim: SimFactory
    reboot_seconds: float = 120.0
    name: str = "demo"
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    _reservations: dict[str, Reservation] = field(default_factory=dict)

    def _check(self, nodes: Sequence[str]) -> None:
        validate_nodes(nodes)
        unknown = [n for n in nodes if n not in self.sim.node_index]
        if unknown:
            raise NotFoundError(f"unknown node: {unknown[0]}")

    def nodes(self) -> list[Node]:
        snap = build_snapshot(self.sim, include_finished=False)
        reserved = {n for r in self._active() for n in r.nodes}
        return [
            Node(
                name=n.name,
                state=NodeState.MAINT if n.name in reserved and n.state.in_service else n.state,
                reason=n.reason,
                reason_time=n.reason_time,
                partitions=n.partitions,
                gpu_count=n.gpu_count,
                gpus_allocated=n.gpus_allocated,
            )
            for n in snap.nodes
        ]

    def _active(self) -> list[Reservation]:
        now = self.sim.now
        return [r for r in self._reservations.values() if r.start_time <= now < r.end_time]

    def jobs(self) -> list[Job]:
        return list(build_snapshot(self.sim, include_finished=False).jobs)

    def reservations(self) -> list[Reservation]:
        return sorted(self._reservations.values(), key=lambda r: r.start_time)

    def drain(self, nodes: Sequence[str], reason: str) -> None:
        self._check(nodes)
        text = validate_reason(reason)
        self.calls.append(("drain", tuple(nodes)))
        for n in nodes:
            self.sim.set_admin(n, drain=True, reason=text)

    def resume(self, nodes: Sequence[str]) -> None:
        self._check(nodes)
        self.calls.append(("resume", tuple(nodes)))
        for n in nodes:
            self.sim.set_admin(n, drain=False, down=False, reason="")

    def clear_reason(self, nodes: Sequence[str]) -> None:
        self._check(nodes)
        self.calls.append(("clear_reason", tuple(nodes)))
        for n in nodes:
            self.sim.set_admin(n, reason="")

    def reboot(self, nodes: Sequence[str], reason: str, asap: bool, next_state: NextState) -> None:
        self._check(nodes)
        text = validate_reason(reason)
        self.calls.append(("reboot", tuple(nodes)))
        for n in nodes:
            self.sim.set_admin(n, reason=text, drain=next_state is NextState.DOWN)
            self.sim.reboot(n, self.reboot_seconds)
            if next_state is NextState.RESUME:
                self.sim.set_admin(n, reason="")

    def create_reservation(self, request: ReservationRequest) -> str:
        self._check(request.nodes)
        if request.name in self._reservations:
            raise NotFoundError(f"reservation {request.name} already exists")
        self.calls.append(("create_reservation", tuple(request.nodes)))
        self._reservations[request.name] = Reservation(
            name=request.name,
            nodes=tuple(request.nodes),
            start_time=request.start_time,
            end_time=request.start_time + request.duration_seconds,
            flags=("MAINT", "IGNORE_JOBS"),
            users=request.users,
            state="ACTIVE" if request.start_time <= self.sim.now else "INACTIVE",
        )
        return request.name

    def delete_reservation(self, name: str) -> None:
        if self._reservations.pop(name, None) is None:
            raise NotFoundError(f"unknown reservation: {name}")
        self.calls.append(("delete_reservation", (name,)))
