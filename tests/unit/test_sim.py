from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest

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


def _integrator(sim: SimFactory) -> tuple[list[float], dict[str, float], list[int]]:
    """Integrates each GPU's reported power over its intervals, as an observer sees them:
    a step (the listeners) or, for the GPUs of a job that ended inside one, up to the end
    and from it (the job-end listeners). Returns per-GPU integrals, per-job integrals (to
    the owner at each interval's start) and how many jobs ended inside a step."""
    n = sim.gpu_count
    integral, per_job, ends = [0.0] * n, {}, [0]
    since, power = [sim.now] * n, list(sim.power)
    owner = [o.job_id if o else None for o in sim.owner]

    def upto(s: SimFactory, t: float, gpus: Iterable[int]) -> None:
        for g in gpus:
            e = power[g] * (t - since[g]) if s.up[g] else 0.0
            integral[g] += e
            if owner[g] is not None:
                per_job[owner[g]] = per_job.get(owner[g], 0.0) + e
            since[g], power[g] = t, s.power[g]
            owner[g] = o.job_id if (o := s.owner[g]) else None

    def ended(s: SimFactory, t: float, gpus: Sequence[int]) -> None:
        ends[0] += 1
        # Only the ended job's GPUs move to its end: every other reading is unchanged.
        assert s.now <= t and all(power[g] == s.power[g] for g in range(n) if g not in gpus)
        upto(s, t, gpus)

    sim.listeners.append(lambda s: upto(s, s.now, range(n)))
    sim.release_listeners.append(ended)
    return integral, per_job, ends


def test_energy_counter_is_the_integral_of_power() -> None:
    sim = _sim()
    integral, _, ends = _integrator(sim)
    sim.advance(3600, 7)
    assert ends[0] > 0, "the hour should see jobs end inside steps"
    for g in range(sim.gpu_count):
        assert abs(sim.energy[g] - integral[g]) <= 1e-6 * max(1.0, integral[g])


@pytest.mark.parametrize("step", [1.0, 7.0, 60.0, 1800.0])
def test_true_energy_is_exact_across_job_ends_inside_steps(step: float) -> None:
    """Truth is each job's GPUs' power integrated over exactly the time it held them,
    however coarse the steps: a job that ends inside a step is charged up to its end."""
    sim = _sim()
    _, per_job, ends = _integrator(sim)
    sim.advance(3 * 3600, step)
    ended = [j for j in sim.finished if j.end_time is not None]
    assert len(ended) > 5
    # Durations are whole seconds: with 1 s steps every job ends on a boundary.
    assert ends[0] == 0 if step == 1.0 else ends[0] > 5
    for job in sim.all_jobs():
        truth = sim.true_energy(job.job_id)
        assert truth == pytest.approx(per_job.get(job.job_id, 0.0), rel=1e-9, abs=1e-6)
    for job in ended:
        # It ended at its own time, not at the step's end.
        assert job.end_time == pytest.approx(job.start_time + job.duration)  # type: ignore[operator]


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


def test_arrivals_are_poisson_at_any_step() -> None:
    """A coarse step at 100,000 GPUs expects thousands of arrivals: exp(-lam) would
    underflow in one inversion (it capped them near 745), so the count comes in parts."""
    import random

    from factoryctl.sim.jobs import JobGenerator

    config = SimConfig(nodes=12_500, gpus_per_node=8)
    gen = JobGenerator(config, random.Random(1), 100_000)
    lam = gen.rate * 2400.0
    assert lam > 2000
    counts = [len(gen.arrivals(config.start_time + 2400.0 * k)) for k in range(1, 6)]
    for count in counts:
        assert abs(count - lam) < 5 * lam**0.5, (count, lam)
    small = JobGenerator(SimConfig(nodes=8), random.Random(1), 64)
    total = sum(len(small.arrivals(config.start_time + 5.0 * k)) for k in range(1, 20001))
    assert abs(total - small.rate * 1e5) < 5 * (small.rate * 1e5) ** 0.5


def test_gpu_uuids_are_uuid5_names() -> None:
    from factoryctl.sim import names

    nodes = names.node_names(40)
    fast = names.gpu_uuids(7, nodes, 8)
    assert len(set(fast)) == 320
    assert fast == [names.gpu_uuid(7, node, i) for node in nodes for i in range(8)]
    # The simulator's are computed a node at a time, when read.
    lazy = names.GpuUuids(7, nodes, 8)
    assert lazy[13] == fast[13] and lazy[-1] == fast[-1] and lazy[5:20] == fast[5:20]
    assert sum(u is not None for u in lazy._known) == 8 * 4  # nodes 2, 40, 1 and 3
    assert list(lazy) == fast and len(lazy) == 320 and tuple(lazy) == tuple(fast)
    assert SimFactory(SimConfig(nodes=40, seed=7)).uuids[:] == fast


def test_a_released_jobs_due_end_does_not_end_a_later_job_of_that_id() -> None:
    sim = _sim()
    job = min((j for j in sim.jobs.values() if j.start_time is not None), key=lambda j: j.ends)
    sim.release(job.job_id)
    node, index = sim.node_names[job.slots[0] // sim.gpn], job.slots[0] % sim.gpn
    again = sim.assign(job.job_id, "ada", node, [index], Workload.TRAINING)
    sim.advance_to(job.ends + 60, 7)
    assert again.state is JobState.RUNNING and sim.jobs[job.job_id] is again
