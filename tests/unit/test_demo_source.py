"""The demo source's measured per-job energy against the simulator's truth, at the
warm-up's coarse steps as at the console's 5 s ones."""

from __future__ import annotations

import pytest

from factoryctl.sim import SimConfig, SimFactory
from factoryctl.telemetry.demo import (
    COARSE_GPU_STEPS,
    DEFAULT_WARMUP,
    LIVE_STEP,
    DemoSource,
    warmup_plan,
)
from factoryctl.tui.sources import LiveDemoSource

START = 1_780_000_000.0


@pytest.mark.parametrize("step", [5.0, 300.0, 2400.0])
def test_measured_energy_is_exact_at_any_step(step: float) -> None:
    """Jobs end inside steps (on their own GPUs) and faults end them between steps: the
    accountant reads the released GPUs then, so every job's energy is exact."""
    sim = SimFactory(SimConfig(nodes=24, seed=5, start_time=START, faults_per_node_day=12))
    source = DemoSource(sim)
    source.advance_to(START + 3 * 3600, step_seconds=step)
    kinds = {j.state.value for j in sim.finished}
    assert {"completed", "failed", "node_fail"} <= kinds, kinds
    checked = 0
    for job in sim.all_jobs():
        truth = sim.true_energy(job.job_id)
        measured = source.accountant.energy_of(job.job_id)
        if job.start_time is None:
            assert truth == 0 and measured is None
            continue
        assert measured == pytest.approx(truth, rel=1e-9), job.job_id
        checked += 1
    assert checked > 50


def test_warmup_plan_keeps_the_cost_flat() -> None:
    assert warmup_plan(64 * 8) == (DEFAULT_WARMUP, 300.0, 60.0)  # 48 + 12 steps
    assert warmup_plan(2000 * 8, 3600.0) == (3600.0, 300.0, 30.0)
    for gpus in (512, 10_000, 25_000, 50_000, 100_000, 160_000):
        warmup, coarse, fine = warmup_plan(gpus)
        assert 0 <= fine <= 60.0 and fine % LIVE_STEP == 0
        steps = (warmup - fine) / coarse
        assert steps * gpus <= max(COARSE_GPU_STEPS, 48 * gpus) * (1 + 1e-9)
        assert warmup == (DEFAULT_WARMUP if gpus <= 50_000 else max(3600, 14400 * 50_000 / gpus))
    # 12,500 nodes: two hours in three 40-minute steps, no 5 s step; three steps still
    # when the simulator covers more (it starts on a whole hour).
    assert warmup_plan(100_000) == (7200.0, 2400.0, 0.0)
    assert warmup_plan(100_000, span=9000.0) == (7200.0, 3000.0, 0.0)


@pytest.mark.parametrize("minute", [0, 20, 59])
def test_coarse_steps_divide_the_time_the_simulator_covers(
    minute: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulator starts on a whole hour, so it covers up to an hour more than the
    warm-up; the budget divides what it covers: as many coarse steps at any minute."""
    import factoryctl.telemetry.demo as demo

    monkeypatch.setattr(demo, "COARSE_GPU_STEPS", 128 * 3)  # 16 x 8 GPUs: three steps
    taken: list[tuple[SimFactory, float]] = []
    step_to = SimFactory._step_to

    def counted(sim: SimFactory, t: float) -> None:
        taken.append((sim, t - sim.now))
        step_to(sim, t)

    monkeypatch.setattr(SimFactory, "_step_to", counted)
    now = START // 3600 * 3600 + 60 * minute
    source = DemoSource.create(nodes=16, now=now, warmup=3600.0)
    # Only this factory's steps: the patch is on the class, and a simulator another test
    # left running in a thread (a console's poller) would be counted too.
    steps = [dt for sim, dt in taken if sim is source.sim]
    assert len(steps) == 3 + 12 and steps[3:] == [LIVE_STEP] * 12
    assert steps[0] == pytest.approx((3600 + 60 * minute - 60) / 3)


def test_live_polls_after_a_coarse_warmup_keep_energy_exact() -> None:
    source = DemoSource.create(nodes=16, seed=2, now=START, faults_per_node_day=12)
    clock = [START]
    live = LiveDemoSource(source, clock=lambda: clock[0])
    for _ in range(120):
        clock[0] += 5.0
        live.snapshot()
    sim = source.sim
    assert any(j.end_time and j.end_time > START for j in sim.finished)
    for job in sim.all_jobs():
        if job.start_time is not None:
            truth = sim.true_energy(job.job_id)
            assert source.accountant.energy_of(job.job_id) == pytest.approx(truth, rel=1e-9)
