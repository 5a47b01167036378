"""``factoryctl nodes`` and ``jobs`` from the rollups (issue 13), on a fake engine.

The fake engine holds a small factory as GPU objects and answers each rollup query the
way factoryctl-exporter's rollups define it (sums, means and counts over up GPUs). The rows
the rollup path builds must equal the rows the pure per-GPU path (``views``) builds from
the same GPUs, and no query may ask for the whole per-GPU vector. Cost: milliseconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from factoryctl import views
from factoryctl.energy import local_midnight
from factoryctl.errors import ExitStatus
from factoryctl.model import GPU, Allocation, FactorySnapshot, Job, NodeState
from factoryctl.occupancy import ACTIVE_THRESHOLD, percentile
from factoryctl.summaries import is_problem, job_summaries, node_summaries
from factoryctl.telemetry import schema as s
from factoryctl.telemetry.client import PromClient, PromConfig, TelemetryError
from factoryctl.telemetry.poll_detail import LEAN
from factoryctl.telemetry.prom_context import SourceOptions
from factoryctl.telemetry.prom_detect import NO_ROLLUPS
from factoryctl.telemetry.prom_summary import INVENTORY_EVERY
from factoryctl.telemetry.prometheus_source import ROLLUPS_RECHECK, PrometheusSource
from factoryctl.tui.frame import build_frame
from factoryctl.tui.history import History

T = 1_767_225_600.0


def _gpu(node: str, i: int, util: float, jobs: tuple[str, ...], up: bool = True) -> GPU:
    return GPU(
        node=node,
        index=i,
        up=up,
        utilization=util if up else None,
        power_watts=100.0 + 500 * util if up else None,
        temperature_celsius=40.0 + 40 * util + i if up else None,
        memory_used_bytes=1e9 * (i + 1) if up else None,
        idle_seconds=(60.0 * (i + 1) if util < ACTIVE_THRESHOLD else 0.0) if up else None,
        xid_total=float(i % 2),
        job_ids=jobs,
    )


# n1: job a on 0-1, job b on 2-3. n2: job b on 0-2, GPU 1 lost; GPU 3 free.
GPUS = [
    _gpu("n1", 0, 0.9, ("a",)),
    _gpu("n1", 1, 0.02, ("a",)),
    _gpu("n1", 2, 0.5, ("b",)),
    _gpu("n1", 3, 0.7, ("b",)),
    _gpu("n2", 0, 0.01, ("b",)),
    _gpu("n2", 1, 0.0, ("b",), up=False),
    _gpu("n2", 2, 0.6, ("b",)),
    _gpu("n2", 3, 0.0, ()),
]
USERS = {"a": "alice", "b": "bob"}


def _vector(items: Iterable[tuple[dict[str, str], float]]) -> httpx.Response:
    result = [{"metric": m, "value": [T, repr(v)]} for m, v in items]
    return httpx.Response(
        200, json={"status": "success", "data": {"resultType": "vector", "result": result}}
    )


class RollupEngine:
    """Answers the console's queries from ``GPUS``; ``rollups=False``: an engine without."""

    def __init__(self, rollups: bool = True) -> None:
        self.rollups = rollups
        self.queries: list[str] = []
        self.energy_today = 3.6e9  # what the energy-since-midnight query answers

    def node_values(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for node in sorted({g.node for g in GPUS}):
            gs = [g for g in GPUS if g.node == node]
            up = [g for g in gs if g.up]
            out[node] = {
                s.NODE_GPUS: len(gs),
                s.NODE_GPUS_UP: len(up),
                s.NODE_GPUS_ALLOCATED: sum(1 for g in gs if g.job_ids),
                s.NODE_GPUS_THROTTLED: sum(1 for g in up if g.throttle_reasons),
                s.NODE_GPUS_ACTIVE: sum(1 for g in up if (g.utilization or 0) >= ACTIVE_THRESHOLD),
                s.NODE_POWER: sum(g.power_watts or 0 for g in up),
                s.NODE_UTILIZATION: sum(g.utilization or 0 for g in up) / len(up),
                s.NODE_TEMPERATURE_MAX: max(g.temperature_celsius or 0 for g in up),
                s.NODE_XID_ERRORS: sum(g.xid_total or 0 for g in gs),
            }
        return out

    def job_values(self) -> dict[tuple[str, str], dict[str, float]]:
        out: dict[tuple[str, str], dict[str, float]] = {}
        for g in GPUS:
            for job in g.job_ids:
                v = out.setdefault(
                    (g.node, job), {**dict.fromkeys(JOB_ROLLUPS, 0.0), s.JOB_UTILIZATION_MIN: 1.0}
                )
                v[s.JOB_GPUS] += 1
                if g.up and g.utilization is not None:
                    v[s.JOB_GPUS_ACTIVE] += g.utilization >= ACTIVE_THRESHOLD
                    v[s.JOB_UTILIZATION_SUM] += g.utilization
                    v[s.JOB_POWER] += g.power_watts or 0
                    v[s.JOB_IDLE_SECONDS] = max(v[s.JOB_IDLE_SECONDS], g.idle_seconds or 0)
                    v[s.JOB_UTILIZATION_MIN] = min(v[s.JOB_UTILIZATION_MIN], g.utilization)
                    v[s.JOB_MEMORY_USED] += g.memory_used_bytes or 0
        return out

    def __call__(self, req: httpx.Request) -> httpx.Response:
        if req.url.path != "/api/v1/query":
            return httpx.Response(404)
        q = parse_qs(req.content.decode())["query"][0]
        self.queries.append(q)
        nodes, jobs = self.node_values(), self.job_values()
        if q.startswith(f"count(last_over_time({s.NODE_GPUS}["):
            return _vector([({}, len(nodes))] if self.rollups else [])
        if " > on (node) " in q:  # nodes with a lost GPU
            return _vector(
                ({"node": n}, v[s.NODE_GPUS])
                for n, v in nodes.items()
                if v[s.NODE_GPUS] > v[s.NODE_GPUS_UP]
            )
        if q.startswith(f"count by (node, job_id) (last_over_time({s.GPU_UTILIZATION}{{"):
            wanted = re.search(r'node=~"([^"]*)"', q)
            assert wanted is not None
            counted: dict[tuple[str, str], int] = {}
            for g in GPUS:
                if g.up and re.fullmatch(wanted.group(1), g.node):
                    for job in g.job_ids:
                        counted[(g.node, job)] = counted.get((g.node, job), 0) + 1
            return _vector(({"node": n, "job_id": j}, c) for (n, j), c in counted.items())
        lost = re.fullmatch(rf'last_over_time\({s.GPU_UP}\{{node=~"([^"]*)"\}}\[\w+\]\) == 0', q)
        if lost:
            return _vector(
                ({"node": g.node, "gpu": str(g.index), "uuid": ""}, 0)
                for g in GPUS
                if not g.up and re.fullmatch(lost.group(1), g.node)
            )
        if q.startswith(f"last_over_time({s.GPU_TEMPERATURE}[") and " >= " in q:
            hot = float(q.rsplit(" ", 1)[1])
            return _vector(
                ({"node": g.node, "gpu": str(g.index)}, g.temperature_celsius)
                for g in GPUS
                if g.up and (g.temperature_celsius or 0) >= hot
            )
        by_job = re.match(
            r"(min|sum|max) by \(job_id\) \(last_over_time\((factoryctl_job_\w+)\[", q
        )
        if by_job and self.rollups:
            reduce = {"min": min, "max": max, "sum": sum}[by_job.group(1)]
            per: dict[str, list[float]] = {}
            for (_, j), v in jobs.items():
                if by_job.group(2) in v:  # not the job energy counters: none here
                    per.setdefault(j, []).append(v[by_job.group(2)])
            return _vector(({"job_id": j}, reduce(vs)) for j, vs in per.items())
        m = re.match(r'last_over_time\((factoryctl_(node|job)_\w+)(?:\{job_id=~"([^"]*)"\})?\[', q)
        if m and self.rollups:
            metric = m.group(1)
            if m.group(2) == "node":
                # A filter (``> 0``, ``>= 85``) keeps the matching nodes only; it drops
                # nothing from the labels: the name stays, as on both engines.
                cut = re.search(r" (>|>=) ([0-9.]+)$", q)
                return _vector(
                    ({"__name__": metric, "node": n}, v[metric])
                    for n, v in nodes.items()
                    if cut is None
                    or (
                        v[metric] > float(cut.group(2))
                        if cut.group(1) == ">"
                        else v[metric] >= float(cut.group(2))
                    )
                )
            positive = q.endswith(" > 0")
            wanted = m.group(3)  # the pairs of these jobs only
            return _vector(
                ({"__name__": metric, "node": n, "job_id": j, "user": USERS[j]}, v[metric])
                for (n, j), v in jobs.items()
                if (v[metric] or not positive) and (wanted is None or re.fullmatch(wanted, j))
            )
        if q.startswith(f"sum(clamp_min(last_over_time({s.NODE_ENERGY}["):
            return _vector([({}, self.energy_today)])
        if q.startswith("quantile by (job_id) (0.1,"):
            return _vector(({"job_id": j}, p) for j, p in self.per_job_p10().items())
        if q.startswith(f"sum by (job_id) ((last_over_time({s.GPU_MEMORY_USED}"):
            used: dict[str, float] = {}
            for g in GPUS:
                for job in g.job_ids:
                    if g.memory_used_bytes is not None:
                        used[job] = used.get(job, 0.0) + g.memory_used_bytes
            return _vector(({"job_id": j}, v) for j, v in used.items())
        return _vector([])

    def per_job_p10(self) -> dict[str, float]:
        utils: dict[str, list[float]] = {}
        for g in GPUS:
            for job in g.job_ids:
                if g.utilization is not None:
                    utils.setdefault(job, []).append(g.utilization)
        return {j: p for j, u in utils.items() if (p := percentile(u, 0.1)) is not None}


JOB_ROLLUPS = (s.JOB_GPUS, s.JOB_GPUS_ACTIVE, s.JOB_UTILIZATION_SUM, s.JOB_POWER)
JOB_ROLLUPS += (s.JOB_IDLE_SECONDS, s.JOB_MEMORY_USED)


def _source(engine: RollupEngine, rollups: str = "auto") -> PrometheusSource:
    client = PromClient(PromConfig("http://vm:8428"), transport=httpx.MockTransport(engine))
    opts = SourceOptions(schema="native", scrape_interval=15.0, search_delay=0.0, rollups=rollups)
    return PrometheusSource(client, None, opts, clock=lambda: T)


def _truth() -> FactorySnapshot:
    jobs = []
    for job_id, user in USERS.items():
        held: dict[str, list[int]] = {}
        for g in GPUS:
            if job_id in g.job_ids:
                held.setdefault(g.node, []).append(g.index)
        allocs = tuple(Allocation(n, tuple(i)) for n, i in sorted(held.items()))
        jobs.append(Job(job_id=job_id, user=user, allocations=allocs))
    return FactorySnapshot(time=T, gpus=tuple(GPUS), jobs=tuple(jobs))


def _per_gpu_queries(queries: list[str]) -> list[str]:
    """Queries that would bring back one sample per GPU: a per-GPU series neither reduced
    by an aggregation nor filtered to a few nodes."""
    return [
        q
        for q in queries
        if "factoryctl_gpu_" in q
        and not re.match(r"(sum|avg|max|count|quantile) by \((job_id|node, job_id)\)", q)
        and not re.search(r" (==|>=) [0-9.]+$", q)  # a filter: only the matches come back
    ]


def test_nodes_from_rollups_equal_the_per_gpu_rows() -> None:
    engine = RollupEngine()
    snap, rows = _source(engine).node_rows_for_view()
    truth = _truth()
    want = views.node_rows(
        FactorySnapshot(time=T, nodes=snap.nodes, gpus=truth.gpus, jobs=truth.jobs)
    )
    assert rows == want
    assert [r["state"] for r in rows] == ["allocated", "mixed"]
    assert NO_ROLLUPS not in snap.warnings
    assert not _per_gpu_queries(engine.queries), engine.queries


def test_jobs_from_rollups_equal_the_per_gpu_rows() -> None:
    engine = RollupEngine()
    done = _source(engine).job_rows_for_view()
    assert done is not None
    snap, rows = done
    want = views.job_rows(_truth())
    keys = ("job_id", "user", "gpus", "nodes", "mean_utilization", "min_utilization")
    keys += ("idle_gpus", "idle_seconds", "memory_used_bytes", "power_watts")
    assert [{k: r[k] for k in keys} for r in rows] == pytest.approx(
        [{k: r[k] for k in keys} for r in want]
    )
    assert set(rows[0]) == set(want[0])  # the same keys as the per-GPU path
    # A 10th percentile cannot be built from per-node figures: null, and said so.
    assert [r["low_utilization"] for r in rows] == [None, None]
    assert snap.unavailable == {"low_utilization"}
    assert [r["min_utilization"] for r in rows] == [0.02, 0.01]
    # Job b's lost GPU on n2: the mean is over its 4 reporting GPUs, not its 5 held.
    assert rows[1]["gpus"] == 5 and rows[1]["idle_gpus"] == 1
    assert not _per_gpu_queries(engine.queries), engine.queries
    # The lost GPU's node is the only one read per GPU.
    filtered = [q for q in engine.queries if "node=~" in q]
    assert len(filtered) == 1 and '"n2"' in filtered[0]
    assert [n.name for n in snap.nodes] == ["n1", "n2"]


def test_jobs_without_node_names_skip_the_inventory() -> None:
    """Without ``--node`` the jobs view needs no node names: the inventory (every node's
    GPUs over 10 minutes) is not read, and the rows are the same."""
    engine, lean = RollupEngine(), RollupEngine()
    full, named = _source(engine).job_rows_for_view(), _source(lean).job_rows_for_view(False)
    assert full is not None and named is not None
    inventory = f"last_over_time({s.NODE_GPUS}[600000ms])"
    assert inventory in engine.queries
    assert inventory not in lean.queries, lean.queries
    assert named[1] == full[1]
    assert named[0].nodes == () and [n.name for n in full[0].nodes] == ["n1", "n2"]


def test_without_rollups_the_raw_path_runs_with_a_hint() -> None:
    engine = RollupEngine(rollups=False)
    snap, _ = _source(engine).node_rows_for_view()
    assert NO_ROLLUPS in snap.warnings
    assert any(q.startswith("count by (node)") for q in engine.queries)
    # Said off: no detection query and no hint.
    quiet = RollupEngine(rollups=True)
    snap, _ = _source(quiet, rollups="off").node_rows_for_view()
    assert NO_ROLLUPS not in snap.warnings
    assert not any(q.startswith(f"count(last_over_time({s.NODE_GPUS}") for q in quiet.queries)


def test_detection_is_asked_once() -> None:
    engine = RollupEngine()
    src = _source(engine)
    src.node_rows_for_view()
    src.node_rows_for_view()
    probes = [q for q in engine.queries if q.startswith(f"count(last_over_time({s.NODE_GPUS}")]
    assert len(probes) == 1


def test_console_poll_from_rollups_is_the_summarized_factory() -> None:
    engine = RollupEngine()
    snap = _source(engine).console_snapshot()
    truth = _truth()
    assert dict(snap.node_summaries) == node_summaries(truth)
    assert dict(snap.job_summaries) == pytest.approx(job_summaries(truth))
    assert [g.key for g in snap.gpus] == [g.key for g in GPUS if is_problem(g)] == [("n2", 1)]
    assert [(n.name, n.state) for n in snap.nodes] == [
        ("n1", NodeState.ALLOCATED),
        ("n2", NodeState.MIXED),
    ]
    assert not _per_gpu_queries(engine.queries), engine.queries
    # Per-GPU series only where a node's rollup shows a problem: n2 lost a GPU.
    per_gpu = [q for q in engine.queries if "factoryctl_gpu_" in q]
    assert per_gpu and all('node=~"n2"' in q for q in per_gpu), per_gpu
    # The frame from it matches the one from every GPU (nodes and jobs as the rollups say).
    full = FactorySnapshot(
        time=T, nodes=snap.nodes, gpus=truth.gpus, jobs=truth.jobs, unavailable=snap.unavailable
    )
    a, b = build_frame(full, History(), T), build_frame(snap, History(), T)
    assert [r.cells for r in b.nodes] == [r.cells for r in a.nodes]
    assert [r.cells for r in b.jobs] == [r.cells for r in a.jobs]
    assert b.summary.occupancy == a.summary.occupancy
    assert b.summary.problems == a.summary.problems


def test_a_lean_poll_reads_no_job_figures_yet_finds_the_same_idle_gpus() -> None:
    """The Overview's poll (``poll_detail.LEAN``) reads the pairs' GPUs held and active and,
    filtered to the jobs holding idle GPUs, the spells: the same idle GPUs, spells, GPUs
    reporting (n2 lost a GPU of job b) and Overview as the full poll, no job utilization
    or power (unavailable, not 0) and no node XID counts."""
    full_engine, lean_engine = RollupEngine(), RollupEngine()
    full = _source(full_engine).console_snapshot()
    lean = _source(lean_engine).console_snapshot(detail=LEAN)
    # Each job's energy is not read for the Overview: unknown, not 0.
    assert lean.jobs == tuple(replace(j, energy_joules=None) for j in full.jobs)
    assert any(s.JOB_ENERGY in q for q in full_engine.queries)
    assert "job_energy" in lean.unavailable and "job_energy" not in full.unavailable
    assert not any(s.JOB_ENERGY in q for q in lean_engine.queries)
    for job_id, f in full.job_summaries.items():
        got = lean.job_summaries[job_id]
        assert (got.reporting, got.idle_gpus, got.idle_seconds) == (
            f.reporting,
            f.idle_gpus,
            f.idle_seconds,
        ), job_id
        assert got.mean_utilization is None and got.power_watts is None
    assert {j: v.idle_gpus for j, v in lean.job_summaries.items()} == {"a": 1, "b": 1}
    assert {"job_utilization", "job_power", "xid_total"} <= lean.unavailable
    assert not {"job_utilization", "job_power", "xid_total"} & full.unavailable
    assert all(v.xid_total is None for v in lean.node_summaries.values())
    # No GPU here is hot: the filtered read brings back no node's temperature.
    assert all(v.temperature_max_celsius is None for v in lean.node_summaries.values())
    assert all(v.temperature_max_celsius for v in full.node_summaries.values())
    assert "temperature_max_celsius" in lean.unavailable
    # The only (node, job) series read whole: the GPUs each pair holds and those active.
    pair_reads = [q for q in lean_engine.queries if q.startswith("last_over_time(factoryctl_job_")]
    assert sorted(pair_reads) == sorted(
        [
            f"last_over_time({s.JOB_GPUS}[30000ms])",
            f"last_over_time({s.JOB_GPUS_ACTIVE}[30000ms])",
            # The spells of the two jobs holding an idle GPU only, not every pair's.
            f'last_over_time({s.JOB_IDLE_SECONDS}{{job_id=~"a|b"}}[30000ms]) > 0',
        ]
    )
    for metric in (s.JOB_UTILIZATION_SUM, s.JOB_POWER, s.NODE_XID_ERRORS):
        assert not any(metric in q for q in lean_engine.queries), metric
    a, b = build_frame(full, History(), T), build_frame(lean, History(), T)
    assert b.summary.occupancy == a.summary.occupancy
    assert b.summary.problems == a.summary.problems
    assert [r.key for r in b.jobs] == [r.key for r in a.jobs]


def test_console_poll_reads_the_inventory_once_a_minute_or_when_the_nodes_change() -> None:
    engine = RollupEngine()
    now = [T]
    src = _source(engine)
    src.clock = lambda: now[0]
    inventory = f"last_over_time({s.NODE_GPUS}[600000ms])"

    def poll() -> tuple[int, dict[str, int]]:
        first = len(engine.queries)
        snap = src.console_snapshot()
        asked = engine.queries[first:].count(inventory)
        return asked, {n: v.gpus for n, v in snap.node_summaries.items()}

    assert poll() == (1, {"n1": 4, "n2": 4})
    now[0] += 30
    assert poll() == (0, {"n1": 4, "n2": 4})  # the cached inventory, the same counts
    now[0] += INVENTORY_EVERY - 30
    assert poll()[0] == 1  # a minute on: asked again
    # A node reports that the cached inventory does not hold: asked at once.
    GPUS.append(_gpu("n3", 0, 0.5, ()))
    try:
        now[0] += 1
        assert poll() == (1, {"n1": 4, "n2": 4, "n3": 1})
    finally:
        GPUS.pop()


def test_console_poll_reads_energy_since_midnight_once_a_minute_and_after_midnight() -> None:
    engine = RollupEngine()
    midnight = local_midnight(T) + 86400  # the next one
    now = [midnight - 70]
    src = _source(engine)
    src.clock = lambda: now[0]

    def poll() -> tuple[int, float | None]:
        first = len(engine.queries)
        snap = src.console_snapshot()
        asked = sum(1 for q in engine.queries[first:] if s.NODE_ENERGY in q)
        return asked, snap.energy_today_joules

    assert poll() == (1, 3.6e9)
    engine.energy_today = 4.0e9
    now[0] += 30
    assert poll() == (0, 3.6e9)  # the figure read 30 s ago
    now[0] += INVENTORY_EVERY - 30
    assert poll() == (1, 4.0e9)  # a minute on: read again
    engine.energy_today = 1.0e6
    now[0] = midnight + 1  # 11 s later, but a new day: read at once
    assert poll() == (1, 1.0e6)


def test_console_poll_reads_each_rollup_as_it_stands_in_its_own_query() -> None:
    # One instant query per rollup, no aggregation and no selector over several names:
    # together they cost both engines less than one merged selector (prom_context.Rollups).
    engine = RollupEngine()
    _source(engine).console_snapshot()
    for metric in (s.NODE_POWER, s.NODE_UTILIZATION, s.JOB_POWER, s.JOB_UTILIZATION_SUM):
        assert engine.queries.count(f"last_over_time({metric}[30000ms])") == 1, metric
    assert not any("__name__" in q for q in engine.queries), engine.queries


def test_a_rollup_answer_with_a_series_of_another_name_is_an_error() -> None:
    class Renaming(RollupEngine):
        def __call__(self, req: httpx.Request) -> httpx.Response:
            resp = super().__call__(req)
            if (
                not parse_qs(req.content.decode())
                .get("query", [""])[0]
                .startswith(f"last_over_time({s.NODE_POWER}[")
            ):
                return resp
            doc = resp.json()
            for item in doc["data"]["result"]:
                item["metric"].pop("__name__")  # an engine that drops the names
            return httpx.Response(200, json=doc)

    with pytest.raises(TelemetryError, match="rollup query returned a series named None"):
        _source(Renaming()).console_snapshot()


def test_an_engine_that_gains_the_rollups_is_read_through_them_within_a_minute() -> None:
    # A console started before the exporter's upgrade (or the rules' install) moves onto
    # the rollups without a restart; once found, they are not asked for again.
    engine = RollupEngine(rollups=False)
    src = _source(engine)
    assert not src.console_snapshot(at=T).node_summaries
    engine.rollups = True
    assert not src.console_snapshot(at=T + 30).node_summaries  # asked once a minute
    assert src.console_snapshot(at=T + ROLLUPS_RECHECK).node_summaries
    probes = len([q for q in engine.queries if q.startswith(f"count(last_over_time({s.NODE_GPUS}")])
    src.console_snapshot(at=T + 3 * ROLLUPS_RECHECK)
    after = [q for q in engine.queries if q.startswith(f"count(last_over_time({s.NODE_GPUS}")]
    assert (probes, len(after)) == (2, 2)


def test_console_poll_without_rollups_is_the_full_snapshot_with_a_hint() -> None:
    engine = RollupEngine(rollups=False)
    snap = _source(engine).console_snapshot()
    assert not snap.node_summaries
    assert NO_ROLLUPS in snap.warnings


def test_jobs_node_filter_reads_the_inventory_only_when_given(run_cli: Any) -> None:
    """``jobs --node`` still tells an unknown node (an error) from a node without jobs."""
    engine = RollupEngine()
    inventory = f"last_over_time({s.NODE_GPUS}[600000ms])"
    plain = run_cli("-o", "json", "jobs", source=_source(engine))
    assert plain.status == 0, plain.stderr
    assert sorted(r["job_id"] for r in json.loads(plain.stdout)["items"]) == ["a", "b"]
    assert inventory not in engine.queries
    on_n2 = run_cli("-o", "json", "jobs", "--node", "n2", source=_source(engine))
    assert on_n2.status == 0, on_n2.stderr
    assert [r["job_id"] for r in json.loads(on_n2.stdout)["items"]] == ["b"]
    assert inventory in engine.queries
    unknown = run_cli("-o", "json", "jobs", "--node", "n9", source=_source(RollupEngine()))
    assert unknown.status == ExitStatus.NOT_FOUND and "unknown node: n9" in unknown.stderr
