"""The dcgm rollup rules on real engines: what they record equals the simulator's truth.

A small simulated factory is served in dcgm-exporter's format with HPC job mapping (one
copy of a GPU's series per job holding it); a real Prometheus evaluates
dashboards/prometheus/rollups.rules.yml, and so does vmalert against a real
VictoriaMetrics where both are installed. The simulator's readings are held still while
the engines scrape (its clock moves, its values do not), so each recorded rollup must
settle on exactly the value the simulator's state gives, worked out here by hand from
that state, in dcgm-exporter's units and rounding.

Cost: ~27 s on the 2-core machine (Prometheus, VictoriaMetrics and vmalert started once
for the module, 1 s scrapes and evaluations; Prometheus settles in ~2 s, vmalert's
chained recordings in ~10 s even with VictoriaMetrics flushed on every poll).
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from factoryctl.lab.procs import wait_until
from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.sim.workload import THROTTLE_BITS
from factoryctl.telemetry import schema as m
from tests.integration.rule_engines import rule_engines
from tests.integration.simexpo import SimTargets

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[2] / "dashboards" / "prometheus" / "rollups.rules.yml"
HW_THERMAL = THROTTLE_BITS["hw_thermal_slowdown"]  # the simulator's bit for it


def _query(url: str, promql: str) -> list[dict]:
    qs = urllib.parse.urlencode({"query": promql, "nocache": "1"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{qs}", timeout=5) as resp:
        return json.loads(resp.read())["data"]["result"]


def _factory() -> tuple[SimFactory, SimTargets]:
    sim = SimFactory(SimConfig(nodes=2, gpus_per_node=4, jobs=False, start_time=time.time() - 60))
    n0, n1 = sim.node_names
    sim.assign("701", "ada", n0, [0, 1], Workload.TRAINING)
    sim.assign("702", "ben", n1, [0, 1, 2], Workload.IDLE)
    sim.advance(30.0)
    sim.inject_throttle(n0, 1, "hw_thermal_slowdown", 3600)  # a throttle
    sim.inject_throttle(n1, 3, "sw_power_cap", 3600)  # not one
    targets = SimTargets(sim, "dcgm", hpc_jobs=True)
    # Hold the readings still: each scrape stamps the wall clock, the values stay.
    targets.sync = lambda: setattr(sim, "now", max(sim.now, time.time()))  # type: ignore[method-assign]
    return sim, targets


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimFactory, dict]]:
    tmp = tmp_path_factory.mktemp("rollup-rules")
    sim, targets = _factory()
    targets.start()
    try:
        with rule_engines(tmp, list(targets.addresses.values()), [RULES]) as urls:
            for name, url in urls.items():

                def scraped(u: str = url) -> bool:
                    try:
                        res = _query(u, "count(DCGM_FI_DEV_XID_ERRORS)")
                    except OSError:
                        return False
                    return bool(res) and float(res[0]["value"][1]) >= sim.gpu_count

                wait_until(scraped, 60, f"{name} to scrape the dcgm targets", interval=0.2)
            # An XID after the engines have seen the gauge at 0: "recent" needs the change.
            with targets.lock:
                sim.inject_xid(sim.node_names[1], 2, 13)
            yield sim, urls
    finally:
        targets.stop()


def _truth(sim: SimFactory) -> dict[tuple[str, ...], float]:
    """Every recorded rollup series the rules must produce, from the simulator's state in
    dcgm-exporter's units and rounding: key (metric, node[, job_id])."""
    out: dict[tuple[str, ...], float] = {}
    jobs: dict[tuple[str, str], list[int]] = defaultdict(list)
    util = [round(u * 100) / 100 for u in sim.utilization]
    power = [round(p, 3) for p in sim.power]
    mib = [round(b / 2**20) for b in sim.memory_used]
    for i, node in enumerate(sim.node_names):
        gpus = range(i * sim.gpn, (i + 1) * sim.gpn)
        for g in gpus:
            if sim.owner[g] is not None:
                jobs[(node, sim.owner[g].job_id)].append(g)
        out[(m.NODE_GPUS, node)] = out[(m.NODE_GPUS_UP, node)] = len(gpus)
        out[(m.NODE_GPUS_ALLOCATED, node)] = sum(sim.owner[g] is not None for g in gpus)
        out[(m.NODE_GPUS_ACTIVE, node)] = sum(util[g] >= 0.05 for g in gpus)
        out[(m.NODE_GPUS_THROTTLED, node)] = sum(bool(sim.throttle[g] & HW_THERMAL) for g in gpus)
        out[(m.NODE_GPUS_XID_RECENT, node)] = sum(sim.last_xid[g] != 0 for g in gpus)
        out[(m.NODE_POWER, node)] = sum(power[g] for g in gpus)
        out[(m.NODE_UTILIZATION, node)] = sum(util[g] for g in gpus) / len(gpus)
        out[(m.NODE_TEMPERATURE_MAX, node)] = max(round(sim.temperature[g]) for g in gpus)
        out[(m.NODE_ENERGY, node)] = sum(round(sim.energy[g] * 1000) for g in gpus) / 1000
    for (node, job), held in jobs.items():
        out[(m.JOB_GPUS, node, job)] = len(held)
        out[(m.JOB_GPUS_ACTIVE, node, job)] = sum(util[g] >= 0.05 for g in held)
        out[(m.JOB_UTILIZATION_SUM, node, job)] = sum(util[g] for g in held)
        out[(m.JOB_POWER, node, job)] = sum(power[g] for g in held)
        out[(m.JOB_UTILIZATION_MIN, node, job)] = min(util[g] for g in held)
        out[(m.JOB_MEMORY_USED, node, job)] = sum(mib[g] for g in held) * 2**20
    return out


def _recorded(url: str, names: set[str]) -> dict[tuple[str, ...], float]:
    rows = _query(url, "{__name__=~" + json.dumps("|".join(sorted(names))) + "}")
    out = {}
    for row in rows:
        lab = row["metric"]
        key = (lab["__name__"], lab["node"], *([lab["job_id"]] if "job_id" in lab else []))
        out[key] = float(row["value"][1])
    return out


def test_recorded_rollups_equal_the_simulators_truth(engines) -> None:
    sim, urls = engines
    truth = _truth(sim)
    # The scenario is what it should be: a throttle, an idle job, a job-less GPU, an XID.
    n0, n1 = sim.node_names
    assert truth[(m.NODE_GPUS_THROTTLED, n0)] == 1
    assert truth[(m.NODE_GPUS_THROTTLED, n1)] == 0
    assert truth[(m.NODE_GPUS_XID_RECENT, n1)] == 1
    assert truth[(m.NODE_GPUS_ALLOCATED, n0)] == 2
    assert truth[(m.JOB_GPUS_ACTIVE, n1, "702")] == 0
    assert truth[(m.JOB_GPUS_ACTIVE, n0, "701")] == 2
    names = {key[0] for key in truth}
    for name, url in urls.items():
        seen: dict[tuple[str, ...], float] = {}

        def settled(
            u: str = url, vm: bool = "victoria" in name, seen: dict[tuple[str, ...], float] = seen
        ) -> bool:
            if vm:
                # New series (vmalert's recordings) turn searchable at VictoriaMetrics'
                # next flush, seconds away: the rules chain twice (helpers, then rollups).
                urllib.request.urlopen(f"{u}/internal/force_flush", timeout=5).read()
            seen.clear()
            seen.update(_recorded(u, names))
            return seen.keys() == truth.keys() and all(
                seen[k] == pytest.approx(v, rel=1e-9, abs=1e-9) for k, v in truth.items()
            )

        try:
            wait_until(settled, 30, f"{name}: the recorded rollups", interval=0.5)
        except Exception:
            wrong = {k: (seen.get(k), v) for k, v in truth.items() if seen.get(k) != v}
            extra = set(seen) - set(truth)
            pytest.fail(f"{name}: recorded != truth: {wrong}; unexpected series {extra}")
        # What dcgm-exporter cannot give is not made up.
        assert _query(url, m.JOB_IDLE_SECONDS) == []
        assert _query(url, m.NODE_XID_ERRORS) == []
