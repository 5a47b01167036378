"""How much of the factory a console poll reads: what the screen shows, not every figure.

At 100,000 GPUs a poll that reads every rollup parses ~175,000 series: the 12,500 nodes'
eight rollups and the ~15,000 (node, job) pairs' five. The engine spends a few
microseconds per series read and we as many parsing it, so the poll's time is the number
of series it touches (docs/benchmarks.md). Most of them only one view shows:

* the jobs' mean utilization and power (two of the five pair rollups) only the Jobs view,
  a job's detail and triage show. The Overview needs of the jobs only how many run, who
  holds idle GPUs and for how long. So elsewhere the poll reads two of the five: the
  pairs' GPUs held (the allocations) and active (held minus active: the idle GPUs,
  ``idle_held``), and in a second round, filtered on the engine to the jobs holding an
  idle GPU, the idle spells under way: ~30,000 series at 100,000 GPUs instead of
  ~74,000;
* each job's energy (its counters summed over its ~15,000 pairs) only the Jobs view, a
  job's or a node's detail and triage show: the Overview's energy is the factory's since
  midnight (``prom_summary``), so its poll does not read them;
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

from factoryctl.telemetry.results import QueryResult

PairKey = tuple[str, str]  # (node, job_id)


@dataclass(frozen=True, slots=True)
class Detail:
    """What one poll reads beyond what every view needs."""

    job_figures: bool = True  # each job's mean utilization and power
    node_columns: bool = True  # each node's hottest GPU and XID counter (the Nodes view's)
    job_energy: bool = True  # each job's energy counters, summed

    def covers(self, other: Detail) -> bool:
        return (
            (self.job_figures or not other.job_figures)
            and (self.node_columns or not other.node_columns)
            and (self.job_energy or not other.job_energy)
        )


FULL = Detail()
LEAN = Detail(job_figures=False, node_columns=False, job_energy=False)
# What each view shows beyond the Overview's figures; a view not named here needs LEAN.
VIEW_DETAIL = {
    "jobs": Detail(job_figures=True, node_columns=False),
    "job-detail": Detail(job_figures=True, node_columns=False),
    "triage": FULL,
    "nodes": Detail(job_figures=False, node_columns=True, job_energy=False),
    # The jobs on the node, each with its energy.
    "node-detail": Detail(job_figures=False, node_columns=False),
}
# A lean poll's snapshot lists these in ``unavailable``: not read, not zero.
LEAN_JOBS_UNAVAILABLE = frozenset({"job_utilization", "job_power"})
LEAN_NODES_UNAVAILABLE = frozenset({"xid_total", "temperature_max_celsius"})
LEAN_ENERGY_UNAVAILABLE = frozenset({"job_energy"})


def for_view(view: str) -> Detail:
    return VIEW_DETAIL.get(view, LEAN)


# The lean poll's pair rollups, read whole: the allocations and the GPUs active in them.
LEAN_PAIR_ROLLUPS = ("held", "active")


def idle_held(
    held: Mapping[PairKey, float], active: Mapping[PairKey, float]
) -> dict[PairKey, float]:
    """Each pair's GPUs held and not active, where above 0: what the engine's
    ``held - active > 0`` gave, for pairs with both rollups. Both vectors are read whole
    anyway (held for the allocations): the binary operation read them a second time and
    cost the engine more than the two reads."""
    out = {}
    active_of = active.get
    for pair, n in held.items():
        a = active_of(pair)
        if a is not None and n - a > 0:
            out[pair] = n - a
    return out


def lean_per_job(
    held: Mapping[PairKey, float],
    idle: Mapping[PairKey, float],
    spells: QueryResult | None,
    reporting: Mapping[PairKey, float],
) -> dict[str, dict[str, float]]:
    """``job_summary.from_rollups``'s per-job columns without the utilization and power
    sums: GPUs reporting (held, or counted per GPU on a node that lost one), idle GPUs
    (reporting minus active; ``idle``: ``idle_held``) and the longest idle spell (0 for a
    job with none under way; unknown, not 0, where ``spells`` is None: no spell
    rollups); no mean utilization, no power."""
    counted: dict[str, float] = {}
    counted_of = counted.get
    # Only a pair with idle GPUs or counted per GPU (a few hundred of ~15,000) can add
    # idle GPUs: every other one adds exactly 0 (up = held = active), so it is skipped.
    special = idle.keys() | reporting.keys()
    adds: list[tuple[str, float]] = []
    for pair, n in held.items():
        job_id = pair[1]
        if pair in special:
            up = reporting.get(pair, n)
            active = min(up, n - idle.get(pair, 0.0))
            counted[job_id] = counted_of(job_id, 0.0) + up
            adds.append((job_id, max(0.0, up - active)))
        else:
            counted[job_id] = counted_of(job_id, 0.0) + n
    idle_by_job = dict.fromkeys(counted, 0.0)
    for job_id, n in adds:  # in the pairs' order, as they were summed
        idle_by_job[job_id] += n
    spell: dict[str, float] = {}
    if spells is not None:
        spell = dict.fromkeys(counted, 0.0)
        for s in spells.vector:
            job_id = s.labels.get("job_id", "")
            if job_id in spell:
                spell[job_id] = max(spell[job_id], s.value)
    reported = {j: n for j, n in counted.items() if n > 0}
    return {
        "mean_utilization": {},
        "idle_gpus": {j: idle_by_job[j] for j in reported},
        "reporting": reported,
        "power_watts": {},
        "idle_seconds": spell,
    }
