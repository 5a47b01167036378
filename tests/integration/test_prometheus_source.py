"""PrometheusSource against real Prometheus 2.42 and VictoriaMetrics 1.79: same assertions.

The simulator's truth (exact joules per job) is the reference; jobs start, end and hand
their GPUs to other jobs while both engines scrape, and one GPU's counter resets mid-job.
"""

from __future__ import annotations

import pytest

from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions
from tests.integration.simexpo import SimScheduler
from tests.integration.telemetry_lab import LAST_PHASE, PHASE, Scenario

pytestmark = pytest.mark.integration

TOLERANCE = 0.005  # the exporter's per-job counters: exact per collection interval
# The dcgm-exporter method splits the scrape gap at each edge by two instantaneous power
# readings. Job 503 (24 s of bursty inference) reads a few tenths of a percent off from
# that noise alone, either way: replayed 300 times with seeded noise and scrape phases
# (tests/integration/edge_noise.py) at regular 1 s scrapes, 503 had sd 0.17 % and at most
# 0.84 % (0.651 % failed the old 0.5 % bound in one CI run), 501 at most 0.53 %. The
# same bound as the finished jobs' dcgm figures (test_finished_job_energy.py).
DCGM_TOLERANCE = 0.01


def source(url: str, schema: str = "auto", scheduler=None) -> PrometheusSource:
    return PrometheusSource(
        PromClient(PromConfig(url, timeout=10)), scheduler, SourceOptions(schema=schema)
    )


def _assert_close(
    measured: float | None, truth: float, what: str, tolerance: float = TOLERANCE
) -> None:
    assert measured is not None, what
    assert truth > 0
    err = abs(measured - truth) / truth
    assert err <= tolerance, f"{what}: measured {measured:.1f} J, truth {truth:.1f} J ({err:.3%})"


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
        assert jobs[job_id].state.finished
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
        what = f"job {job_id} (dcgm GPU counters) {energy[job_id]}"
        _assert_close(energy[job_id].joules, truth, what, DCGM_TOLERANCE)
        _assert_close(
            jobs[job_id].energy_joules, truth, f"job {job_id} in snapshot", DCGM_TOLERANCE
        )


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


@pytest.mark.parametrize("schema", ["native", "dcgm"])
def test_node_aggregates_equal_rows_from_every_gpu(lab, engine_url: str, schema: str) -> None:
    """The nodes view asks the engine for sums/means/maxima by node; same rows as per-GPU."""
    import time

    from factoryctl.telemetry.node_summary import node_rows
    from factoryctl.views import node_rows as rows_from_gpus

    # The lab's engines hold the native exporters' rollups beside the dcgm view of the same
    # GPUs; a real dcgm site has none (or recorded ones): its rows come from raw series.
    rollups = "off" if schema == "dcgm" else "auto"
    src = PrometheusSource(
        PromClient(PromConfig(engine_url, timeout=10)),
        None,
        SourceOptions(schema=schema, rollups=rollups),
    )
    t = time.time() - 1
    snap, rows = node_rows(src, at=t)
    expected = rows_from_gpus(src.snapshot(at=t))
    assert [r["name"] for r in rows] == [r["name"] for r in expected]
    for got, want in zip(rows, expected, strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-9), (key, got, want)
            else:
                assert got[key] == value, (key, got, want)
    assert not snap.gpus  # no per-GPU vector was fetched for it


@pytest.mark.parametrize("with_jobs", [False, True])
def test_job_aggregates_equal_rows_from_every_gpu(
    lab, scenario: Scenario, engine_url: str, with_jobs: bool
) -> None:
    """The jobs view joins metrics to job_info on the engine; same rows as per-GPU."""
    import time

    from factoryctl.telemetry.job_summary import job_rows
    from factoryctl.telemetry.poll_detail import LEAN
    from factoryctl.views import job_rows as rows_from_gpus

    src = source(engine_url)
    # Jobs that ended less than the 2-scrape lookback (2 s here) ago are still "held":
    # when this test runs right after the scenario, wait them out so both paths agree.
    time.sleep(max(0.0, scenario.end + 3.5 - time.time()))
    t = time.time() - 1
    done = job_rows(src, at=t)
    assert done is not None
    snap, rows = done
    expected = rows_from_gpus(src.snapshot(at=t))
    assert [r["job_id"] for r in rows] == [r["job_id"] for r in expected] == [scenario.running]
    # 504 has held 2 GPUs idle since it started, LAST_PHASE s before the scenario ended.
    assert rows[0]["idle_gpus"] == 2 and rows[0]["idle_seconds"] >= LAST_PHASE
    for got, want in zip(rows, expected, strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if key == "low_utilization":  # a p10 is not built from per-node rollups
                assert got[key] is None and value is not None, (got, want)
                assert "low_utilization" in snap.unavailable, snap.unavailable
            elif isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-9), (key, got, want)
            else:
                assert got[key] == value, (key, got, want)
    assert not snap.gpus
    if not with_jobs:
        # The Overview's lean poll of the same instant (poll_detail.LEAN): 504's idle GPUs
        # and spell from the pairs holding idle GPUs and the spells under way, filtered on
        # the engine (a binary operation each engine must match label for label).
        lean = src.console_snapshot(at=t, detail=LEAN).job_summaries[scenario.running]
        assert (lean.idle_gpus, lean.mean_utilization, lean.power_watts) == (2, None, None)
        assert lean.idle_seconds == pytest.approx(rows[0]["idle_seconds"], rel=1e-9)
    # With a scheduler the allocation is not in Prometheus: the per-GPU path is used.
    if with_jobs:
        assert job_rows(source(engine_url, scheduler=SimScheduler(lab.native)), at=t) is None


@pytest.mark.parametrize("schema", ["native", "dcgm"])
def test_energy_today_equals_each_counters_raw_samples(
    lab, scenario: Scenario, engine_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The day total (counter now minus counter at local midnight, one aggregated query)
    equals the same arithmetic on every GPU's raw samples, on both engines. Local midnight
    is put 30 s ago with a made-up time zone, so the lab's data spans it (the scenario's
    phases alone last 36 s, and the lab was scraped before they began)."""
    import math
    import time

    from factoryctl.telemetry.metrics import SCHEMAS

    t = math.floor(time.time()) - 1.0
    midnight = t - 30
    assert 2 * PHASE + LAST_PHASE > 30
    west = int(midnight) % 86400  # POSIX: a positive offset is west of Greenwich
    monkeypatch.setenv("TZ", f"LAB+{west // 3600}:{west // 60 % 60:02d}:{west % 60:02d}")
    time.tzset()
    src = source(engine_url, schema)
    try:
        snap = src.snapshot(at=t)
    finally:
        monkeypatch.setenv("TZ", "UTC")
        time.tzset()
    assert snap.energy_today_since == midnight
    counter = SCHEMAS[schema].gpu_energy
    assert counter is not None and snap.energy_today_joules is not None
    raw = PromClient(PromConfig(engine_url)).query(f"{counter.metric}[120s]", t)
    # The source's freshness window: 2 scrape intervals, plus the engine's search delay.
    w = src.window(t)
    expected = 0.0
    for series in raw.matrix:
        now_pts = [v for ts, v in series.points if t - w < ts <= t]
        then_pts = [v for ts, v in series.points if midnight - w < ts <= midnight]
        if now_pts and then_pts:
            expected += max(0.0, now_pts[-1] - then_pts[-1]) * counter.scale
    assert expected > 0
    assert snap.energy_today_joules == pytest.approx(expected, rel=1e-9)


def test_processes_of_one_node_from_the_lab(lab, scenario: Scenario, engine_url: str) -> None:
    """Job 504 (dana, idle) still holds GPUs 2-3 of the second node: one process each, with
    the simulator's PIDs; the other node's GPUs are free again; dcgm cannot say."""
    from factoryctl.sim.processes import sim_pid

    n0, n1 = lab.sim.node_names
    table = source(engine_url, "native").processes(n1)
    assert table.available
    assert [(r.gpu, r.pid, r.name, r.user, r.job_id) for r in table.rows] == [
        (g, sim_pid(scenario.running, n1, g), "python3", "dana", scenario.running) for g in (2, 3)
    ]
    assert all(r.memory_bytes is not None and r.memory_bytes > 0 for r in table.rows)
    free = source(engine_url, "native").processes(n0)
    assert free.available and free.rows == ()
    dcgm = source(engine_url, "dcgm").processes(n1)
    assert not dcgm.available and "dcgm-exporter" in dcgm.note
