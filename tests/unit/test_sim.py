from __future__ import annotations

from factoryctl.model import JobState, NodeState
from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.sim.snapshot import build_snapshot


def _sim(**kw: object) -> SimFactory:
    return SimFactory(SimConfig(nodes=8, seed=3, **kw))  # type: ignore[arg-type]


def test_same_seed_same_factory() -> None:
    a, b = _sim(), _sim()
    a.advance(1800, 10)
    b.advance(1800, 10)
    assert list(a.energy) == list(b.energy)
    assert sorted(a.jobs) == sorted(b.jobs)
    c = SimFactory(SimConfig(nodes=8, seed=4))
    c.advance(1800, 10)
    assert list(c.energy) != list(a.energy)


def test_energy_counter_is_the_integral_of_power() -> None:
    sim = _sim()
    integral = [0.0] * sim.gpu_count
    last = [sim.now]
    power = [list(sim.power)]

    def integrate(s: SimFactory) -> None:
        dt = s.now - last[0]
        for g in range(s.gpu_count):
            integral[g] += power[0][g] * dt if s.up[g] else 0.0
        last[0], power[0] = s.now, list(s.power)

    sim.listeners.append(integrate)
    sim.advance(3600, 7)
    for g in range(sim.gpu_count):
        assert abs(sim.energy[g] - integral[g]) <= 1e-6 * max(1.0, integral[g])


def test_job_truth_sums_to_allocated_gpu_energy() -> None:
    sim = _sim()
    before = sum(sim.energy)
    sim.advance(2 * 3600, 30)
    total_gpu = sum(sim.energy) - before
    total_jobs = sum(sim.truth.values())
    assert 0 < total_jobs < total_gpu  # unallocated GPUs draw idle power nobody is charged for
    finished = [j for j in sim.finished if j.state is JobState.COMPLETED]
    assert finished, "two hours should see jobs end"
    assert all(sim.true_energy(j.job_id) > 0 for j in finished)


def test_workload_shapes_have_their_power_envelopes() -> None:
    sim = SimFactory(SimConfig(nodes=1, gpus_per_node=3, jobs=False))
    sim.assign("t", "u", "gpu001", [0], Workload.TRAINING)
    sim.assign("i", "u", "gpu001", [1], Workload.IDLE)
    sim.advance(120, 1)
    assert sim.power[0] > 500 and sim.utilization[0] > 0.8
    assert 55 <= sim.power[1] <= 95 and sim.utilization[1] == 0.0
    assert sim.power[2] < 65  # unallocated


def test_xid_79_loses_the_gpu_fails_the_job_and_drains_the_node() -> None:
    sim = SimFactory(SimConfig(nodes=2, gpus_per_node=2, jobs=False))
    sim.assign("42", "ada", "gpu001", [0, 1], Workload.TRAINING)
    sim.advance(10, 1)
    sim.inject_xid("gpu001", 1, 79)
    sim.advance(5, 1)
    snap = build_snapshot(sim)
    gpu = snap.gpu("gpu001", 1)
    assert gpu is not None and not gpu.up and gpu.power_watts is None and gpu.last_xid == 79
    assert snap.job("42") is not None and snap.job("42").state is JobState.FAILED  # type: ignore[union-attr]
    node = snap.node("gpu001")
    assert node is not None and node.state is NodeState.DRAINED and "XID 79" in node.reason


def test_ecc_xid_counts_and_throttle_expires() -> None:
    sim = SimFactory(SimConfig(nodes=1, gpus_per_node=1, jobs=False))
    sim.assign("1", "u", "gpu001", [0], Workload.TRAINING)
    sim.inject_xid("gpu001", 0, 48)
    sim.inject_throttle("gpu001", 0, "hw_thermal_slowdown", 30)
    sim.advance(2, 1)
    assert sim.ecc_uncorrected[0] == 1
    snap = build_snapshot(sim)
    assert snap.gpus[0].throttle_reasons == ("hw_thermal_slowdown",)
    assert (snap.gpus[0].temperature_celsius or 0) > 88
    sim.advance(60, 1)
    assert build_snapshot(sim).gpus[0].throttle_reasons == ()


def test_energy_counter_reset_does_not_touch_truth() -> None:
    sim = SimFactory(SimConfig(nodes=1, gpus_per_node=1, jobs=False))
    sim.assign("1", "u", "gpu001", [0], Workload.TRAINING)
    sim.advance(60, 1)
    truth = sim.true_energy("1")
    sim.reset_energy_counter("gpu001", 0)
    assert sim.energy[0] == 0.0 and sim.true_energy("1") == truth


def test_node_down_and_drain_states() -> None:
    sim = _sim()
    busy = next(n for i, n in enumerate(sim.node_names) if sim.free[i] < sim.gpn)
    sim.set_admin(busy, drain=True, reason="test")
    assert build_snapshot(sim).node(busy).state is NodeState.DRAINING  # type: ignore[union-attr]
    sim.fail_node(busy)
    snap = build_snapshot(sim)
    assert snap.node(busy).state is NodeState.DOWN  # type: ignore[union-attr]
    assert all(not g.up and g.power_watts is None for g in snap.gpus_of_node(busy))
    assert not snap.jobs_on_node(busy)


def test_occupancy_settles_near_target() -> None:
    sim = SimFactory(SimConfig(nodes=32, seed=1))
    sim.advance(3 * 3600, 60)
    allocated = sum(1 for o in sim.owner if o is not None) / sim.gpu_count
    assert 0.5 < allocated <= 1.0


def test_gigafactory_scale_is_flat_arrays() -> None:
    # 12,500 x 8: per-GPU state is arrays, not an object per GPU or per sample.
    sim = SimFactory(SimConfig(nodes=12_500, gpus_per_node=8, seed=1))
    assert sim.gpu_count == 100_000 and sim.node_names[-1] == "gpu12500"
    assert type(sim.power).__name__ == "array" and len(sim.power) == 100_000
    sim.advance(60, 60)
    allocated = sum(1 for o in sim.owner if o is not None)
    assert 0.5 * sim.gpu_count < allocated <= sim.gpu_count
    assert sum(sim.truth.values()) > 0
