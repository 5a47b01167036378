"""PrometheusSource against real Prometheus 2.42 and VictoriaMetrics 1.79: same assertions.

The simulator's truth (exact joules per job) is the reference; jobs start, end and hand
their GPUs to other jobs while both engines scrape, and one GPU's counter resets mid-job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from factoryctl.lab.procs import wait_until
from factoryctl.model import JobState
from factoryctl.sim import Workload
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions
from tests.integration.simexpo import SimScheduler

pytestmark = pytest.mark.integration

TOLERANCE = 0.005


@dataclass
class Scenario:
    finished: dict[str, float]  # job id -> true joules
    running: str
    end: float


def source(url: str, schema: str = "auto", scheduler=None) -> PrometheusSource:
    return PrometheusSource(
        PromClient(PromConfig(url, timeout=10)), scheduler, SourceOptions(schema=schema)
    )


def _newest_sample(url: str, metric: str) -> float:
    client = PromClient(PromConfig(url))
    res = client.query(f"max(timestamp({metric}))", time.time())
    return res.vector[0].value if res.vector else 0.0


@pytest.fixture(scope="session")
def scenario(lab) -> Scenario:
    sim, lock = lab.sim, lab.native.lock
    n0, n1 = sim.node_names

    def now(action) -> None:
        with lock:
            lab.native.sync()
            action()
            # What the exporter does on a job change: attribute from this instant on.
            lab.native.observe(sim)

    now(lambda: sim.assign("501", "ada", n0, [0, 1], Workload.TRAINING))
    now(lambda: sim.assign("502", "ben", n1, [0, 1], Workload.TRAINING))
    time.sleep(7)
    now(lambda: sim.reset_energy_counter(n1, 0))  # a driver reload inside job 502
    time.sleep(7)
    # Job change on the same GPUs: 501 hands GPUs 0-1 of n0 to 503 at once.
    now(lambda: (sim.release("501"), sim.assign("503", "chen", n0, [0, 1], Workload.INFERENCE)))
    now(lambda: sim.assign("504", "dana", n1, [2, 3], Workload.IDLE))
    time.sleep(16)
    now(lambda: (sim.release("502"), sim.release("503")))
    end = time.time()
    # Both engines must have scraped past the last end (VictoriaMetrics lags ~1-2 s).
    for engine in lab.stack.running.values():
        for metric in ("factoryctl_gpu_up", "DCGM_FI_DEV_GPU_UTIL"):
            wait_until(
                lambda u=engine.url, m=metric: _newest_sample(u, m) > end + 1.5,
                30,
                f"{engine.name} to scrape past the jobs' end",
                interval=0.25,
            )
    with lock:
        truth = {j: sim.true_energy(j) for j in ("501", "502", "503")}
    return Scenario(truth, "504", end)


def _assert_close(measured: float | None, truth: float, what: str) -> None:
    assert measured is not None, what
    assert truth > 0
    err = abs(measured - truth) / truth
    assert err <= TOLERANCE, f"{what}: measured {measured:.1f} J, truth {truth:.1f} J ({err:.3%})"


def test_every_gpu_appears_telemetry_only(lab, engine_url: str) -> None:
    snap = source(engine_url).snapshot()
    assert snap.source == "prometheus:native"
    with lab.native.lock:
        expected = {(lab.sim.node_names[g // 4], g % 4): lab.sim.uuids[g] for g in range(8)}
    assert {g.key: g.uuid for g in snap.gpus} == expected
    assert all(g.up for g in snap.gpus)
    assert all(g.power_watts is not None and g.power_watts > 0 for g in snap.gpus)
    assert {n.name for n in snap.nodes} == set(lab.sim.node_names)


def test_native_job_energy_matches_truth(lab, scenario: Scenario, engine_url: str) -> None:
    src = source(engine_url, scheduler=SimScheduler(lab.native))
    snap = src.snapshot()
    jobs = {j.job_id: j for j in snap.jobs}
    for job_id, truth in scenario.finished.items():
        assert jobs[job_id].state is JobState.COMPLETED
        _assert_close(jobs[job_id].energy_joules, truth, f"job {job_id} (job counter)")
    methods = src.job_energy([jobs[j] for j in scenario.finished])
    assert {m.method for m in methods.values()} == {"job-counter"}


def test_dcgm_job_energy_from_gpu_counters_matches_truth(
    lab, scenario: Scenario, engine_url: str
) -> None:
    src = source(engine_url, schema="dcgm", scheduler=SimScheduler(lab.native))
    snap = src.snapshot()
    assert snap.source == "prometheus:dcgm"
    jobs = {j.job_id: j for j in snap.jobs}
    energy = src.job_energy([jobs[j] for j in scenario.finished])
    for job_id, truth in scenario.finished.items():
        assert energy[job_id].method == "gpu-counter"
        _assert_close(
            energy[job_id].joules, truth, f"job {job_id} (dcgm GPU counters) {energy[job_id]}"
        )
        _assert_close(jobs[job_id].energy_joules, truth, f"job {job_id} in snapshot")


def test_dcgm_snapshot_marks_what_dcgm_cannot_say(lab, engine_url: str) -> None:
    snap = source(engine_url, schema="dcgm").snapshot()
    assert len(snap.gpus) == 8
    gpu = snap.gpus[0]
    assert gpu.up and gpu.utilization is not None and 0 <= gpu.utilization <= 1
    assert gpu.memory_total_bytes is not None and gpu.memory_total_bytes > 70e9  # MiB -> bytes
    assert "xid_total" in snap.unavailable
    assert gpu.xid_total is None  # n/a, never 0


def test_running_job_from_attribution_without_scheduler(
    lab, scenario: Scenario, engine_url: str
) -> None:
    snap = source(engine_url).snapshot()
    job = snap.job(scenario.running)
    assert job is not None
    assert job.user == "dana"
    assert sorted(job.gpu_keys()) == [(lab.sim.node_names[1], 2), (lab.sim.node_names[1], 3)]
    assert job.energy_joules is not None and job.energy_joules > 0
    # Finished jobs are gone from the attribution: no GPU is double-counted.
    assert all(len(g.job_ids) <= 1 for g in snap.gpus)
    assert {j.job_id for j in snap.jobs} == {scenario.running}
