"""The Node detail lists the processes on the node's GPUs, fetched off the event loop."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from textual.widgets import Static
from tui_fakes import FakeClock, settle, text_of

from factoryctl.model import FactorySnapshot
from factoryctl.processes import ProcessTable
from factoryctl.telemetry.demo import DemoSource
from factoryctl.tui import make_app
from factoryctl.tui.app import FactoryApp


def app_for(source: object) -> FactoryApp:
    return make_app(source, refresh=None, clock=FakeClock())  # type: ignore[arg-type]


def body(app: FactoryApp) -> str:
    return text_of(app.query_one("#node-detail #body", Static))


@dataclass
class SlowProcesses:
    """The demo, with a processes() that blocks until released (a slow Prometheus)."""

    inner: DemoSource
    release: threading.Event = field(default_factory=threading.Event)
    asked: list[tuple[str, str]] = field(default_factory=list)  # (node, thread name)

    def snapshot(self) -> FactorySnapshot:
        return self.inner.snapshot()

    def processes(self, node: str) -> ProcessTable:
        self.asked.append((node, threading.current_thread().name))
        self.release.wait(10)
        return self.inner.processes(node)


async def test_node_detail_shows_each_busy_gpus_processes(source: DemoSource) -> None:
    app = app_for(source)
    async with app.run_test(size=(160, 60)) as pilot:
        await settle(pilot)
        snap = source.snapshot()
        node = next(n.name for n in snap.nodes if n.gpus_allocated)
        app.open_node(node)
        await settle(pilot)
        text = body(app)
        assert "Processes on its GPUs" in text
        expected = source.processes(node).rows
        assert expected
        for row in expected:
            line = next(ln for ln in text.splitlines() if f" {row.pid} " in f" {ln} ")
            assert row.user in line and row.job_id in line and row.name in line


async def test_processes_are_fetched_in_a_worker_for_the_shown_node_only(
    source: DemoSource,
) -> None:
    slow = SlowProcesses(source)
    app = app_for(slow)
    async with app.run_test(size=(160, 60)) as pilot:
        await settle(pilot)
        assert slow.asked == []  # the overview never fetches processes
        app.open_node("gpu002")
        for _ in range(200):  # the worker starts from the event loop: yield to it
            if slow.asked:
                break
            await pilot.pause(0.05)
        # The fetch blocks, yet the loop keeps running and the detail says it is loading.
        assert "Processes: loading" in body(app)
        assert slow.asked and slow.asked[0][0] == "gpu002"
        assert slow.asked[0][1] != threading.current_thread().name
        slow.release.set()
        await settle(pilot)
        assert "Processes on its GPUs" in body(app) or "none on its GPUs" in body(app)
        # Polling refreshes them for the same node, and only for it.
        app.poll()
        await settle(pilot)
        assert {node for node, _ in slow.asked} == {"gpu002"} and len(slow.asked) >= 2


async def test_a_source_without_processes_says_na(source: DemoSource) -> None:
    @dataclass
    class SnapshotOnly:
        inner: DemoSource

        def snapshot(self) -> FactorySnapshot:
            return self.inner.snapshot()

    app = app_for(SnapshotOnly(source))
    async with app.run_test(size=(160, 60)) as pilot:
        await settle(pilot)
        app.open_node("gpu002")
        await settle(pilot)
        assert "Processes: n/a (this source has no per-process telemetry)" in body(app)


async def test_a_failing_fetch_is_shown_not_raised(source: DemoSource) -> None:
    @dataclass
    class Broken:
        inner: DemoSource

        def snapshot(self) -> FactorySnapshot:
            return self.inner.snapshot()

        def processes(self, node: str) -> ProcessTable:
            raise OSError("connection reset")

    app = app_for(Broken(source))
    async with app.run_test(size=(160, 60)) as pilot:
        await settle(pilot)
        app.open_node("gpu002")
        await settle(pilot)
        assert "fetch failed: OSError: connection reset" in body(app)
        assert app.view_stack[-1] == ("node-detail", "gpu002")
