"""The exporter's rollups against its own per-GPU series, on one scrape.

Everything is read back from the exposition text, so a rollup that disagreed with the
per-GPU series the same scrape carries (a different definition, a stale snapshot, a
lost GPU counted) fails here. Cost: well under a second (one simulated node, no I/O).
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from factoryctl.exporter.attribution import Attributor, JobMapDir, ProcResolver
from factoryctl.exporter.collection import Exporter
from factoryctl.exporter.metrics import SnapshotCollector
from factoryctl.exporter.simulated import SimBackend
from factoryctl.occupancy import ACTIVE_THRESHOLD
from factoryctl.rollups import THROTTLE_REASONS, XID_RECENT_SECONDS
from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.telemetry import schema as s


def scrape(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in fam.samples:
            out[sample.name].append((sample.labels, sample.value))
    return out


def per_gpu(samples, name, node="n1"):
    return {lab["gpu"]: v for lab, v in samples.get(name, []) if lab["node"] == node}


def one(samples, name, **labels):
    found = [v for lab, v in samples.get(name, []) if labels.items() <= lab.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def test_rollups_equal_the_aggregation_of_the_same_scrape(tmp_path):
    maps = tmp_path / "map"
    maps.mkdir()
    sim = SimFactory(SimConfig(nodes=1, node_names=("n1",), gpus_per_node=8, jobs=False))
    backend = SimBackend(sim, "n1", follow_clock=False)
    exporter = Exporter(backend, "n1", Attributor(JobMapDir(maps), ProcResolver(tmp_path / "p")))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: exporter.snapshot))

    sim.assign("101", "ada", "n1", [0, 1, 2], Workload.TRAINING)
    sim.assign("102", "ben", "n1", [3, 4], Workload.IDLE)  # allocated, never active
    (maps / "5").write_text("103\n104\n")  # a GPU two jobs share (map dir: no user)
    exporter.collect_once(sim.now)
    for _ in range(40):
        sim.advance(1.0)
        exporter.collect_once(sim.now)
    sim.inject_throttle("n1", 1, "hw_thermal_slowdown", 600)
    sim.inject_throttle("n1", 6, "sw_power_cap", 600)  # not a throttle by our definition
    sim.inject_xid("n1", 6, 13)
    sim.inject_xid("n1", 7, 79)  # lost: counted, not averaged
    sim.advance(1.0)
    exporter.collect_once(sim.now)

    got = scrape(registry)
    up = per_gpu(got, s.GPU_UP)
    live = {g for g, v in up.items() if v == 1}
    assert len(up) == 8 and len(live) == 7
    util = per_gpu(got, s.GPU_UTILIZATION)
    power = per_gpu(got, s.GPU_POWER)
    temp = per_gpu(got, s.GPU_TEMPERATURE)
    energy = per_gpu(got, s.GPU_ENERGY)
    idle = per_gpu(got, s.GPU_IDLE_SECONDS)
    memory = per_gpu(got, s.GPU_MEMORY_USED)
    holders: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for lab, _ in got[s.GPU_JOB_INFO]:
        holders[lab["gpu"]].add((lab["job_id"], lab["user"]))
    throttled = {
        lab["gpu"]
        for lab, v in got[s.GPU_CLOCK_EVENT]
        if v == 1 and lab["reason"] in THROTTLE_REASONS and lab["gpu"] in live
    }
    last_xid = per_gpu(got, s.GPU_LAST_XID_TIME)
    xid_total = sum(v for _, v in got[s.GPU_XID_ERRORS])

    assert one(got, s.NODE_GPUS, node="n1") == 8
    assert one(got, s.NODE_GPUS_UP, node="n1") == 7
    assert one(got, s.NODE_GPUS_ALLOCATED, node="n1") == len(holders) == 6
    active = {g for g in live if util[g] >= ACTIVE_THRESHOLD}
    assert one(got, s.NODE_GPUS_ACTIVE, node="n1") == len(active) > 0
    assert one(got, s.NODE_GPUS_THROTTLED, node="n1") == len(throttled) == 1
    now = exporter.snapshot.time
    recent = [g for g, t in last_xid.items() if now - t <= XID_RECENT_SECONDS]
    assert one(got, s.NODE_GPUS_XID_RECENT, node="n1") == len(recent) == 2
    assert one(got, s.NODE_POWER, node="n1") == pytest.approx(sum(power.values()))
    assert one(got, s.NODE_UTILIZATION, node="n1") == pytest.approx(sum(util.values()) / len(util))
    assert one(got, s.NODE_TEMPERATURE_MAX, node="n1") == max(temp.values())
    assert one(got, s.NODE_XID_ERRORS, node="n1") == xid_total == 2
    assert one(got, s.NODE_ENERGY, node="n1") == pytest.approx(sum(energy.values()))

    jobs: dict[tuple[str, str], set[str]] = defaultdict(set)
    for g, keys in holders.items():
        for key in keys:
            jobs[key].add(g)
    assert set(jobs) == {("101", "ada"), ("102", "ben"), ("103", ""), ("104", "")}
    for (job_id, user), mine in jobs.items():
        labels = {"node": "n1", "job_id": job_id, "user": user}
        ups = mine & live
        assert one(got, s.JOB_GPUS, **labels) == len(mine)
        assert one(got, s.JOB_GPUS_ACTIVE, **labels) == len(ups & active)
        assert one(got, s.JOB_UTILIZATION_SUM, **labels) == pytest.approx(sum(util[g] for g in ups))
        assert one(got, s.JOB_POWER, **labels) == pytest.approx(sum(power[g] for g in ups))
        assert one(got, s.JOB_IDLE_SECONDS, **labels) == max(idle[g] for g in ups)
        assert one(got, s.JOB_UTILIZATION_MIN, **labels) == min(util[g] for g in ups)
        assert one(got, s.JOB_MEMORY_USED, **labels) == pytest.approx(sum(memory[g] for g in ups))
    # The idle job's GPUs have idled since it began; the training job's are busy.
    assert one(got, s.JOB_IDLE_SECONDS, job_id="102") >= 40
    assert one(got, s.JOB_GPUS_ACTIVE, job_id="102") == 0


def test_before_the_first_collection_there_are_no_rollups():
    sim = SimFactory(SimConfig(nodes=1, node_names=("n1",), gpus_per_node=2, jobs=False))
    exporter = Exporter(SimBackend(sim, "n1", follow_clock=False), "n1")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: exporter.snapshot))
    got = scrape(registry)
    assert not [name for name in got if name.startswith("factoryctl_node_")]


def test_a_node_whose_gpus_are_all_lost_exports_counts_but_no_means(tmp_path):
    sim = SimFactory(SimConfig(nodes=1, node_names=("n1",), gpus_per_node=2, jobs=False))
    exporter = Exporter(
        SimBackend(sim, "n1", follow_clock=False), "n1", Attributor(None, ProcResolver(tmp_path))
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: exporter.snapshot))
    exporter.collect_once(sim.now)
    sim.inject_xid("n1", 0, 79)
    sim.inject_xid("n1", 1, 79)
    exporter.collect_once(sim.now)
    got = scrape(registry)
    assert one(got, s.NODE_GPUS, node="n1") == 2
    assert one(got, s.NODE_GPUS_UP, node="n1") == 0
    assert one(got, s.NODE_GPUS_XID_RECENT, node="n1") == 2
    for absent in (s.NODE_POWER, s.NODE_UTILIZATION, s.NODE_TEMPERATURE_MAX):
        assert one(got, absent, node="n1") is None
    assert one(got, s.NODE_ENERGY, node="n1") is not None  # the counters stay
