"""The console's rules on real engines: the Overview's lean poll, and the Nodes view's,
reading them shows what the same poll reading the rollups shows.

A small simulated factory is served in factoryctl-exporter's native format (its rollups
included) with an idle job, a throttled GPU and a hot one; a real Prometheus evaluates
dashboards/prometheus/console.rules.yml, and so does vmalert against a real
VictoriaMetrics where both are installed. The simulator's readings are held still while
the engines scrape (its clock moves, its values do not), so the two polls of one instant
must agree exactly: the idle jobs and their idle GPUs and spells, the problem GPUs (with
what makes each one), every node's summary.

Cost: ~16 s on the 2-core machine (Prometheus, VictoriaMetrics and vmalert started once
for the module, 1 s scrapes and evaluations; VictoriaMetrics flushed on every check so
vmalert's new series turn searchable at once).
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from factoryctl.lab.procs import wait_until
from factoryctl.model import FactorySnapshot
from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.sim.workload import THROTTLE_BITS
from factoryctl.telemetry import console_rules as cr
from factoryctl.telemetry import schema as m
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.poll_detail import LEAN, Detail, for_view
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions
from tests.integration.rule_engines import rule_engines
from tests.integration.simexpo import SimTargets

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[2] / "dashboards" / "prometheus" / "console.rules.yml"


class Targets(SimTargets):
    """Native targets that also write each GPU's clock-event reasons, as the exporter
    does: round 2 reads the throttled GPUs from them."""

    def _native(self, node: str) -> str:
        out = [super()._native(node)]
        for k, g in self._gpus(node):
            if self.sim.up[g]:
                base = f'node="{node}",gpu="{k}",uuid="{self.sim.uuids[g]}"'
                for reason, bit in THROTTLE_BITS.items():
                    on = int(bool(self.sim.throttle[g] & bit))
                    out.append(f'{m.GPU_CLOCK_EVENT}{{{base},reason="{reason}"}} {on}\n')
        return "".join(out)


def _query(url: str, promql: str) -> list[dict]:
    qs = urllib.parse.urlencode({"query": promql, "nocache": "1"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{qs}", timeout=5) as resp:
        return json.loads(resp.read())["data"]["result"]


def _factory() -> tuple[SimFactory, Targets]:
    sim = SimFactory(SimConfig(nodes=3, gpus_per_node=4, jobs=False, start_time=time.time() - 60))
    n0, n1, n2 = sim.node_names
    sim.assign("801", "ada", n0, [0, 1], Workload.TRAINING)
    sim.assign("802", "ben", n1, [0, 1, 2], Workload.IDLE)
    sim.assign("803", "cy", n2, [0, 1], Workload.TRAINING)
    sim.advance(30.0)
    sim.inject_throttle(n0, 1, "hw_thermal_slowdown", 3600)  # a throttle
    sim.inject_throttle(n1, 3, "sw_power_cap", 3600)  # not one
    sim.temperature[sim.gpu_slot(n2, 3)] = 91.0  # hot (85 C and over)
    targets = Targets(sim, "native")
    # Hold the readings still: each scrape stamps the wall clock, the values stay.
    targets.sync = lambda: setattr(sim, "now", max(sim.now, time.time()))  # type: ignore[method-assign]
    return sim, targets


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimFactory, dict]]:
    tmp = tmp_path_factory.mktemp("console-rules")
    sim, targets = _factory()
    targets.start()
    try:
        with rule_engines(tmp, list(targets.addresses.values()), [RULES]) as urls:
            yield sim, urls
    finally:
        targets.stop()


def _listed(url: str, vm: bool) -> dict[str, set[tuple[str, ...]]]:
    """What the rules recorded, by name: (node[, job_id]) per series."""
    if vm:  # vmalert's new series turn searchable at VictoriaMetrics' next flush
        urllib.request.urlopen(f"{url}/internal/force_flush", timeout=5).read()
    out = {}
    for name in (cr.IDLE_PAIRS, cr.THROTTLED_NODES, cr.HOT_NODES, cr.HEARTBEAT):
        rows = _query(url, name)
        out[name] = {
            tuple(r["metric"][k] for k in ("node", "job_id") if k in r["metric"]) for r in rows
        }
    return out


class WithoutRules(PrometheusSource):
    """The same source that never finds the rules: the lean poll as before them."""

    def console_rules(self, at: float) -> bool:
        return False


class Recorder(httpx.BaseTransport):
    """Passes each request on and keeps the queries sent."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.queries: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.queries += parse_qs(request.content.decode()).get("query", [])
        return self.inner.handle_request(request)


def _polls(
    url: str, t: float, detail: Detail = LEAN
) -> tuple[FactorySnapshot, FactorySnapshot, list[str]]:
    """The poll at ``t`` with the rules (and the queries it sent) and without."""
    opts = SourceOptions(schema="native", scrape_interval=1.0, search_delay=0.0)
    sent = Recorder()
    ruled = PrometheusSource(PromClient(PromConfig(url, timeout=10), transport=sent), None, opts)
    plain = WithoutRules(PromClient(PromConfig(url, timeout=10)), None, opts)
    got = ruled.console_snapshot(at=t, detail=detail)
    assert ruled.console_rules(t), url
    return got, plain.console_snapshot(at=t, detail=detail), sent.queries


def test_the_lean_poll_with_the_rules_equals_the_poll_without(engines) -> None:
    sim, urls = engines
    n0, n1, n2 = sim.node_names
    want = {
        cr.IDLE_PAIRS: {(n1, "802")},
        cr.THROTTLED_NODES: {(n0,)},
        cr.HOT_NODES: {(n2,)},
        cr.HEARTBEAT: {()},
    }
    for name, url in urls.items():
        seen: dict[str, set[tuple[str, ...]]] = {}

        def settled(u: str = url, vm: bool = "victoria" in name, seen: dict = seen) -> bool:
            seen.clear()
            seen.update(_listed(u, vm))
            return seen == want

        try:
            wait_until(settled, 30, f"{name}: the console rules' lists", interval=0.5)
        except Exception:
            pytest.fail(f"{name}: recorded {seen}, want {want}")
        # Polled at t, a second back: the lists and the rollups were all there by then.
        time.sleep(2.5)
        t = time.time() - 1
        ruled, plain, sent = _polls(url, t)
        # The recorded lists were read, not the three rollup reads they replace.
        assert {cr.IDLE_PAIRS, cr.THROTTLED_NODES, cr.HOT_NODES, cr.HEARTBEAT} <= set(sent)
        replaced = (m.JOB_GPUS_ACTIVE, m.NODE_GPUS_THROTTLED + "[", m.NODE_TEMPERATURE_MAX + "[")
        assert not [q for q in sent if any(r in q for r in replaced)], sent
        assert not [w for w in ruled.warnings if w.startswith("console rules")], ruled.warnings
        # The scenario shows: job 802 idle on 3 GPUs, one throttled GPU, one hot GPU.
        assert {j: s.idle_gpus for j, s in ruled.job_summaries.items()} == {
            "801": 0,
            "802": 3,
            "803": 0,
        }, name
        assert (ruled.job_summaries["802"].idle_seconds or 0) > 0, name
        assert [(g.key, g.throttle_reasons, g.temperature_celsius) for g in ruled.gpus] == [
            ((n0, 1), ("hw_thermal_slowdown",), None),
            ((n2, 3), (), 91.0),
        ], name
        assert ruled.job_summaries == plain.job_summaries, name
        assert ruled.gpus == plain.gpus, name
        assert ruled.node_summaries == plain.node_summaries, name
        assert ruled.jobs == plain.jobs and ruled.nodes == plain.nodes, name
        # The Nodes view: the idle pairs and throttled nodes recorded, every node's
        # hottest GPU read (its column), the same screen as without the rules.
        ruled, plain, sent = _polls(url, t, for_view("nodes"))
        assert {cr.IDLE_PAIRS, cr.THROTTLED_NODES, cr.HEARTBEAT} <= set(sent), name
        assert cr.HOT_NODES not in sent, name
        replaced = (m.JOB_GPUS_ACTIVE, m.NODE_GPUS_THROTTLED + "[")
        assert not [q for q in sent if any(r in q for r in replaced)], sent
        assert [g.key for g in ruled.gpus] == [(n0, 1), (n2, 3)], name
        assert ruled.node_summaries[n2].temperature_max_celsius == 91.0, name
        assert ruled.job_summaries == plain.job_summaries, name
        assert ruled.gpus == plain.gpus, name
        assert ruled.node_summaries == plain.node_summaries, name
