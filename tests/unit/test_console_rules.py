"""The Overview's lean poll (and the Nodes view's) with the console's recording rules, on a
fake engine.

``RulesEngine`` is test_rollup_views' fake engine with a metric-name index and the four
series dashboards/prometheus/console.rules.yml records, computed from the same GPUs as
the rules define them. The lean poll with the rules must show what the lean poll without
them shows, from fewer reads; stopped rules must read the rollups again and say so.
Cost: milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import yaml

from factoryctl.model import FactorySnapshot
from factoryctl.summaries import HOT_CELSIUS
from factoryctl.telemetry import console_rules as cr
from factoryctl.telemetry import schema as s
from factoryctl.telemetry.poll_detail import FULL, LEAN, for_view
from factoryctl.telemetry.prometheus_source import ROLLUPS_RECHECK, PrometheusSource
from tests.unit.test_rollup_views import GPUS, USERS, RollupEngine, T, _source, _vector

RULES = Path(__file__).resolve().parents[2] / "dashboards" / "prometheus" / "console.rules.yml"
W = "30000ms"  # the fake source's window: 2 x 15 s scrapes
# The three reads the rules replace, and the four plain reads that replace them.
RAW = {
    f"last_over_time({s.JOB_GPUS_ACTIVE}[{W}])",
    f"last_over_time({s.NODE_GPUS_THROTTLED}[{W}]) > 0",
    f"last_over_time({s.NODE_TEMPERATURE_MAX}[{W}]) >= 85",
}
RECORDED = {cr.HEARTBEAT, cr.IDLE_PAIRS, cr.THROTTLED_NODES, cr.HOT_NODES}
PER_GPU = re.compile(
    r'last_over_time\((factoryctl_gpu_\w+)\{node=~"([^"]*)"\}\[\w+\]\) (==|>=) ([0-9.]+)'
)


@pytest.fixture(autouse=True)
def problems() -> Iterator[None]:
    """n1's GPU 3 hot (90 C), n2's GPU 2 throttled: a problem of each kind the rules list."""
    kept = list(GPUS)
    GPUS[3] = replace(GPUS[3], temperature_celsius=90.0)
    GPUS[6] = replace(GPUS[6], throttle_reasons=("hw_thermal_slowdown",))
    try:
        yield
    finally:
        GPUS[:] = kept


class RulesEngine(RollupEngine):
    """``rules``: the console rules' names in the index and their series served; ``age``:
    seconds since their last evaluation (None: no heartbeat); ``idle``: recorded idle
    pairs that replace or add to what the rule computes from the GPUs."""

    def __init__(self, rules: bool = True, age: float | None = 10.0) -> None:
        super().__init__()
        self.rules, self.age = rules, age
        self.idle: dict[tuple[str, str], float] = {}
        self.index_reads = 0
        self.stopped = False  # the three lists gone (stale-marked), the heartbeat kept

    def recorded(self, q: str) -> list[tuple[dict[str, str], float]] | None:
        nodes, pairs = self.node_values(), self.job_values()
        if q == cr.HEARTBEAT:
            return [] if self.age is None else [({"__name__": q}, T - self.age)]
        if self.stopped and q in RECORDED:
            return []
        if q == cr.IDLE_PAIRS:
            idle = {k: v[s.JOB_GPUS] - v[s.JOB_GPUS_ACTIVE] for k, v in pairs.items()}
            idle.update(self.idle)
            return [
                ({"__name__": q, "node": n, "job_id": j, "user": USERS.get(j, "?")}, v)
                for (n, j), v in idle.items()
                if v > 0
            ]
        if q == cr.THROTTLED_NODES:
            got = {n: v[s.NODE_GPUS_THROTTLED] for n, v in nodes.items()}
            return [({"__name__": q, "node": n}, v) for n, v in got.items() if v > 0]
        if q == cr.HOT_NODES:
            got = {n: v[s.NODE_TEMPERATURE_MAX] for n, v in nodes.items()}
            return [({"__name__": q, "node": n}, v) for n, v in got.items() if v >= HOT_CELSIUS]
        return None

    def __call__(self, req: httpx.Request) -> httpx.Response:
        if req.url.path == "/api/v1/label/__name__/values":
            self.index_reads += 1
            names = [s.NODE_GPUS, s.JOB_GPUS, *(sorted(RECORDED) if self.rules else [])]
            return httpx.Response(200, json={"status": "success", "data": names})
        if req.url.path == "/api/v1/query":
            q = parse_qs(req.content.decode())["query"][0]
            got = self.recorded(q) if self.rules else None
            per_gpu = PER_GPU.fullmatch(q)
            if got is None and per_gpu and per_gpu.group(1) != s.GPU_UP:
                got = self.per_gpu(*per_gpu.groups())
            if got is not None:
                self.queries.append(q)
                return _vector(got)
        return super().__call__(req)

    def per_gpu(self, metric: str, nodes: str, op: str, limit: str) -> list:
        """Round 2's filtered reads of the hot and throttled GPUs, on the named nodes."""
        gpus = [g for g in GPUS if g.up and re.fullmatch(nodes, g.node)]
        if metric == s.GPU_TEMPERATURE and op == ">=":
            return [
                ({"node": g.node, "gpu": str(g.index)}, g.temperature_celsius)
                for g in gpus
                if (g.temperature_celsius or 0) >= float(limit)
            ]
        assert (metric, op, limit) == (s.GPU_CLOCK_EVENT, "==", "1"), (metric, op, limit)
        return [
            ({"node": g.node, "gpu": str(g.index), "reason": r}, 1.0)
            for g in gpus
            for r in g.throttle_reasons
        ]


def _poll(engine: RulesEngine, detail=LEAN, polls: int = 1) -> FactorySnapshot:
    src = _source(engine)
    for _ in range(polls):
        snap = src.console_snapshot(detail=detail)
    return snap


def _same_overview(a: FactorySnapshot, b: FactorySnapshot) -> None:
    assert a.job_summaries == b.job_summaries
    assert a.node_summaries == b.node_summaries
    assert a.gpus == b.gpus
    assert a.jobs == b.jobs and a.nodes == b.nodes


def test_the_lean_poll_with_the_rules_reads_them_instead_of_three_rollups() -> None:
    rules, plain = RulesEngine(), RulesEngine(rules=False)
    got, want = _poll(rules), _poll(plain)
    _same_overview(got, want)
    # The scenario holds a problem of each kind and an idle GPU in each job.
    assert [(g.key, g.throttle_reasons, g.temperature_celsius) for g in got.gpus] == [
        (("n1", 3), (), 90.0),
        (("n2", 1), (), None),  # lost
        (("n2", 2), ("hw_thermal_slowdown",), None),
    ]
    assert {j: v.idle_gpus for j, v in got.job_summaries.items()} == {"a": 1, "b": 1}
    assert {j: v.idle_seconds for j, v in got.job_summaries.items()} == {"a": 120.0, "b": 60.0}
    assert not any("console rules" in w for w in got.warnings)
    # Exactly the reads without the rules, less the three, plus the four recorded.
    assert set(rules.queries) == (set(plain.queries) - RAW) | RECORDED
    assert set(plain.queries) >= RAW
    assert len(rules.queries) == len(plain.queries) + 1


def test_without_the_rules_names_the_lean_poll_reads_what_it_read_before() -> None:
    engine = RulesEngine(rules=False)
    src = _source(engine)
    src.console_snapshot(detail=LEAN)
    first = len(engine.queries)
    src.console_snapshot(detail=LEAN)  # a steady poll: no inventory, no energy today
    gpu_util = f'last_over_time({s.GPU_UTILIZATION}{{node=~"n2"}}[{W}])'
    job_info = f'last_over_time({s.GPU_JOB_INFO}{{node=~"n2"}}[{W}])'
    assert sorted(engine.queries[first:]) == sorted(
        [
            f"last_over_time({s.NODE_GPUS_UP}[{W}])",
            f"last_over_time({s.NODE_GPUS_ALLOCATED}[{W}])",
            f"last_over_time({s.NODE_UTILIZATION}[{W}])",
            f"last_over_time({s.NODE_POWER}[{W}])",
            f"last_over_time({s.NODE_GPUS_ACTIVE}[{W}])",
            f"last_over_time({s.JOB_GPUS}[{W}])",
            *RAW,
            f'last_over_time({s.GPU_TEMPERATURE}{{node=~"n1"}}[{W}]) >= 85',
            f'last_over_time({s.GPU_UP}{{node=~"n2"}}[{W}]) == 0',
            f'last_over_time({s.GPU_CLOCK_EVENT}{{node=~"n2"}}[{W}]) == 1',
            f"count by (node, job_id) ({gpu_util} * on (node, gpu) group_right {job_info})",
            f'last_over_time({s.JOB_IDLE_SECONDS}{{job_id=~"a|b"}}[{W}]) > 0',
        ]
    )


def test_a_recorded_idle_pair_counts_only_where_held_now_and_at_most_its_gpus() -> None:
    engine = RulesEngine()
    engine.idle[("n1", "z")] = 4  # job z has finished: the poll reads no pair of it held
    engine.idle[("n1", "a")] = 7  # more than the 2 GPUs job a holds on n1
    snap = _poll(engine)
    assert "z" not in snap.job_summaries
    assert {j: v.idle_gpus for j, v in snap.job_summaries.items()} == {"a": 2, "b": 1}
    spells = [q for q in engine.queries if s.JOB_IDLE_SECONDS in q]
    assert spells == [f'last_over_time({s.JOB_IDLE_SECONDS}{{job_id=~"a|b"}}[{W}]) > 0']


@pytest.mark.parametrize(
    ("age", "said"),
    [(300.0, "last evaluated 300 s ago"), (None, "not evaluated lately (no heartbeat)")],
)
def test_stopped_rules_read_the_rollups_and_say_so(age: float | None, said: str) -> None:
    stopped, plain = RulesEngine(age=age), RulesEngine(rules=False)
    # Rules that stopped hold nothing now: the lists alone would read as "no problems".
    stopped.stopped = True
    got, want = _poll(stopped), _poll(plain)
    _same_overview(got, want)
    assert len(got.gpus) == 3
    warning = [w for w in got.warnings if w.startswith("console rules")]
    assert warning == [f"console rules ({cr.RULES_FILE}) {said}: reading the rollups"]
    assert said in warning[0] and set(stopped.queries) >= RAW


def test_a_heartbeat_at_the_limit_is_fresh() -> None:
    engine = RulesEngine(age=cr.MAX_AGE)
    snap = _poll(engine)
    assert not RAW & set(engine.queries)
    assert not any(w.startswith("console rules") for w in snap.warnings)


def test_the_nodes_view_reads_the_idle_pairs_and_throttled_nodes_recorded() -> None:
    # It reads every node's hottest GPU (its column), so the hot list would add nothing;
    # the pairs' GPUs active and the throttled filter are two whole reads it saves.
    rules, plain = RulesEngine(), RulesEngine(rules=False)
    got, want = _poll(rules, for_view("nodes")), _poll(plain, for_view("nodes"))
    _same_overview(got, want)
    assert {n: v.temperature_max_celsius for n, v in got.node_summaries.items()} == {
        n: v.temperature_max_celsius for n, v in want.node_summaries.items()
    }
    assert len(got.gpus) == 3  # the hot, the lost and the throttled GPU
    assert {j: v.idle_gpus for j, v in got.job_summaries.items()} == {"a": 1, "b": 1}
    saved = {
        f"last_over_time({s.JOB_GPUS_ACTIVE}[{W}])",
        f"last_over_time({s.NODE_GPUS_THROTTLED}[{W}]) > 0",
    }
    assert set(plain.queries) >= saved
    assert set(rules.queries) == (set(plain.queries) - saved) | (RECORDED - {cr.HOT_NODES})
    assert f"last_over_time({s.NODE_TEMPERATURE_MAX}[{W}])" in rules.queries


def test_the_nodes_view_with_stopped_rules_reads_the_rollups_and_says_so() -> None:
    stopped, plain = RulesEngine(age=300.0), RulesEngine(rules=False)
    stopped.stopped = True
    got, want = _poll(stopped, for_view("nodes")), _poll(plain, for_view("nodes"))
    _same_overview(got, want)
    assert len(got.gpus) == 3
    assert [w for w in got.warnings if w.startswith("console rules")] == [
        f"console rules ({cr.RULES_FILE}) last evaluated 300 s ago: reading the rollups"
    ]


@pytest.mark.parametrize("view", ["jobs", "job-detail", "triage"])
def test_the_other_views_polls_are_unchanged(view: str) -> None:
    rules, plain = RulesEngine(), RulesEngine(rules=False)
    _same_overview(_poll(rules, for_view(view)), _poll(plain, for_view(view)))
    assert sorted(rules.queries) == sorted(plain.queries)
    assert not RECORDED & set(rules.queries)


def test_detection_shares_the_index_request_and_rechecks_rules_not_found() -> None:
    engine = RulesEngine(rules=False)
    src: PrometheusSource = _source(engine)
    src.console_snapshot(at=T, detail=LEAN)
    assert engine.index_reads == 1  # the rollups' and the rules' detection together
    engine.rules = True
    src.console_snapshot(at=T + 30, detail=LEAN)
    assert engine.index_reads == 1 and set(engine.queries) >= RAW
    first = len(engine.queries)
    src.console_snapshot(at=T + ROLLUPS_RECHECK, detail=LEAN)
    assert engine.index_reads == 2 and not RAW & set(engine.queries[first:])
    src.console_snapshot(at=T + 3 * ROLLUPS_RECHECK, detail=LEAN)
    src.console_snapshot(at=T, detail=FULL)
    assert engine.index_reads == 2  # found stays found


def test_the_rules_record_what_the_console_reads_at_the_consoles_hot_limit() -> None:
    rules = {
        r["record"]: r["expr"]
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
    }
    assert rules.keys() == RECORDED
    hot = re.fullmatch(rf"{s.NODE_TEMPERATURE_MAX} >= ([0-9.]+)", rules[cr.HOT_NODES].strip())
    assert hot is not None and float(hot.group(1)) == HOT_CELSIUS
