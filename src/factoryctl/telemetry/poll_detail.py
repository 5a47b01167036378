"""How much of the factory a console poll reads: what the screen shows, not every figure.

At 100,000 GPUs a poll that reads every rollup parses ~175,000 series: the 12,500 nodes'
eight rollups and the ~15,000 (node, job) pairs' five. The engine spends a few
microseconds per series read and we as many parsing it, so the poll's time is the number
of series it touches (docs/benchmarks.md). Most of them only one view shows:

* the jobs' mean utilization and power (two of the five pair rollups) only the Jobs view,
  a job's detail and triage show. The Overview needs of the jobs only how many run, who
  holds idle GPUs and for how long. So elsewhere the poll reads the pairs' GPU counts
  (the allocations) and, filtered on the engine, the pairs holding idle GPUs and the
  idle spells under way: ~1,700 series at 100,000 GPUs instead of ~59,000;
* the nodes' XID counters and hottest GPUs only the Nodes view shows in full (the
  Overview's XID problems come from the per-GPU XID codes of dcgm-exporter, read in
  round 2). Elsewhere the hottest GPUs are read filtered on the engine: only the nodes
  at or over ``summaries.HOT_CELSIUS``, which the Overview lists. The throttled counts
  are read so, filtered to the nodes with any, in every view: no view shows them whole.

``Detail`` says what a poll reads; a view that needs more than the last poll read has the
console poll again at once (``tui.console``). What a lean poll did not read is listed in
the snapshot's ``unavailable`` (``LEAN_JOBS_UNAVAILABLE``, ``LEAN_NODES_UNAVAILABLE``),
never shown as 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from factoryctl.telemetry import schema as native
from factoryctl.telemetry.results import QueryResult

PairKey = tuple[str, str]  # (node, job_id)


@dataclass(frozen=True, slots=True)
class Detail:
    """What one poll reads beyond what every view needs."""

    job_figures: bool = True  # each job's mean utilization and power
    node_columns: bool = True  # each node's hottest GPU and XID counter (the Nodes view's)

    def covers(self, other: Detail) -> bool:
        return (self.job_figures or not other.job_figures) and (
            self.node_columns or not other.node_columns
        )


FULL = Detail()
LEAN = Detail(job_figures=False, node_columns=False)
# What each view shows beyond the Overview's figures; a view not named here needs LEAN.
VIEW_DETAIL = {
    "jobs": Detail(job_figures=True, node_columns=False),
    "job-detail": Detail(job_figures=True, node_columns=False),
    "triage": FULL,
    "nodes": Detail(job_figures=False, node_columns=True),
}
# A lean poll's snapshot lists these in ``unavailable``: not read, not zero.
LEAN_JOBS_UNAVAILABLE = frozenset({"job_utilization", "job_power"})
LEAN_NODES_UNAVAILABLE = frozenset({"xid_total", "temperature_max_celsius"})


def for_view(view: str) -> Detail:
    return VIEW_DETAIL.get(view, LEAN)


def idle_queries(window: str, spells: bool) -> dict[str, str]:
    """The pairs holding idle GPUs (GPUs held minus active, where above 0) and, where the
    rollups have them (``spells``: factoryctl-exporter's; dcgm-exporter's recorded rollups
    have none), the idle spells under way (above 0): filtered on the engine, a few
    hundred series answered."""
    held = f"last_over_time({native.JOB_GPUS}[{window}])"
    active = f"last_over_time({native.JOB_GPUS_ACTIVE}[{window}])"
    out = {"idle_pairs": f"{held} - {active} > 0"}
    if spells:
        out["idle_spells"] = f"last_over_time({native.JOB_IDLE_SECONDS}[{window}]) > 0"
    return out


def _by_pair(result: QueryResult) -> dict[PairKey, float]:
    return {(s.labels.get("node", ""), s.labels.get("job_id", "")): s.value for s in result.vector}


def lean_per_job(
    held: Mapping[PairKey, float],
    results: Mapping[str, QueryResult],
    reporting: Mapping[PairKey, float],
) -> dict[str, dict[str, float]]:
    """``job_summary.from_rollups``'s per-job columns without the utilization and power
    sums: GPUs reporting (held, or counted per GPU on a node that lost one), idle GPUs
    (reporting minus active) and the longest idle spell (0 for a job with none under way;
    unknown, not 0, where ``results`` holds no spells query); no mean utilization, no
    power."""
    idle_held = _by_pair(results["idle_pairs"])
    counted: dict[str, float] = {}
    idle: dict[str, float] = {}
    for pair, n in held.items():
        job_id = pair[1]
        up = reporting.get(pair, n)
        active = min(up, n - idle_held.get(pair, 0.0))
        counted[job_id] = counted.get(job_id, 0.0) + up
        idle[job_id] = idle.get(job_id, 0.0) + max(0.0, up - active)
    spell: dict[str, float] = {}
    if "idle_spells" in results:
        spell = dict.fromkeys(counted, 0.0)
        for (_, job_id), seconds in _by_pair(results["idle_spells"]).items():
            if job_id in spell:
                spell[job_id] = max(spell[job_id], seconds)
    reported = {j: n for j, n in counted.items() if n > 0}
    return {
        "mean_utilization": {},
        "idle_gpus": {j: idle[j] for j in reported},
        "reporting": reported,
        "power_watts": {},
        "idle_seconds": spell,
    }
