"""Every view and layer in summarized mode (node and job rollups, the problem GPUs only)
against per-GPU mode over the same simulated factory and the same polls.

One demo factory with faults is polled six times, ten simulated seconds apart; each poll
is built into a frame twice, from every GPU and from ``summaries.summarized`` of it (what
a rollup-reading source returns), each with its own history. Compared: the history's node
and factory series (the sparklines), the heat map's power layer, the Overview's totals,
node and job detail, the rollouts view's Slurm states; the rows and problems are compared
in ``test_tui_summarized``. Plus the SVG of the summarized Overview with the power layer
and trend lines shown, with the simulator's power limits and without (as an engine's
rollups give). Cost: a 24-node demo and six polls, ~1 s, plus ~2 s per SVG.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from rich.console import Console, RenderableType
from textual.pilot import Pilot
from tui_fakes import NOW, FakeClock, settle

from factoryctl.model import GPU, FactorySnapshot
from factoryctl.summaries import summarized
from factoryctl.telemetry.demo import DemoSource
from factoryctl.tui import make_app
from factoryctl.tui.frame import Frame, build_frame
from factoryctl.tui.heatmap import BLOCKS
from factoryctl.tui.history import History
from factoryctl.tui.views import (
    NO_GPU_HISTORY,
    NO_JOB_GPU_HISTORY,
    _totals,
    job_detail,
    node_detail,
)

POLLS = 6
Snap = Callable[..., bool]


def _source(nodes: int = 24) -> DemoSource:
    src = DemoSource.create(nodes=nodes, gpus_per_node=8, seed=4, now=NOW, warmup=1800)
    sim = src.sim
    sim.inject_xid(sim.node_names[2], 3, 48)
    sim.inject_throttle(sim.node_names[6], 1, "hw_thermal_slowdown", 3600)
    sim.up[sim.gpu_slot(sim.node_names[9], 5)] = 0  # a GPU lost
    return src


@dataclass
class Polls:
    full: list[FactorySnapshot]
    a: Frame  # per-GPU mode, after every poll
    b: Frame  # summarized mode


@pytest.fixture(scope="module")
def polls() -> Polls:
    src = _source()
    full, a, b = [], History(), History()
    fa = fb = None
    for _ in range(POLLS):
        src.advance_to(src.sim.now + 10, step_seconds=5)
        snap = src.snapshot()
        full.append(snap)
        fa = build_frame(snap, a, snap.time)
        fb = build_frame(summarized(snap), b, snap.time)
        a, b = fa.history, fb.history
    assert fa is not None and fb is not None
    return Polls(full, fa, fb)


def _text(renderable: RenderableType, width: int = 200) -> list[str]:
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in out.splitlines()]


def test_sparkline_series_are_the_same_in_both_modes(polls: Polls) -> None:
    a, b = polls.a.history, polls.b.history
    assert len(a.samples) == len(b.samples) == POLLS
    for metric in ("utilization", "power"):
        got, want = b.factory_series(metric), a.factory_series(metric)
        assert None not in want and got == pytest.approx(want, rel=1e-5)
    assert len(set(a.factory_series("power"))) > 1  # the factory moved between polls
    names = [n.name for n in polls.full[-1].nodes]
    for name in names:
        for metric in ("utilization", "power"):
            want = a.node_series(name, metric)
            assert len(want) == POLLS
            got = b.node_series(name, metric)
            assert got == pytest.approx(want, rel=1e-5, nan_ok=True), (name, metric)
    # The per-GPU series exist only where the polls had every GPU.
    assert len(a.series(names[0], 0, "utilization")) == POLLS
    assert b.series(names[0], 0, "utilization") == []


def test_power_layer_from_node_rollups_is_the_per_gpu_mean(polls: Polls) -> None:
    snap = polls.full[-1]
    assert polls.b.gpus_per_node == 0 and polls.b.power_note == ""
    per_gpu = dict(zip([g.key for g in snap.gpus], polls.a.gpu_power, strict=True))
    shown = 0
    for node, value in zip(snap.nodes, polls.b.gpu_power, strict=True):
        ratios = [r for g in snap.gpus_of_node(node.name) if (r := per_gpu[g.key]) is not None]
        if ratios:
            assert value == pytest.approx(sum(ratios) / len(ratios)), node.name
            shown += 1
        else:
            assert value is None
    assert shown == len(snap.nodes)  # no node blank: every one has an up GPU


def test_power_layer_without_limits_is_watts_per_gpu_with_a_note(polls: Polls) -> None:
    # An engine's rollups: power sums, no power limits.
    small = summarized(polls.full[-1])
    bare = {k: replace(s, power_limit_watts=None) for k, s in small.node_summaries.items()}
    frame = build_frame(replace(small, node_summaries=bare), History(), small.time)
    assert "no power limit" in frame.power_note
    per_gpu = [
        s.power_watts / s.gpus_up
        for n in small.nodes
        if (s := bare[n.name]).power_watts is not None and s.gpus_up
    ]
    top = max(per_gpu)
    assert frame.gpu_power == pytest.approx([w / top for w in per_gpu])
    assert max(v for v in frame.gpu_power if v is not None) == 1.0
    assert f"{top:.0f}W" in frame.power_note or "kW" in frame.power_note


def test_overview_totals_read_the_same(polls: Polls) -> None:
    a, b = _text(_totals(polls.a)), _text(_totals(polls.b))
    assert b == a
    util, power = (
        next(ln for ln in a if ln.startswith("Util")),
        next(ln for ln in a if ln.startswith("Power")),
    )
    # A figure and a sparkline of the six polls.
    assert len(util.split()) == 3 and len(util.split()[2]) == POLLS, util
    assert len(power.split()) == 3 and len(power.split()[2]) == POLLS, power


def _gpu_rows(lines: list[str], node: str) -> list[list[str]]:
    """The GPU table's rows of the node (its name, then a GPU index)."""
    return [w for ln in lines if (w := ln.split())[:1] == [node] and w[1].isdigit()]


def _figures(cells: list[str]) -> list[str]:
    """A GPU row without its history cells (sparklines, or n/a)."""
    return [c for c in cells if c != "n/a" and not set(c) <= set(BLOCKS)]


def test_node_detail_shows_the_same_figures(polls: Polls) -> None:
    snap = polls.full[-1]
    for name in (snap.nodes[2].name, snap.nodes[9].name, snap.nodes[0].name):
        fetched = tuple(snap.gpus_of_node(name))
        a = _text(node_detail(polls.a, name, 200))
        b = _text(node_detail(polls.b, name, 200, gpus=fetched))
        assert a[:3] == b[:3], name  # name, state, allocation and the node's trend line
        assert a[1].startswith("node  util") and len(a[1].split()[2]) == POLLS
        rows_a, rows_b = _gpu_rows(a, name), _gpu_rows(b, name)
        assert len(rows_a) == len(rows_b) == 8
        for ra, rb in zip(rows_a, rows_b, strict=True):
            # NODE GPU UTIL [history] POWER [history] TEMP MEM ...: figures equal; the
            # per-GPU history reads n/a (the polls never had these GPUs' series).
            assert rb.count("n/a") == 2, rb
            assert _figures(rb) == _figures(ra), (ra, rb)
        assert NO_GPU_HISTORY in b and NO_GPU_HISTORY not in a


def test_job_detail_shows_the_same_figures(polls: Polls) -> None:
    snap = polls.full[-1]
    job = max(
        (j for j in snap.jobs if j.state.value == "running"), key=lambda j: (j.gpu_count, j.job_id)
    )
    fetched = tuple(g for n in job.nodes for g in snap.gpus_of_node(n))
    a = _text(job_detail(polls.a, job.job_id, 200))
    b = _text(job_detail(polls.b, job.job_id, 200, gpus=fetched))
    head = 4  # job line, state/runtime/energy/mean util/idle, nodes, its utilization trend
    assert a[:head] == b[:head]
    assert a[3].startswith("job   util") and len(a[3].split()[2]) == POLLS, a[3]
    rows_a = [r for n in job.nodes for r in _gpu_rows(a, n)]
    rows_b = [r for n in job.nodes for r in _gpu_rows(b, n)]
    assert len(rows_a) == len(rows_b) == job.gpu_count
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert _figures(rb) == _figures(ra), (ra, rb)
    assert NO_JOB_GPU_HISTORY in b


def test_rollouts_view_reads_the_same_slurm_states(polls: Polls) -> None:
    # The rollouts view joins campaign journals to the frame's node states (console.py).
    def states(frame: Frame) -> dict[str, str]:
        return {n.name: n.state.value for n in frame.snapshot.nodes}

    assert states(polls.b) == states(polls.a) and len(states(polls.a)) == 24


class Summarizing:
    """A rollup-reading source over the demo: summarized polls, GPUs per detail view;
    ``limits=False`` drops the power limits, as an engine's rollups have none."""

    def __init__(self, src: DemoSource, limits: bool = True) -> None:
        self.src, self.limits = src, limits

    def console_snapshot(self) -> FactorySnapshot:
        small = summarized(self.src.snapshot())
        if self.limits:
            return small
        bare = {k: replace(s, power_limit_watts=None) for k, s in small.node_summaries.items()}
        return replace(small, node_summaries=bare)

    def snapshot(self) -> FactorySnapshot:
        raise AssertionError("the console polls console_snapshot()")

    def gpus_of_nodes(self, nodes: tuple[str, ...]) -> tuple[GPU, ...]:
        snap = self.src.snapshot()
        return tuple(g for n in nodes for g in snap.gpus_of_node(n))


@pytest.mark.parametrize("limits", [True, False], ids=["sim-limits", "engine-rollups"])
def test_summarized_overview_power_layer_and_trends(snap_compare: Snap, limits: bool) -> None:
    src = _source(nodes=64)
    source = Summarizing(src, limits)
    app = make_app(source, refresh=None, clock=FakeClock())  # type: ignore[arg-type]

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        for _ in range(POLLS):
            src.advance_to(src.sim.now + 10, step_seconds=5)
            pilot.app.poll()  # type: ignore[attr-defined]
            await settle(pilot)
        await pilot.press("h")
        await settle(pilot)

    assert snap_compare(app, terminal_size=(100, 30), run_before=run_before)


def test_history_starts_afresh_when_the_poll_changes_mode(polls: Polls) -> None:
    # rollups=auto can flip (an engine gains or loses the rollups): no window mixes the
    # two kinds of sample, and a summarized one never answers for a GPU.
    snap = polls.full[-1]
    h = polls.a.history
    after = build_frame(summarized(snap), h, snap.time + 10).history
    assert len(after.samples) == 1 and after.layout is None
    back = build_frame(snap, after, snap.time + 20).history
    assert len(back.samples) == 1 and len(back.series(snap.nodes[0].name, 0, "power")) == 1


def test_job_samples_are_kept_for_the_trend_only(polls: Polls) -> None:
    # ~6,000 running jobs at 100,000 GPUs: their samples stay for JOB_SAMPLES polls, not
    # the history's 60; node samples share one tuple of names.
    from factoryctl.tui.history import JOB_SAMPLES

    snap = summarized(polls.full[-1])
    h = History()
    for k in range(JOB_SAMPLES + 5):
        h = build_frame(replace(snap, time=snap.time + k), h, snap.time + k).history
    job = next(iter(snap.job_summaries))
    series = h.job_series(job)
    assert len(series) == JOB_SAMPLES + 5
    assert series[:5] == [None] * 5 and None not in series[5:]
    assert all(s.nodes is not None and s.nodes.names is h.nodes for s in h.samples)
