"""Collection, per-job energy at the source against the simulator's truth, and the loop."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from factoryctl.exporter.attribution import Attributor, JobMapDir, ProcResolver
from factoryctl.exporter.collection import CollectionLoop, Exporter
from factoryctl.exporter.metrics import SnapshotCollector
from factoryctl.exporter.simulated import SimBackend
from factoryctl.lab.procs import wait_until
from factoryctl.sim import SimConfig, SimFactory, Workload


def driven(tmp_path, gpus=4, grace=600.0, map_dir=None):
    sim = SimFactory(SimConfig(nodes=1, node_names=("n1",), gpus_per_node=gpus, jobs=False))
    backend = SimBackend(sim, "n1", follow_clock=False)
    attr = Attributor(map_dir, ProcResolver(tmp_path / "proc"))
    exporter = Exporter(backend, "n1", attr, grace_seconds=grace)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: exporter.snapshot))
    return sim, exporter, registry


def job_energy(reg, job):
    return reg.get_sample_value("factoryctl_job_energy_joules_total", {"node": "n1", "job_id": job})


def test_job_energy_matches_truth_across_starts_ends_and_a_counter_reset(tmp_path):
    sim, exporter, reg = driven(tmp_path)
    exporter.collect_once(sim.now)
    sim.assign("101", "ada", "n1", [0, 1], Workload.TRAINING)
    exporter.collect_once(sim.now)
    for _ in range(30):
        sim.advance(1.0)
        exporter.collect_once(sim.now)
    sim.assign("102", "ben", "n1", [2], Workload.INFERENCE)
    exporter.collect_once(sim.now)
    for step in range(60):
        sim.advance(1.0)
        exporter.collect_once(sim.now)
        if step == 20:
            sim.reset_energy_counter("n1", 1)  # driver reload right after a collection
    sim.release("101")
    exporter.collect_once(sim.now)
    for _ in range(10):
        sim.advance(1.0)
        exporter.collect_once(sim.now)
    for job in ("101", "102"):
        truth = sim.true_energy(job)
        assert truth > 1000
        assert job_energy(reg, job) == pytest.approx(truth, rel=1e-9)
    labels = {"node": "n1", "job_id": "101"}
    assert reg.get_sample_value("factoryctl_job_gpu_seconds_total", labels) == pytest.approx(180)
    active = reg.get_sample_value("factoryctl_job_active_gpu_seconds_total", labels)
    assert 0.7 * 180 < active < 180
    # The ended job is still exported (grace period) but no GPU is attributed to it.
    uuid = sim.uuids[0]
    assert (
        reg.get_sample_value(
            "factoryctl_gpu_job_info",
            {"node": "n1", "gpu": "0", "uuid": uuid, "job_id": "101", "user": "ada"},
        )
        is None
    )
    assert (
        reg.get_sample_value(
            "factoryctl_gpu_job_info",
            {"node": "n1", "gpu": "2", "uuid": sim.uuids[2], "job_id": "102", "user": "ben"},
        )
        == 1
    )


def test_finished_jobs_drop_after_the_grace_period(tmp_path):
    sim, exporter, reg = driven(tmp_path, grace=30.0)
    sim.assign("7", "ada", "n1", [0], Workload.IDLE)
    exporter.collect_once(sim.now)
    sim.advance(5.0)
    sim.release("7")
    exporter.collect_once(sim.now)
    sim.advance(29.0)
    exporter.collect_once(sim.now)
    assert job_energy(reg, "7") == pytest.approx(sim.true_energy("7"))
    sim.advance(1.0)
    exporter.collect_once(sim.now)
    assert job_energy(reg, "7") is None


def test_shared_gpu_is_split_equally(tmp_path):
    maps = tmp_path / "map"
    maps.mkdir()
    (maps / "0").write_text("1\n2\n")
    sim, exporter, reg = driven(tmp_path, gpus=1, map_dir=JobMapDir(maps))
    exporter.collect_once(sim.now)
    before = sim.energy[0]
    sim.advance(10.0)
    exporter.collect_once(sim.now)
    spent = sim.energy[0] - before
    assert spent > 0
    assert job_energy(reg, "1") == pytest.approx(spent / 2)
    assert job_energy(reg, "2") == pytest.approx(spent / 2)


def test_xids_and_a_lost_gpu_from_the_simulator(tmp_path):
    sim, exporter, reg = driven(tmp_path)
    sim.inject_xid("n1", 3, 13)
    sim.inject_xid("n1", 3, 13)
    sim.inject_xid("n1", 2, 79)
    exporter.collect_once(sim.now)
    g3 = {"node": "n1", "gpu": "3", "uuid": sim.uuids[3]}
    g2 = {"node": "n1", "gpu": "2", "uuid": sim.uuids[2]}
    assert reg.get_sample_value("factoryctl_gpu_xid_errors_total", {**g3, "xid": "13"}) == 2
    assert reg.get_sample_value("factoryctl_gpu_xid_errors_total", {**g2, "xid": "79"}) == 1
    assert reg.get_sample_value("factoryctl_gpu_up", g2) == 0
    assert reg.get_sample_value("factoryctl_gpu_up", g3) == 1
    sim.inject_xid("n1", 3, 13)
    exporter.collect_once(sim.now)
    assert reg.get_sample_value("factoryctl_gpu_xid_errors_total", {**g3, "xid": "13"}) == 3


class SlowBackend:
    name = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.reads = 0
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()

    def read(self, now):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
            self.reads += 1
        return ()

    def xids(self):
        return {}

    def error_counts(self):
        return {}

    def close(self):
        pass


def test_overrunning_collections_are_skipped_and_counted_never_stacked(tmp_path):
    backend = SlowBackend(0.25)
    exporter = Exporter(backend, "n1", Attributor(None, ProcResolver(tmp_path)))
    loop = CollectionLoop(exporter, interval=0.1)
    loop.start()
    try:
        wait_until(lambda: backend.reads >= 4, 10, "four slow collections")
    finally:
        loop.stop()
    assert backend.max_active == 1
    assert exporter.skipped >= 4  # each 0.25 s read overruns two 0.1 s ticks


def test_a_failed_collection_keeps_the_previous_readings(tmp_path, caplog):
    sim, exporter, reg = driven(tmp_path)
    exporter.collect_once(sim.now)
    g0 = {"node": "n1", "gpu": "0", "uuid": sim.uuids[0]}
    power = reg.get_sample_value("factoryctl_gpu_power_watts", g0)

    def boom(now):
        raise RuntimeError("driver wedged")

    exporter.backend.read = boom  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, "factoryctl.exporter"):
        for t in range(1, 4):
            exporter.collect_once(sim.now + t)
    assert len([r for r in caplog.records if "collection failed" in r.message]) == 1
    assert reg.get_sample_value("factoryctl_gpu_power_watts", g0) == power
    assert reg.get_sample_value("factoryctl_exporter_collection_failures_total") == 3
    assert reg.get_sample_value("factoryctl_exporter_collections_total") == 4


class CountingSim(SimBackend):
    energy_reads = 0

    def read_energy(self, indices):
        self.energy_reads += len(indices)
        return super().read_energy(indices)


def test_energy_read_only_on_owner_changes_stays_exact(tmp_path):
    sim = SimFactory(SimConfig(nodes=1, node_names=("n1",), gpus_per_node=4, jobs=False))
    backend = CountingSim(sim, "n1", follow_clock=False)
    exporter = Exporter(
        backend, "n1", Attributor(None, ProcResolver(tmp_path)), energy_interval=1e9
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: exporter.snapshot))
    exporter.collect_once(sim.now)
    sim.assign("1", "ada", "n1", [0, 1], Workload.TRAINING)
    exporter.collect_once(sim.now)
    for _ in range(50):
        sim.advance(1.0)
        exporter.collect_once(sim.now)
    sim.assign("2", "ben", "n1", [2], Workload.INFERENCE)
    exporter.collect_once(sim.now)
    for _ in range(30):
        sim.advance(1.0)
        exporter.collect_once(sim.now)
    sim.release("1")
    sim.release("2")
    exporter.collect_once(sim.now)
    for job in ("1", "2"):
        assert job_energy(registry, job) == pytest.approx(sim.true_energy(job), rel=1e-9)
    labels = {"node": "n1", "job_id": "1"}
    assert registry.get_sample_value("factoryctl_job_gpu_seconds_total", labels) == pytest.approx(
        160
    )
    # 4 first reads + 2 at job 1's start + 1 at job 2's start + 3 at the ends; not 4 x 84.
    assert backend.energy_reads == 10


def test_a_gpu_without_energy_counter_still_accrues_gpu_seconds(tmp_path):
    from exporter_fakes import FakeGpu, FakeNvml

    from factoryctl.exporter.nvml import Nvml, NvmlBackend

    maps = tmp_path / "map"
    maps.mkdir()
    (maps / "0").write_text("77\n")
    gpu = FakeGpu("GPU-a", unsupported={"nvmlDeviceGetTotalEnergyConsumption"})
    backend = NvmlBackend(Nvml(FakeNvml([gpu])), watch_xids=False)
    exporter = Exporter(
        backend, "n1", Attributor(JobMapDir(maps), ProcResolver(tmp_path)), energy_interval=0
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: exporter.snapshot))
    for t in range(11):
        exporter.collect_once(100.0 + t)
    labels = {"node": "n1", "job_id": "77"}
    assert registry.get_sample_value("factoryctl_job_gpu_seconds_total", labels) == 10
    assert job_energy(registry, "77") == 0
    gpu.unsupported.clear()  # e.g. a driver upgrade exposes the counter
    exporter.collect_once(111.0)
    gpu.energy_mj += 5000
    exporter.collect_once(112.0)
    assert job_energy(registry, "77") == pytest.approx(5.0)  # no jump to the lifetime total


def test_idle_spell_is_exported_per_gpu_and_restarts_for_a_new_job(tmp_path):
    sim, exporter, reg = driven(tmp_path, gpus=2)

    def idle(gpu):
        labels = {"node": "n1", "gpu": str(gpu), "uuid": sim.uuids[gpu]}
        return reg.get_sample_value("factoryctl_gpu_idle_seconds", labels)

    sim.assign("201", "ada", "n1", [0], Workload.TRAINING)
    sim.assign("202", "ben", "n1", [1], Workload.IDLE)
    start = sim.now
    for _ in range(12):
        sim.advance(5.0)
        exporter.collect_once(sim.now)
    assert idle(0) == 0.0  # training: active
    assert idle(1) == pytest.approx(sim.now - start - 5.0)  # idle since its first reading
    sim.release("202")
    sim.assign("203", "cy", "n1", [1], Workload.IDLE)
    sim.advance(5.0)
    exporter.collect_once(sim.now)
    assert idle(1) == 0.0  # a new holder starts a new spell: 203 is not charged with 202's
    sim.advance(5.0)
    exporter.collect_once(sim.now)
    assert idle(1) == pytest.approx(5.0)


def test_gpus_per_job_on_the_node_follow_the_attribution(tmp_path):
    sim, exporter, reg = driven(tmp_path, gpus=4)

    def held(job, user):
        labels = {"node": "n1", "job_id": job, "user": user}
        return reg.get_sample_value("factoryctl_job_gpus", labels)

    sim.assign("301", "ada", "n1", [0, 1, 2], Workload.TRAINING)
    sim.assign("302", "ben", "n1", [3], Workload.IDLE)
    exporter.collect_once(sim.now)
    assert (held("301", "ada"), held("302", "ben")) == (3.0, 1.0)
    sim.release("301")
    sim.advance(1.0)
    exporter.collect_once(sim.now)
    assert held("301", "ada") is None  # gone with its GPUs, not a 0 that lingers
    assert held("302", "ben") == 1.0
