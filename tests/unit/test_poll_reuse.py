"""The lean poll reuses the immutable objects whose inputs did not change (nodes, a job's
allocations) and shares equal job summaries: the same values as building them anew,
and the reuse holds only the last poll's. Cost: milliseconds."""

from __future__ import annotations

from factoryctl.model import JobSummary, Node, NodeState
from factoryctl.telemetry.job_summary import ReusedJobs, rollup_jobs
from factoryctl.telemetry.node_summary import node_from_counts, nodes_from_counts
from factoryctl.telemetry.prom_summary import ReusedSummaries, _job_summaries, _node_summaries

VALUES = {
    "gpus_total": {"a": 8.0, "b": 8.0, "c": 8.0, "d": 8.0},
    "gpus_allocated": {"a": 8.0, "b": 3.0, "c": 0.0, "d": 8.0},
    "reporting": {"a": 8.0, "b": 8.0, "c": 8.0},  # d: its exporter is silent
}


def test_nodes_are_node_from_counts_and_unchanged_ones_are_reused() -> None:
    names = sorted(VALUES["gpus_total"])
    reuse: dict[str, Node] = {}
    first = nodes_from_counts(names, VALUES, reuse=reuse)
    assert first == [node_from_counts(n, VALUES) for n in names]
    assert [n.state for n in first] == [
        NodeState.ALLOCATED,
        NodeState.MIXED,
        NodeState.IDLE,
        NodeState.DOWN,
    ]
    # b's job grew to all its GPUs; c is gone.
    changed = {
        "gpus_total": {"a": 8.0, "b": 8.0, "d": 8.0},
        "gpus_allocated": {"a": 8.0, "b": 8.0, "d": 8.0},
        "reporting": {"a": 8.0, "b": 8.0},
    }
    second = nodes_from_counts(["a", "b", "d"], changed, reuse=reuse)
    assert second == [node_from_counts(n, changed) for n in ("a", "b", "d")]
    assert second[0] is first[0] and second[2] is first[3]  # unchanged: the same object
    assert second[1] is not first[1] and second[1].state is NodeState.ALLOCATED
    assert list(reuse) == ["a", "b", "d"]  # c is gone: not kept
    blind = nodes_from_counts(["a"], changed, blind=True, reuse=reuse)
    assert blind == [node_from_counts("a", changed, blind=True)] and blind[0] is not second[0]


def test_jobs_reuse_unchanged_allocations_and_forget_finished_jobs() -> None:
    held = {("n1", "1"): 8.0, ("n2", "1"): 4.0, ("n1", "2"): 2.0}
    users = {("n1", "1"): "ada", ("n2", "1"): "ada", ("n1", "2"): "bob"}
    reuse: ReusedJobs = {}
    first = rollup_jobs(held, users, {"1": 5.0}, reuse)
    assert first == rollup_jobs(held, users, {"1": 5.0})
    now = {("n1", "1"): 8.0, ("n2", "1"): 4.0, ("n3", "3"): 1.0}  # 2 finished, 3 started
    second = rollup_jobs(now, {**users, ("n3", "3"): "cy"}, {"1": 9.0}, reuse)
    assert second == rollup_jobs(now, {**users, ("n3", "3"): "cy"}, {"1": 9.0})
    assert second[0].allocations is first[0].allocations and second[0].energy_joules == 9.0
    assert list(reuse) == ["1", "3"]
    again = rollup_jobs(now, {**users, ("n3", "3"): "cy"}, {"1": 9.0}, reuse)
    assert again[0] is second[0] and again[1] is second[1]  # the same samples: same jobs
    grown = rollup_jobs({**now, ("n2", "1"): 8.0}, users, None, reuse)
    assert grown[0].gpu_count == 16 and grown[0].allocations is not first[0].allocations


def test_equal_job_summaries_are_one_object_with_each_jobs_values() -> None:
    per_job = {
        "reporting": {"1": 8.0, "2": 8.0, "3": 4.0},
        "mean_utilization": {},
        "idle_gpus": {"3": 2.0},
        "idle_seconds": {"1": 0.0, "2": 0.0, "3": 120.0},
        "power_watts": {},
    }
    got = _job_summaries(["1", "2", "3", "4"], per_job)
    assert got == {
        "1": JobSummary(8, None, 0, 0.0),
        "2": JobSummary(8, None, 0, 0.0),
        "3": JobSummary(4, None, 2, 120.0),
        "4": JobSummary(0, None, 0, None),
    }
    assert got["1"] is got["2"]


def test_node_summaries_are_reused_only_where_every_figure_is_as_it_was() -> None:
    values = {
        **VALUES,
        "gpus_active": {"a": 8.0, "b": 1.0},
        "utilization": {"a": 0.9, "b": 0.2, "c": 0.0},
        "power_watts": {"a": 5000.0, "b": 900.0, "c": 400.0},
    }
    names = sorted(VALUES["gpus_total"])
    reuse: ReusedSummaries = {}
    first = _node_summaries(names, values, reuse)
    assert first == _node_summaries(names, values)
    assert first["d"].utilization is None and first["d"].gpus_up == 0  # nothing reports
    later = {**values, "power_watts": {**values["power_watts"], "b": 950.0}}
    second = _node_summaries(["a", "b", "d"], later, reuse)
    assert second == _node_summaries(["a", "b", "d"], later)
    assert second["a"] is first["a"] and second["d"] is first["d"]
    assert second["b"] is not first["b"] and second["b"].power_watts == 950.0
    assert list(reuse) == ["a", "b", "d"]
