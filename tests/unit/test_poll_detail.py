"""``telemetry.poll_detail``: what a lean (Overview) poll makes of the few series it reads.
Cost: milliseconds."""

from __future__ import annotations

from factoryctl.telemetry.poll_detail import (
    FULL,
    LEAN,
    VIEW_DETAIL,
    for_view,
    idle_held,
    lean_per_job,
)
from factoryctl.telemetry.results import QueryResult, Sample

HELD = {("n1", "a"): 4.0, ("n2", "a"): 4.0, ("n1", "b"): 2.0, ("n3", "c"): 8.0}


def _vector(rows: dict[tuple[str, str], float]) -> QueryResult:
    return QueryResult(
        "vector",
        vector=tuple(Sample({"node": n, "job_id": j}, v, 0.0) for (n, j), v in rows.items()),
    )


def test_idle_held_is_held_minus_active_where_above_0_for_pairs_with_both() -> None:
    active = {("n1", "a"): 3.0, ("n2", "a"): 4.0, ("n1", "b"): 0.0, ("n9", "z"): 1.0}
    # (n3, c) has no active rollup: not counted idle (the engine's join dropped it too).
    assert idle_held(HELD, active) == {("n1", "a"): 1.0, ("n1", "b"): 2.0}


def test_idle_gpus_are_reporting_minus_active_and_spells_the_longest() -> None:
    idle = {("n1", "a"): 1.0, ("n2", "a"): 2.0, ("n3", "c"): 3.0}
    spells = _vector({("n1", "a"): 90.0, ("n2", "a"): 300.0})
    # n3 lost 4 of its 8 GPUs: 4 report, 5 active of the 8 held can only be <= 4.
    per_job = lean_per_job(HELD, idle, spells, {("n3", "c"): 4.0})
    assert per_job["reporting"] == {"a": 8.0, "b": 2.0, "c": 4.0}
    assert per_job["idle_gpus"] == {"a": 3.0, "b": 0.0, "c": 0.0}
    assert per_job["idle_seconds"] == {"a": 300.0, "b": 0.0, "c": 0.0}
    assert per_job["mean_utilization"] == {} and per_job["power_watts"] == {}


def test_without_spell_rollups_the_spell_is_unknown_not_zero() -> None:
    # dcgm-exporter's recorded rollups have no idle spell: no query, and no 0 either.
    per_job = lean_per_job(HELD, {("n1", "b"): 2.0}, None, {})
    assert per_job["idle_seconds"] == {} and per_job["idle_gpus"]["b"] == 2.0


def test_each_view_needs_what_it_shows() -> None:
    assert for_view("overview") == LEAN and for_view("rollouts") == LEAN
    # A node's detail lists its jobs with their energy, which the Overview does not read.
    assert for_view("node-detail").job_energy and not LEAN.covers(for_view("node-detail"))
    assert not for_view("node-detail").job_figures
    assert for_view("triage") == FULL
    assert VIEW_DETAIL["jobs"].job_figures and not LEAN.covers(VIEW_DETAIL["jobs"])
    assert FULL.covers(VIEW_DETAIL["nodes"]) and not VIEW_DETAIL["jobs"].covers(FULL)
