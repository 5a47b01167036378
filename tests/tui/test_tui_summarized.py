"""A summarized snapshot (node and job summaries plus the problem GPUs only, what the
console gets from an engine holding the rollups) shows what the full one shows.

The demo factory, with faults, is built both ways (``summaries.summarized`` is what a
rollup-reading source returns for the same GPUs) and the frames compared: node rows, job
rows, the Overview's figures and problems, and the heat map (one value per node). Cost:
one 48-node demo, well under a second.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from textual.widgets import Static
from tui_fakes import FakeClock, demo, settle, text_of

from factoryctl.model import GPU, FactorySnapshot
from factoryctl.summaries import is_problem, summarized
from factoryctl.triage import triage
from factoryctl.tui import make_app
from factoryctl.tui.frame import build_frame
from factoryctl.tui.history import History
from factoryctl.tui.table import VirtualTable


@pytest.fixture(scope="module")
def full() -> FactorySnapshot:
    snap = demo(nodes=48, seed=3).snapshot()
    gpus = list(snap.gpus)
    # One of each problem the Overview names, on different nodes.
    gpus[9] = replace(gpus[9], up=False, utilization=None, power_watts=None)
    gpus[9 * 8 + 1] = replace(gpus[9 * 8 + 1], temperature_celsius=91.0)
    gpus[20 * 8 + 2] = replace(gpus[20 * 8 + 2], last_xid=79, xid_total=3.0)
    gpus[30 * 8 + 3] = replace(gpus[30 * 8 + 3], throttle_reasons=("hw_slowdown",))
    gpus[40 * 8 + 4] = replace(gpus[40 * 8 + 4], utilization=0.0)  # an idle GPU in a job
    snap = FactorySnapshot(time=snap.time, nodes=snap.nodes, gpus=tuple(gpus), jobs=snap.jobs)
    assert sum(1 for g in snap.gpus if is_problem(g)) == 4
    return snap


def test_rows_and_overview_are_the_same_from_summaries(full: FactorySnapshot) -> None:
    small = summarized(full)
    assert 0 < len(small.gpus) < len(full.gpus) / 4  # the problem GPUs only
    a = build_frame(full, History(), full.time)
    b = build_frame(small, History(), full.time)
    assert [(r.key, r.cells) for r in b.nodes] == [(r.key, r.cells) for r in a.nodes]
    assert [r.values for r in b.nodes] == pytest.approx([r.values for r in a.nodes])
    assert [(r.key, r.cells) for r in b.jobs] == [(r.key, r.cells) for r in a.jobs]
    assert b.summary.occupancy == a.summary.occupancy
    assert b.summary.down_gpus == a.summary.down_gpus
    assert b.summary.power_watts == pytest.approx(a.summary.power_watts)
    assert b.summary.problems == a.summary.problems
    assert len(a.summary.problems) >= 2  # a factory with something to say


def test_heat_map_is_one_value_per_node(full: FactorySnapshot) -> None:
    frame = build_frame(summarized(full), History(), full.time)
    assert frame.gpus_per_node == 0
    assert len(frame.gpu_utilization) == len(full.nodes)
    for node, value in zip(full.nodes, frame.gpu_utilization, strict=True):
        up = [g.utilization for g in full.gpus_of_node(node.name) if g.up]
        known = [u for u in up if u is not None]
        if known:
            assert value == pytest.approx(sum(known) / len(known))
        else:
            assert value is None


def test_a_lost_gpu_is_kept_and_counted(full: FactorySnapshot) -> None:
    lost = GPU(full.gpus[0].node, full.gpus[0].index, up=False)
    gpus = (lost, *full.gpus[1:])
    snap = FactorySnapshot(time=full.time, nodes=full.nodes, gpus=gpus, jobs=full.jobs)
    small = summarized(snap)
    assert lost in small.gpus
    a = build_frame(snap, History(), full.time)
    b = build_frame(small, History(), full.time)
    assert b.summary.down_gpus == a.summary.down_gpus >= 1
    assert b.nodes[0].cells == a.nodes[0].cells
    assert "lost" in b.nodes[0].cells[-1]


class SummarizedSource:
    """A rollup-reading source over the demo: summarized polls, GPUs per detail view."""

    def __init__(self, full: FactorySnapshot) -> None:
        self.full = full
        self.asked: list[tuple[str, ...]] = []

    def console_snapshot(self) -> FactorySnapshot:
        return summarized(self.full)

    def snapshot(self) -> FactorySnapshot:
        raise AssertionError("the console polls console_snapshot() where there is one")

    def gpus_of_nodes(self, nodes: tuple[str, ...]) -> tuple[GPU, ...]:
        self.asked.append(nodes)
        return tuple(g for g in self.full.gpus if g.node in nodes)


async def test_console_on_summaries_fetches_gpus_only_for_the_detail_shown(
    full: FactorySnapshot,
) -> None:
    source = SummarizedSource(full)
    app = make_app(source, refresh=None, clock=FakeClock(full.time))  # type: ignore[arg-type]
    async with app.run_test(size=(160, 60)) as pilot:
        await settle(pilot)
        assert app.frame is not None and app.frame.snapshot.node_summaries
        assert source.asked == []  # the overview and tables need no GPU
        rows = app.query_one("#nodes", VirtualTable).all_rows
        assert [r.cells for r in rows] == [r.cells for r in build_frame(full, History(), 0).nodes]
        node = full.nodes[20].name  # the one with an XID
        app.open_node(node)
        await settle(pilot)
        assert source.asked == [(node,)]
        text = text_of(app.query_one("#node-detail #body", Static))
        for g in full.gpus_of_node(node):
            assert any(ln.split()[:2] == [node, str(g.index)] for ln in text.splitlines()), text
        job = next(j for j in full.jobs if j.state.value == "running" and len(j.nodes) > 1)
        app.open_job(job.job_id)
        await settle(pilot)
        assert source.asked[-1] == job.nodes
        text = text_of(app.query_one("#job-detail #body", Static))
        shown = {tuple(ln.split()[:2]) for ln in text.splitlines()}
        assert {(n, str(i)) for n, i in job.gpu_keys()} <= shown


def test_triage_finds_the_same_problems_on_summaries(full: FactorySnapshot) -> None:
    # With a scheduler's view (every node declares its GPUs): a summarized snapshot must
    # not read "no GPU objects of this node" as a silent exporter.
    nodes = tuple(replace(n, gpu_count=8) for n in full.nodes)
    snap = replace(full, nodes=nodes)
    want = [(p.severity, p.kind, p.summary) for p in triage(snap)]
    got = [(p.severity, p.kind, p.summary) for p in triage(summarized(snap))]
    assert got == want
    kinds = {k for _, k, _ in want}
    assert {"gpu_lost", "idle_allocated"} <= kinds and "exporter_silent" not in kinds
