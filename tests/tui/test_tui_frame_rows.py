"""A frame for a view without tables builds no table rows (``build_frame(rows=False)``),
and is otherwise the frame with them: ``with_rows`` gives exactly what ``rows=True``
does, and the console builds the rows the moment a view that shows them is shown.

Cost: one 48-node demo built both ways (per GPU and summarized) and a 24-node console
run through a few views, about a second in all.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from tui_fakes import NOW, FakeClock, demo, settle

from factoryctl.model import FactorySnapshot
from factoryctl.summaries import summarized
from factoryctl.telemetry.demo import DemoSource
from factoryctl.telemetry.poll_detail import FULL, Detail
from factoryctl.tui import make_app
from factoryctl.tui.frame import Frame, build_frame, with_rows
from factoryctl.tui.gpuscan import scan_gpus, scan_summaries
from factoryctl.tui.history import History
from factoryctl.tui.overview import summarize
from factoryctl.tui.rows import JOB_COLUMNS
from factoryctl.tui.table import VirtualTable


@pytest.fixture(scope="module")
def per_gpu() -> FactorySnapshot:
    snap = demo(nodes=48, seed=3).snapshot()
    gpus = list(snap.gpus)
    # Idle GPUs in running jobs (the Overview lists who holds them and for how long) and
    # a lost one (the node rows say so).
    held = [i for i, g in enumerate(gpus) if g.job_ids and g.up]
    for i in held[:: max(1, len(held) // 6)]:
        gpus[i] = replace(gpus[i], utilization=0.0, idle_seconds=900.0)
    gpus[9] = replace(gpus[9], up=False, utilization=None, power_watts=None)
    return replace(snap, gpus=tuple(gpus))


def _history_key(h: History) -> list[object]:
    """A History as comparable values: float32 arrays as bytes (NaN marks "no sample")."""
    out: list[object] = [h.capacity, h.nodes]
    for s in h.samples:
        nodes = s.nodes
        out.append((s.time, s.utilization.tobytes(), s.power.tobytes(), dict(s.jobs)))
        if nodes is not None:
            out.append((nodes.names, nodes.utilization.tobytes(), nodes.power.tobytes()))
            out.append((nodes.factory_utilization, nodes.factory_power))
    return out


def _assert_same(a: Frame, b: Frame) -> None:
    assert _history_key(a.history) == _history_key(b.history)
    bare = History()
    assert replace(a, history=bare) == replace(b, history=bare)


@pytest.mark.parametrize("kind", ["per-gpu", "summarized"])
def test_a_frame_without_rows_is_the_frame_with_them_less_the_rows(
    per_gpu: FactorySnapshot, kind: str
) -> None:
    snap = per_gpu if kind == "per-gpu" else summarized(per_gpu)
    # A history with a poll in it already: the job samples carry on from it.
    before = build_frame(replace(snap, time=snap.time - 15), History(), NOW - 15).history
    full = build_frame(snap, before, NOW)
    lean = build_frame(snap, before, NOW, rows=False)

    assert (lean.nodes, lean.jobs, lean.rows_built) == ((), (), False)
    assert len(full.nodes) == len(snap.nodes) and len(full.jobs) == len(snap.jobs) > 0
    assert full.rows_built
    # The Overview's figures and problems, heat map and history need no rows.
    assert lean.summary == full.summary
    assert any(p.target.startswith("job:") for p in full.summary.problems)  # idle jobs
    assert any(full.history.job_series(j.job_id)[-1] is not None for j in snap.jobs)
    # The figures are the Jobs view's: the summary the job rows' IDLE and FOR give.
    names = [c.name for c in JOB_COLUMNS]
    idle, spell = names.index("IDLE"), names.index("FOR")
    from_rows = summarize(
        snap,
        scan=scan_summaries(snap) if snap.node_summaries else scan_gpus(snap),
        job_idle={r.key: int(v) for r in full.jobs if (v := r.values[idle]) is not None},
        job_idle_for={r.key: v for r in full.jobs if (v := r.values[spell]) is not None},
    )
    assert lean.summary == from_rows
    assert replace(lean, rows_built=True) != full  # the rows are what is missing...
    _assert_same(with_rows(lean), full)  # ...and what with_rows builds
    assert with_rows(full) is full


def test_rows_less_frame_history_matches_over_polls(per_gpu: FactorySnapshot) -> None:
    """Polls alternating with and without rows keep the history rows=True alone keeps."""
    with_, without = History(), History()
    for k in range(3):
        snap = replace(per_gpu, time=per_gpu.time + 15 * k)
        with_ = build_frame(snap, with_, NOW + k).history
        without = build_frame(snap, without, NOW + k, rows=k == 1).history
    assert _history_key(with_) == _history_key(without)


class Leaning:
    """A rollup-reading source over the demo; every poll after the first waits for
    ``release``, so a test can look at the screen before the next poll lands."""

    def __init__(self) -> None:
        self.src = DemoSource.create(nodes=24, gpus_per_node=8, seed=4, now=NOW, warmup=60)
        self.asked: list[Detail] = []
        self.release = threading.Event()
        self.waiting = threading.Event()

    def console_snapshot(self, detail: Detail = FULL) -> FactorySnapshot:
        self.asked.append(detail)
        if len(self.asked) > 1:
            self.waiting.set()
            assert self.release.wait(10), "the test never released the poll"
        return summarized(self.src.snapshot())


async def test_the_overview_polls_no_rows_and_a_table_view_has_them_at_once() -> None:
    source = Leaning()
    app = make_app(source, refresh=None, clock=FakeClock())  # type: ignore[arg-type]
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        frame = app.frame
        assert frame is not None and not frame.rows_built  # the Overview's lean poll
        nodes = app.query_one("#nodes", VirtualTable)
        assert nodes.all_rows == ()
        await pilot.press("2")  # Nodes: its poll starts at once and blocks in the source
        await pilot.pause()
        assert source.waiting.wait(5)
        assert app.frame is not None and app.frame.rows_built
        assert app.frame.snapshot is frame.snapshot  # the same poll's data, now with rows
        assert [r.key for r in nodes.all_rows] == [n.name for n in frame.snapshot.nodes]
        source.release.set()
        await settle(pilot)
        assert len(source.asked) == 2 and app.frame.rows_built  # the Nodes poll's own rows
        nodes.cursor = 5
        await pilot.press("1")  # the Overview again: its polls build no rows...
        app.poll()
        await settle(pilot)
        assert len(source.asked) == 3 and not app.frame.rows_built
        # ...and leave the hidden table's rows and cursor alone, not an empty table.
        assert len(nodes.all_rows) == 24 and nodes.cursor == 5
        await pilot.press("2")
        await pilot.pause()
        assert app.frame.rows_built and len(nodes.all_rows) == 24
        await settle(pilot)


async def test_a_job_detail_opened_from_the_overview_has_its_row() -> None:
    source = Leaning()
    source.release.set()  # no poll waits here
    app = make_app(source, refresh=None, clock=FakeClock())  # type: ignore[arg-type]
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.frame is not None and not app.frame.rows_built
        running = [j for j in app.frame.snapshot.jobs if j.state.value == "running"]
        app.open_job(running[0].job_id)
        # The detail's figures come from the job's row, built as the detail opened.
        assert app.frame.rows_built
        assert any(r.key == running[0].job_id for r in app.frame.jobs)
        await settle(pilot)


async def test_a_source_that_reads_everything_always_gets_rows() -> None:
    app = make_app(demo(nodes=8), refresh=None, clock=FakeClock())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.frame is not None and app.frame.rows_built and len(app.frame.nodes) == 8
