"""SVG snapshots of every view at 80x24 and 160x48, and of the empty, stale, read-only
and confirm states. A simulated factory at a frozen instant with a fixed seed: nothing
on screen comes from the wall clock. Regenerate with ``pytest --snapshot-update``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from tui_fakes import NOW, EmptySource, FakeClock, FlakySource, demo, settle

from factoryctl.telemetry.demo import DemoSource
from factoryctl.tui import make_app
from factoryctl.tui.app import FactoryApp
from factoryctl.tui.sim_backend import SimActionBackend

SIZES = {"80x24": (80, 24), "160x48": (160, 48)}
Snap = Callable[..., bool]


def sim_app(source: DemoSource, readonly: bool = False) -> FactoryApp:
    backend = SimActionBackend(source.sim, clock=lambda: NOW)
    return make_app(source, refresh=None, clock=FakeClock(), actions=backend, readonly=readonly)


def first_running_job(app: FactoryApp) -> str:
    assert app.frame is not None
    running = [j.job_id for j in app.frame.snapshot.jobs if j.state.value == "running"]
    # The widest job shows the most GPUs; ties break on the id so the choice is stable.
    jobs = {j.job_id: j for j in app.frame.snapshot.jobs}
    return max(sorted(running), key=lambda i: jobs[i].gpu_count)


def opener(source: DemoSource, view: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, FactoryApp)
        await settle(pilot)
        # A few polls ten simulated seconds apart give the sparklines something to draw.
        for _ in range(6):
            source.advance_to(source.sim.now + 10, step_seconds=5)
            app.poll()
            await settle(pilot)
        if view == "node-detail":
            app.open_node("gpu003")
            await settle(pilot)  # its processes arrive from a worker
        elif view == "job-detail":
            app.open_job(first_running_job(app))
        else:
            app.show_view(view)
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "view", ["overview", "nodes", "jobs", "triage", "node-detail", "job-detail"]
)
def test_view(snap_compare: Snap, view: str, size: str) -> None:
    source = demo()
    # One hardware and one application fault, so Triage and the heat map have content.
    source.sim.inject_xid("gpu005", 3, 48)
    source.sim.inject_xid("gpu009", 1, 13)
    app = sim_app(source)
    assert snap_compare(app, terminal_size=SIZES[size], run_before=opener(source, view))


def test_overview_of_a_large_factory_aggregates_the_heat_map(snap_compare: Snap) -> None:
    source = demo(nodes=2000, seed=11)
    app = make_app(source, refresh=None, clock=FakeClock())
    assert snap_compare(app, terminal_size=(100, 30), run_before=settle)


def test_empty_source(snap_compare: Snap) -> None:
    app = make_app(EmptySource(), refresh=None, clock=FakeClock())
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


def test_stale_after_a_failed_poll(snap_compare: Snap) -> None:
    flaky, clock = FlakySource(demo()), FakeClock()
    app = make_app(flaky, refresh=None, clock=clock)

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        flaky.fail = True
        clock.t = NOW + 95
        await pilot.press("2", "r")
        await settle(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_readonly_nodes_with_marks(snap_compare: Snap) -> None:
    app = sim_app(demo(), readonly=True)

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("2", "space", "space", "T")

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_filtered_and_sorted_nodes(snap_compare: Snap) -> None:
    app = sim_app(demo())

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("2", "U")
        pilot.app.apply_filter("!idle")  # type: ignore[attr-defined]

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_drain_confirm_dialog_shows_the_plan(snap_compare: Snap) -> None:
    app = sim_app(demo())

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("2", "space", "space", "space", "d")
        await settle(pilot)

    assert snap_compare(app, terminal_size=(100, 30), run_before=run_before)


def test_help(snap_compare: Snap) -> None:
    app = sim_app(demo())
    assert snap_compare(app, terminal_size=(80, 24), press=["question_mark"], run_before=settle)
