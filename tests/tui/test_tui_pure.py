"""The console's pure parts: rows, sorting, filters, commands, heat map, history, plans."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tui_fakes import NOW, demo

from factoryctl.errors import FactoryctlError
from factoryctl.model import GPU, Allocation, FactorySnapshot, Job, Node, NodeState
from factoryctl.tui.backend import Action
from factoryctl.tui.commands import CommandError, parse_command, parse_filter
from factoryctl.tui.frame import build_frame
from factoryctl.tui.heatmap import bin_values, grid_cells, sparkline
from factoryctl.tui.history import History
from factoryctl.tui.overview import CRITICAL, summarize
from factoryctl.tui.rows import (
    JOB_COLUMNS,
    NODE_COLUMNS,
    efficiency_flag,
    filter_rows,
    job_rows,
    node_rows,
    sort_rows,
)
from factoryctl.tui.sim_backend import SimActionBackend


def _snap() -> FactorySnapshot:
    gpus = (
        GPU("n1", 0, utilization=0.9, power_watts=600.0, temperature_celsius=70.0, job_ids=("1",)),
        GPU(
            "n1",
            1,
            utilization=0.01,
            power_watts=90.0,
            temperature_celsius=88.0,
            job_ids=("1",),
            idle_seconds=5400.0,  # idle longer than job 1 has run: capped at its runtime
        ),
        GPU("n2", 0, up=False),
        GPU("n2", 1, utilization=0.5, power_watts=300.0, xid_total=2.0, last_xid=79),
        GPU("n3", 0, utilization=None, power_watts=None),
        GPU("n3", 1, utilization=None, power_watts=None),
    )
    nodes = (
        Node("n1", NodeState.ALLOCATED, gpu_count=2, gpus_allocated=2),
        Node("n2", NodeState.MIXED, gpu_count=2, gpus_allocated=0),
        Node("n3", NodeState.DOWN, reason="Not responding", gpu_count=2),
    )
    jobs = (
        Job(
            "1",
            "ada",
            start_time=NOW - 3600,
            allocations=(Allocation("n1", (0, 1)),),
            energy_joules=3.6e6,
        ),
        Job("2", "ben", start_time=NOW - 60),
    )
    return FactorySnapshot(time=NOW, nodes=nodes, gpus=gpus, jobs=jobs, source="test")


def test_node_rows_aggregate_per_node_and_keep_unknown_as_dash() -> None:
    rows = {r.key: r for r in node_rows(_snap())}
    assert rows["n1"].cells[:7] == ("n1", "allocated", "2/2", "46%", "690W", "88C", "")
    assert rows["n2"].cells[6] == "2"
    assert rows["n2"].cells[7] == "1 GPU(s) lost"  # in service but a GPU is gone
    assert rows["n3"].cells[3:6] == ("-", "-", "-")
    assert rows["n3"].values[3] is None
    assert rows["n3"].style == "bold red"


def test_job_rows_flag_idle_gpus_and_energy_in_kwh() -> None:
    rows = {r.key: r for r in job_rows(_snap())}
    one = rows["1"]
    assert one.cells[3:10] == ("2", "1h00m", "46%", "1", "1h00m", "1.0", "IDLE-GPUS")
    assert one.values[7] == 3600.0
    assert rows["2"].cells[7] == "-"  # no energy known is not 0 kWh
    assert len(one.cells) == len(JOB_COLUMNS)


@pytest.mark.parametrize(
    ("mean", "idle", "gpus", "flag"),
    [
        (None, 0, 4, ""),
        (0.01, 4, 4, "IDLE"),
        (0.6, 1, 4, "IDLE-GPUS"),
        (0.2, 0, 4, "LOW"),
        (0.9, 0, 4, ""),
    ],
)
def test_efficiency_flag(mean: float | None, idle: int, gpus: int, flag: str) -> None:
    assert efficiency_flag(mean, idle, gpus) == flag


def test_sort_puts_unknown_last_in_both_directions() -> None:
    rows = node_rows(_snap())
    util = [c.name for c in NODE_COLUMNS].index("UTIL")
    assert [r.key for r in sort_rows(rows, util, True)] == ["n2", "n1", "n3"]
    assert [r.key for r in sort_rows(rows, util, False)] == ["n1", "n2", "n3"]


def test_filter_regex_and_inverted() -> None:
    rows = node_rows(_snap())
    assert [r.key for r in filter_rows(rows, parse_filter("down|lost"))] == ["n2", "n3"]
    assert [r.key for r in filter_rows(rows, parse_filter("!down|lost"))] == ["n1"]
    assert len(filter_rows(rows, parse_filter(""))) == 3
    assert len(filter_rows(rows, parse_filter("!"))) == 3


def test_invalid_regex_names_the_problem() -> None:
    with pytest.raises(CommandError, match=r"invalid filter /gpu\[/"):
        parse_filter("gpu[")


@pytest.mark.parametrize(
    ("text", "verb", "arg"),
    [
        (":nodes", "view", "nodes"),
        ("jobs", "view", "jobs"),
        (":node gpu007", "node", "gpu007"),
        (":job 1234", "job", "1234"),
        (":drain", "drain", ""),
        (":q", "quit", ""),
        (":rollouts", "view", "rollouts"),
        (":ro", "view", "rollouts"),
    ],
)
def test_parse_command(text: str, verb: str, arg: str) -> None:
    cmd = parse_command(text)
    assert (cmd.verb, cmd.arg) == (verb, arg)


@pytest.mark.parametrize("text", [":frobnicate", "", ":nodes extra", ":job 1 2"])
def test_bad_commands_raise(text: str) -> None:
    with pytest.raises(CommandError):
        parse_command(text)


def test_bins_average_and_remember_down_gpus() -> None:
    cells = bin_values([1.0, 0.0, None, 0.5, 0.5, 0.5], 3)
    assert [(c.mean, c.down, c.count) for c in cells] == [(0.5, 0, 2), (0.5, 1, 2), (0.5, 0, 2)]
    assert len(bin_values([0.1] * 100_000, 800)) == 800
    assert bin_values([], 10) == []


def test_grid_is_per_gpu_when_it_fits_and_aggregates_when_not() -> None:
    assert grid_cells(64 * 8, 80, 10, 8) == (72, 8)  # 9 nodes of 8 per row, 8 rows
    cols, rows = grid_cells(100_000, 80, 10, 8)
    assert (cols, rows) == (80, 10)


def test_sparkline_scales_and_leaves_gaps() -> None:
    assert sparkline([0.0, 0.5, 1.0, None]) == "▁▅█ "
    assert sparkline([350.0], 0.0, 700.0) == "▅"


def test_history_rolls_and_resets_when_gpus_change() -> None:
    snap = _snap()
    h = History(capacity=2)
    for t in (1.0, 2.0, 3.0):
        h = h.append(FactorySnapshot(time=t, nodes=snap.nodes, gpus=snap.gpus))
    assert h.times == [2.0, 3.0]
    assert h.series("n1", 0, "utilization") == pytest.approx([0.9, 0.9])
    assert h.series("n2", 0, "power") == [None, None]
    h = h.append(FactorySnapshot(time=4.0, gpus=snap.gpus[:2]))
    assert h.times == [4.0]
    assert h.series("n2", 1, "power") == []


def test_summary_counts_and_worst_problem_first() -> None:
    s = summarize(_snap())
    assert s.node_count == 3
    assert dict(s.nodes_by_state) == {"allocated": 1, "mixed": 1, "down": 1}
    assert s.occupancy.allocated == 2
    assert s.occupancy.idle_allocated == 1
    assert s.down_gpus == 1
    assert s.power_watts == pytest.approx(990.0)
    assert s.problems[0].severity == CRITICAL
    assert "n3 down" in s.problems[0].text
    assert any("1 GPU(s) at or over 85C" in p.text for p in s.problems)
    assert any("job 1 (ada) holds 1 idle" in p.text for p in s.problems)


def test_frame_builds_everything_for_a_demo_factory() -> None:
    src = demo(nodes=8)
    frame = build_frame(src.snapshot(), History(), NOW)
    assert len(frame.nodes) == 8
    assert len(frame.gpu_utilization) == 64
    assert frame.gpus_per_node == 8
    assert len(frame.history.samples) == 1
    assert frame.summary.occupancy.total == 64


def test_sim_backend_plans_then_drains_with_audit() -> None:
    src = demo(nodes=8)
    backend = SimActionBackend(src.sim, clock=lambda: NOW)
    busy = next(n for n in src.snapshot().nodes if n.gpus_allocated)
    plan = backend.plan(Action.DRAIN, [busy.name], "")
    assert plan.gpus_lost == 8
    assert plan.jobs and plan.users
    assert plan.refused is None
    with pytest.raises(FactoryctlError, match="reason"):
        backend.execute(plan)
    result = backend.execute(backend.plan(Action.DRAIN, [busy.name], "bad fan"))
    assert result.ok == (busy.name,)
    assert "action=drain" in result.audit[0] and "bad fan" in result.audit[0]
    after = {n.name: n for n in src.snapshot().nodes}[busy.name]
    assert after.state in (NodeState.DRAINING, NodeState.DRAINED)
    assert after.reason == "bad fan"


def test_sim_backend_refuses_past_the_blast_radius() -> None:
    src = demo(nodes=8)
    backend = SimActionBackend(src.sim, max_nodes=2)
    plan = backend.plan(Action.REBOOT, ["gpu001", "gpu002", "gpu003"], "x")
    assert plan.refused is not None and "blast radius" in plan.refused
    with pytest.raises(FactoryctlError, match="refused"):
        backend.execute(plan)
    assert all(a.reboot_until is None for a in src.sim.admin)


def test_pure_modules_import_without_textual() -> None:
    code = (
        "import sys\n"
        "import factoryctl.tui, factoryctl.tui.rows, factoryctl.tui.frame, "
        "factoryctl.tui.commands, factoryctl.tui.heatmap, factoryctl.tui.sim_backend\n"
        "assert 'textual' not in sys.modules, 'textual imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_scheduler_source_has_nodes_and_jobs_but_no_gpus() -> None:
    from factoryctl.scheduler.demo import DemoScheduler
    from factoryctl.telemetry.scheduler_source import SchedulerSource

    src = demo(nodes=8)
    snap = SchedulerSource(DemoScheduler(src.sim), clock=lambda: NOW).snapshot()
    assert len(snap.nodes) == 8 and snap.gpus == ()
    assert snap.jobs and snap.time == NOW
    assert snap.source == "demo" and "gpu_telemetry" in snap.unavailable
    rows = build_frame(snap, History(), NOW).nodes
    assert rows[0].cells[3] == "-"  # utilization unknown, not 0%


def test_problems_split_hardware_and_application_xids_and_list_lost_gpus() -> None:
    from factoryctl.tui.overview import WARNING, problems

    gpus = (
        GPU("a", 0, utilization=0.5, last_xid=13, last_xid_time=2.0),
        GPU("a", 1, utilization=0.5, last_xid=48, last_xid_time=1.0),
        GPU("b", 0, up=False),  # lost on a drained node: still listed
        GPU("c", 0, up=False),  # on a down node: the node line covers it
    )
    nodes = (
        Node("a", NodeState.ALLOCATED, gpu_count=2),
        Node("b", NodeState.DRAINED, reason="NHC: GPU 0 fell off the bus", gpu_count=1),
        Node("c", NodeState.DOWN, reason="Not responding", gpu_count=1),
    )
    found = problems(FactorySnapshot(time=NOW, nodes=nodes, gpus=gpus))
    by_text = {p.text: p.severity for p in found}
    assert by_text["a GPU 1 XID 48 (double-bit ECC error)"] == CRITICAL
    assert by_text["a GPU 0 XID 13 (graphics engine exception)"] == WARNING
    assert by_text["b GPU 0 lost (no telemetry)"] == CRITICAL
    assert not any(t.startswith("c GPU") for t in by_text)
    assert [p.severity for p in found] == sorted(p.severity for p in found)


def test_frame_one_gpu_pass_matches_the_per_gpu_definitions() -> None:
    # The frame gathers heat-map values and history samples in one pass over the GPUs
    # (gpuscan); they must be what the per-GPU definitions give, GPUs out of node order
    # and a GPU that is down yet still carries a value included.
    snap = _snap()
    gpus = (
        *snap.gpus,
        GPU("n1", 2, up=False, utilization=0.7, power_watts=10.0, power_limit_watts=700.0),
        GPU("n2", 2, utilization=0.2, power_watts=350.0, power_limit_watts=700.0),
    )
    snap = FactorySnapshot(time=NOW, nodes=snap.nodes, gpus=gpus, jobs=snap.jobs)
    frame = build_frame(snap, History(), NOW)
    assert frame.gpu_utilization == tuple(g.utilization if g.up else None for g in gpus)
    assert frame.gpu_power == tuple(
        g.power_watts / g.power_limit_watts
        if g.up and g.power_watts is not None and g.power_limit_watts
        else None
        for g in gpus
    )
    fresh = History().append(snap)  # the history computing its own samples
    (ours,), (theirs,) = frame.history.samples, fresh.samples
    assert ours.utilization.tobytes() == theirs.utilization.tobytes()
    assert ours.power.tobytes() == theirs.power.tobytes()
    assert frame.history.series("n1", 2, "utilization") == [pytest.approx(0.7)]
    rows = {r.key: r for r in frame.nodes}
    assert rows["n1"].cells[3] == "54%"  # (0.9 + 0.01 + 0.7) / 3: node rows count it too
    assert frame.summary.down_gpus == 2 and frame.summary.power_watts == 600 + 90 + 300 + 350
