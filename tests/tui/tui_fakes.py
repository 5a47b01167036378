"""Fakes for the console tests: a simulated factory at a frozen instant, failing sources."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import FactorySnapshot
from factoryctl.telemetry.demo import DemoSource
from factoryctl.tui.backend import Action, ActionPlan, ActionResult
from factoryctl.tui.sim_backend import SimActionBackend

NOW = 1_780_000_000.0  # a fixed instant: nothing on screen depends on the wall clock
SEED = 7


@dataclass
class FakeClock:
    t: float = NOW

    def __call__(self) -> float:
        return self.t


@dataclass
class FlakySource:
    """Delegates to a real source until told to fail, as Prometheus going away would."""

    inner: DemoSource
    fail: bool = False
    calls: int = 0

    def snapshot(self) -> FactorySnapshot:
        self.calls += 1
        if self.fail:
            raise FactoryctlError(
                "Prometheus at http://127.0.0.1:9 unreachable: connection refused",
                ExitStatus.TELEMETRY_UNREACHABLE,
            )
        return self.inner.snapshot()


@dataclass
class EmptySource:
    def snapshot(self) -> FactorySnapshot:
        return FactorySnapshot(time=NOW, source="empty")


@dataclass
class BlockingSource:
    """Blocks inside snapshot() until released: a slow Prometheus."""

    inner: DemoSource
    release: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    calls: int = 0

    def snapshot(self) -> FactorySnapshot:
        self.calls += 1
        self.entered.set()
        self.release.wait(10)
        return self.inner.snapshot()


@dataclass
class RefusingBackend:
    """Plans like the sim adapter, but the scheduler refuses to execute."""

    inner: SimActionBackend

    def plan(self, action: Action, nodes: Sequence[str], reason: str) -> ActionPlan:
        return self.inner.plan(action, nodes, reason)

    def execute(self, plan: ActionPlan) -> ActionResult:
        raise FactoryctlError(
            "scontrol: error: Invalid node state specified", ExitStatus.SCHEDULER_ERROR
        )


def demo(nodes: int = 16, seed: int = SEED) -> DemoSource:
    # An hour of history is enough for jobs of every size and keeps the fixture cheap.
    return DemoSource.create(nodes=nodes, gpus_per_node=8, seed=seed, now=NOW, warmup=3600)


async def settle(pilot: object) -> None:
    """Wait for every worker to finish and the messages they posted to be handled."""
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    app = pilot.app
    for _ in range(5):
        await app.workers.wait_for_complete()
        await pilot.pause()
        if not any(not w.is_finished for w in app.workers):
            break


def text_of(widget: object) -> str:
    """The plain text a Static currently shows (its Rich content rendered off-screen)."""
    import io

    from rich.console import Console
    from textual.widgets import Static

    assert isinstance(widget, Static)
    console = Console(width=200, file=io.StringIO(), record=True, color_system=None)
    console.print(widget.content)
    return console.export_text()
