"""lab.backfill: what it writes for each engine agrees with the truth it hands back."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from factoryctl.lab.backfill import Backfill, backfill
from factoryctl.lab.backfill_sinks import Chunk, Layout, OpenMetricsFile, VictoriaImport
from factoryctl.telemetry import schema as m

END = 1_767_225_600.0
GPUS, MINUTES, STEP = 128, 120, 15.0  # 2 h: long enough to hold whole jobs


class Captured(VictoriaImport):
    """The JSON lines VictoriaMetrics would receive, without a server."""

    def __init__(self) -> None:
        self._heads: dict[str, list[str]] = {}
        self.lines: list[dict] = []
        self.closed = False

    def write(self, layout: Layout, chunk: Chunk) -> None:
        self.lines += [json.loads(line) for line in self.encode(layout, chunk).splitlines()]

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Backfill, Captured, Path]:
    vm = Captured()
    om = tmp_path_factory.mktemp("backfill") / "out.om"
    result = backfill([vm, OpenMetricsFile(om)], GPUS, MINUTES, END, step=STEP, record_from=0)
    return result, vm, om


def test_window_and_sample_count(written: tuple[Backfill, Captured, Path]) -> None:
    result, vm, om = written
    assert vm.closed
    assert result.end == result.start + MINUTES * 60 and result.end <= END
    assert len(result.frames) == MINUTES * 60 / STEP
    assert result.samples == sum(len(line["values"]) for line in vm.lines)
    text = om.read_text().splitlines()
    assert text[-1] == "# EOF"
    assert len(text) - 1 == result.samples
    # Every per-GPU series is there at every step.
    up = [line for line in vm.lines if line["metric"]["__name__"] == m.GPU_UP]
    assert sum(len(line["values"]) for line in up) == GPUS * len(result.frames)


def test_written_gauges_are_the_frames(written: tuple[Backfill, Captured, Path]) -> None:
    result, vm, _ = written
    node, gpu = written[0].sim.node_names[2], 5
    g = result.sim.gpu_slot(node, gpu)
    seen: dict[int, float] = {}
    for line in vm.lines:
        lab = line["metric"]
        if lab["__name__"] == m.GPU_POWER and lab["node"] == node and lab["gpu"] == str(gpu):
            seen.update(zip(line["timestamps"], line["values"], strict=True))
    assert [seen[round(f.time * 1000)] for f in result.frames] == [
        f.power[g] for f in result.frames
    ]
    # A query between two steps sees the older one; past the data there is no frame.
    mid = result.frames[3].time + STEP / 2
    assert result.frame_at(mid) is result.frames[3]
    with pytest.raises(LookupError):
        result.frame_at(result.end + 3 * STEP)


def test_job_counters_written_sum_to_the_truth(written: tuple[Backfill, Captured, Path]) -> None:
    result, vm, _ = written
    last: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
    for line in vm.lines:
        lab = line["metric"]
        if lab["__name__"] == m.JOB_ENERGY:
            ts, value = line["timestamps"][-1], line["values"][-1]
            prior = last[lab["job_id"]].get(lab["node"])
            if prior is None or prior[0] < ts:
                last[lab["job_id"]][lab["node"]] = (ts, value)
    assert len(last) > 5
    for job_id, by_node in last.items():
        total = sum(v for _, v in by_node.values())
        assert total == pytest.approx(result.job_counter(job_id, result.end), rel=1e-12)


def test_exporter_energy_is_the_simulators_within_a_step_per_end(
    written: tuple[Backfill, Captured, Path],
) -> None:
    """The exporter charges whole steps to the owner at the step's start, so a job that
    started and ended inside the window differs from the exact energy by at most a step
    of its GPUs' power at each end."""
    result, _, _ = written
    sim = result.sim
    inside = [
        j
        for j in sim.finished
        if j.start_time is not None and j.start_time > result.start + STEP and j.end_time
    ]
    assert inside, "the window should hold whole jobs"
    window = result.job_energy(result.start, result.end)
    peak = sim.config.spec.power_limit_watts
    for job in inside:
        exact = sim.true_energy(job.job_id)
        assert abs(window[job.job_id] - exact) <= 2 * STEP * peak * job.gpus, job.job_id
        assert window[job.job_id] > 0


def test_views_at_a_time(written: tuple[Backfill, Captured, Path]) -> None:
    result, _, _ = written
    t = result.frames[10].time + 1.0
    frame = result.frame_at(t)
    jobs = result.jobs_at(t)
    # Owners of this step and the one before (the readers' 2-interval lookback).
    recent = {o for f in result.frames[9:11] for o in f.owners if o is not None}
    assert set(jobs) == recent
    nodes = result.nodes_at(t)
    assert sum(n["gpus_total"] for n in nodes.values()) == GPUS
    assert sum(n["power_watts"] for n in nodes.values()) == pytest.approx(sum(frame.power))
    assert result.jobs_attributed(result.start, result.end) >= set(jobs)


def _at(vm: Captured, name: str, t: float) -> dict[tuple[str, ...], float]:
    """Each series of ``name`` at step ``t``, keyed by its label values but the name."""
    ms, out = round(t * 1000), {}
    for line in vm.lines:
        lab = line["metric"]
        if lab["__name__"] == name and ms in line["timestamps"]:
            key = tuple(v for k, v in sorted(lab.items()) if k != "__name__")
            out[key] = line["values"][line["timestamps"].index(ms)]
    return out


def test_rollups_written_agree_with_the_frames(written: tuple[Backfill, Captured, Path]) -> None:
    """The node and (node, job) rollups at a step are the aggregation of that step's
    per-GPU frame and attribution: the views reading rollups see what the raw path does."""
    result, vm, _ = written
    for frame in (result.frames[40], result.frames[-1]):
        t = frame.time
        truth = result.nodes_at(t) if frame is result.frames[-1] else None
        power, util = _at(vm, m.NODE_POWER, t), _at(vm, m.NODE_UTILIZATION, t)
        temp, gpus = _at(vm, m.NODE_TEMPERATURE_MAX, t), _at(vm, m.NODE_GPUS, t)
        gpn = result.sim.gpn
        assert len(power) == len(result.sim.node_names) == GPUS // gpn
        for i, name in enumerate(result.sim.node_names):
            lo, hi = i * gpn, (i + 1) * gpn
            assert power[(name,)] == pytest.approx(sum(frame.power[lo:hi]))
            assert util[(name,)] == pytest.approx(sum(frame.utilization[lo:hi]) / gpn)
            assert temp[(name,)] == max(frame.temperature[lo:hi])
            assert gpus[(name,)] == gpn
            if truth is not None:
                assert power[(name,)] == pytest.approx(truth[name]["power_watts"])
        held: dict[tuple[str, str], list[int]] = defaultdict(list)
        for g, job in enumerate(frame.owners):
            if job is not None:
                held[(result.sim.node_names[g // gpn], job)].append(g)
        job_power = _at(vm, m.JOB_POWER, t)
        job_util = _at(vm, m.JOB_UTILIZATION_SUM, t)
        job_gpus = _at(vm, m.JOB_GPUS, t)
        assert {(n, j) for j, n, _ in job_power} == set(held)
        for (j, n, user), watts in job_power.items():
            mine = held[(n, j)]
            assert watts == pytest.approx(sum(frame.power[g] for g in mine))
            assert job_util[(j, n, user)] == pytest.approx(sum(frame.utilization[g] for g in mine))
            assert job_gpus[(j, n, user)] == len(mine)
