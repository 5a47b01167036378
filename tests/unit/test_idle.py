"""Idle spells: one tracker for the exporter and the demo, and a job's longest spell."""

from __future__ import annotations

from factoryctl.model import GPU, Allocation, Job
from factoryctl.occupancy import IdleStreaks, job_occupancy
from factoryctl.telemetry.demo import DemoSource
from factoryctl.telemetry.job_summary import _plan
from factoryctl.telemetry.metrics import DCGM, NATIVE
from factoryctl.views import job_rows


def test_spell_starts_at_first_idle_reading_and_ends_when_active() -> None:
    idle = IdleStreaks(threshold=0.05)
    idle.observe(100.0, [0.9, 0.0], ["a", "a"])
    # GPU 1 is idle, but only from this reading.
    assert idle.seconds(100.0, [0.9, 0.0]) == [0.0, 0.0]
    idle.observe(160.0, [0.01, 0.0], ["a", "a"])
    assert idle.seconds(160.0, [0.01, 0.0]) == [0.0, 60.0]
    idle.observe(200.0, [0.0, 0.5], ["a", "a"])
    # GPU 1 is active again: its spell is over.
    assert idle.seconds(200.0, [0.0, 0.5]) == [40.0, 0.0]
    idle.observe(230.0, [0.0, 0.0], ["a", "a"])
    assert idle.seconds(230.0, [0.0, 0.0])[1] == 0.0  # a new spell from 230


def test_spell_restarts_when_jobs_change_or_a_reading_is_missing() -> None:
    idle = IdleStreaks()
    idle.observe(0.0, [0.0, 0.0, 0.0], ["a", "a", "a"])
    idle.observe(50.0, [0.0, 0.0, None], ["a", "b", "a"])  # GPU 1 handed to job b
    # b is not charged with a's idle time; GPU 2 has no reading: cannot say.
    assert idle.seconds(50.0, [0.0, 0.0, None]) == [50.0, 0.0, None]
    idle.observe(60.0, [0.0, 0.0, 0.0], ["a", "b", "a"], up=[True, False, True])
    spells = idle.seconds(60.0, [0.0, 0.0, 0.0])
    assert spells[2] == 0.0  # back: counted from now, not from 0
    assert spells[1] is None  # GPU 1 was down at 60: no spell known


def gpu(index: int, util: float | None, idle: float | None, up: bool = True) -> GPU:
    return GPU("n1", index, utilization=util, idle_seconds=idle, up=up, job_ids=("7",))


def test_job_longest_spell_is_capped_at_runtime_and_zero_when_none_idle() -> None:
    job = Job("7", "ada", start_time=1000.0, allocations=(Allocation("n1", (0, 1, 2, 3)),))
    gpus = [gpu(0, 0.9, 0.0), gpu(1, 0.0, 300.0), gpu(2, 0.01, 900.0), gpu(3, None, None)]
    occ = job_occupancy(job, gpus, now=1600.0)
    assert occ.idle_gpus == 2
    assert occ.idle_seconds == 600.0  # 900 s spell, but the job has run 600 s
    assert job_occupancy(job, gpus, now=5000.0).idle_seconds == 900.0
    busy = job_occupancy(job, [gpu(0, 0.9, 0.0), gpu(1, 0.7, 0.0)], now=1600.0)
    assert busy.idle_gpus == 0 and busy.idle_seconds == 0.0
    unknown = job_occupancy(job, [gpu(0, 0.0, None)], now=1600.0)  # dcgm: cannot say
    assert unknown.idle_gpus == 1 and unknown.idle_seconds is None


def test_demo_jobs_report_idle_spells_observed_step_by_step() -> None:
    src = DemoSource.create(nodes=48, seed=3, now=1.7e9)
    snap = src.snapshot()
    rows = {r["job_id"]: r for r in job_rows(snap)}
    sim_jobs = src.sim.jobs
    holders = [r for r in rows.values() if sim_jobs[r["job_id"]].workload.name == "IDLE"]
    assert holders, "the seed should produce at least one idle-holding job"
    for row in holders:
        # Idle from its first step on (it starts within the first 5 s step).
        assert row["idle_gpus"] == row["gpus"]
        assert row["runtime_seconds"] - 60 <= row["idle_seconds"] <= row["runtime_seconds"]
    training = [r for r in rows.values() if sim_jobs[r["job_id"]].workload.name == "TRAINING"]
    reporting = [r for r in training if r["mean_utilization"] is not None]
    assert reporting and all(r["idle_seconds"] == 0.0 for r in reporting if not r["idle_gpus"])
    # A job whose GPUs all went silent (node down) cannot say.
    assert all(r["idle_seconds"] is None for r in training if r["mean_utilization"] is None)
    # Every up GPU with a reading says something; active ones say 0.
    for g in snap.gpus:
        if g.up and g.utilization is not None:
            assert g.idle_seconds is not None
            assert (g.idle_seconds == 0.0) == (g.utilization >= 0.05)


def test_jobs_view_asks_the_engine_for_the_longest_spell_on_native_only() -> None:
    plan = _plan(NATIVE, 30.0, 3600.0)
    assert plan["idle_seconds"].startswith("max by (job_id) (")
    assert "factoryctl_gpu_idle_seconds" in plan["idle_seconds"]
    assert "idle_seconds" in DCGM.unavailable()  # shown as n/a there, never 0
