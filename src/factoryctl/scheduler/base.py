"""The scheduler protocol: what the console reads from and asks of Slurm (or a demo).

Every write takes the whole node set at once so a backend can make one call for 1,000
nodes (Slurm takes a hostlist). The protocol speaks in operator terms (drain, resume,
reboot, maintenance window), so a Kubernetes backend could map drain onto cordon+evict
later without the actions layer changing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from factoryctl.model import Job, Node, NodeState


class NextState(StrEnum):
    """Where a node goes after its reboot."""

    RESUME = "resume"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Reservation:
    name: str
    nodes: tuple[str, ...]
    start_time: float
    end_time: float
    flags: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    state: str = ""  # ACTIVE | INACTIVE

    @property
    def maintenance(self) -> bool:
        return "MAINT" in self.flags


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What changes about a node from poll to poll (its configuration does not)."""

    state: NodeState
    reason: str
    gpus_allocated: int


@dataclass(frozen=True, slots=True)
class ReservationRequest:
    name: str
    nodes: tuple[str, ...]
    start_time: float  # epoch seconds
    duration_seconds: float
    users: tuple[str, ...] = ("root",)


class Scheduler(Protocol):
    """Reads and writes. Writes raise FactoryctlError with a scheduler exit status."""

    name: str

    def nodes(self) -> list[Node]: ...

    def jobs(self) -> list[Job]: ...

    def reservations(self) -> list[Reservation]: ...

    def drain(self, nodes: Sequence[str], reason: str) -> None: ...

    def resume(self, nodes: Sequence[str]) -> None: ...

    def clear_reason(self, nodes: Sequence[str]) -> None:
        """Blank the reason of nodes back in service: Slurm 24.11 without an accounting
        database keeps a drain's reason after the resume (see docs/rollout.md)."""
        ...

    def reboot(
        self, nodes: Sequence[str], reason: str, asap: bool, next_state: NextState
    ) -> None: ...

    def create_reservation(self, request: ReservationRequest) -> str: ...

    def delete_reservation(self, name: str) -> None: ...
