"""Energy per job after the job ends (issue 12): the GPUs a finished job held come from
Prometheus's attribution history, never from the scheduler, which forgets them (Slurm
answers ``gres_detail: []`` for a finished job). Checked against the simulator's truth
on every engine: native sites by the exact per-job counters (0.5 %), dcgm-exporter sites
with HPC job mapping, or with ``factoryctl scheduler-exporter`` recording Slurm's
allocation, by the attributed GPUs' counters over [start, end] (1 %)."""

from __future__ import annotations

import io
import json
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest

from factoryctl.cli.env import Environment
from factoryctl.cli.main import main
from factoryctl.model import Allocation, Job
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions
from tests.integration.simexpo import SimScheduler, SimTargets
from tests.integration.telemetry_lab import Scenario

pytestmark = pytest.mark.integration

NATIVE_TOLERANCE = 0.005
DCGM_TOLERANCE = 0.01


class ForgetfulScheduler(SimScheduler):
    """What Slurm says once a job has ended: its nodes and GPU count (``tres_per_node``),
    not which GPUs (``gres_detail: []``)."""

    def jobs(self) -> list[Job]:
        return [
            replace(
                j,
                allocations=tuple(Allocation(a.node, (), gpus=a.count) for a in j.allocations),
            )
            if j.state.finished
            else j
            for j in super().jobs()
        ]


def truth_keys(targets: SimTargets, job_id: str) -> set[tuple[str, int]]:
    jobs = {j.job_id: j for j in SimScheduler(targets).jobs()}  # takes the lock itself
    return set(jobs[job_id].gpu_keys())


def source(url: str, schema: str, targets: SimTargets) -> PrometheusSource:
    return PrometheusSource(
        PromClient(PromConfig(url, timeout=10)),
        ForgetfulScheduler(targets),
        SourceOptions(schema=schema),
    )


def _error(measured: float | None, truth: float) -> float:
    assert measured is not None
    return abs(measured - truth) / truth


def _check(src: PrometheusSource, scenario: Scenario, targets: SimTargets, tol: float, what: str):
    snap = src.snapshot()
    jobs = {j.job_id: j for j in snap.jobs}
    for job_id, truth in scenario.finished.items():
        job = jobs[job_id]
        assert job.state.finished
        assert not any(job.gpu_keys())  # the scheduler no longer names them
        assert job.gpu_count == len(truth_keys(targets, job_id))  # but counts them
        err = _error(job.energy_joules, truth)
        print(f"{what} job {job_id}: {job.energy_joules:.1f} J vs {truth:.1f} J ({err:.3%})")
        assert err <= tol, (job_id, job.energy_joules, truth)
    assert not [w for w in snap.warnings if "no energy samples" in w]
    assert not snap.job_notes
    return snap


def test_native_finished_jobs_from_job_counters(lab, scenario: Scenario, engine_url: str) -> None:
    src = source(engine_url, "native", lab.native)
    snap = _check(src, scenario, lab.native, NATIVE_TOLERANCE, f"native {engine_url}")
    # The attribution history names exactly the GPUs each finished job held.
    from factoryctl.telemetry.job_energy import EnergyReader

    reader = EnergyReader(src.client, src.schema(snap.time), src.interval(snap.time))
    held = reader.attributed_gpus([snap.job(j) for j in scenario.finished], snap.time)
    for job_id in scenario.finished:
        keys = {(a.node, i) for a in held[job_id] for i in a.gpu_indices}
        assert keys == truth_keys(lab.native, job_id), job_id


def test_dcgm_with_hpc_job_mapping(lab, scenario: Scenario, hpc_engine_url: str) -> None:
    assert lab.dcgm_hpc is not None
    src = source(hpc_engine_url, "dcgm", lab.dcgm_hpc)
    snap = _check(src, scenario, lab.dcgm_hpc, DCGM_TOLERANCE, f"dcgm+hpc_job {hpc_engine_url}")
    energy = src.job_energy([snap.job(j) for j in scenario.finished])
    assert {e.method for e in energy.values()} == {"gpu-counter"}


def test_dcgm_without_job_mapping_says_why(lab, scenario: Scenario, engine_url: str) -> None:
    """No hpc_job label: a finished job's GPUs cannot be known; it says so, truthfully."""
    src = source(engine_url, "dcgm", lab.dcgm)
    snap = src.snapshot()
    for job_id in scenario.finished:
        assert snap.job(job_id).energy_joules is None
        note = snap.job_notes[job_id]
        assert "no attribution recorded" in note and "hpc_job" in note, note
        assert "older than the retention" not in note
    # The running job keeps the scheduler's allocation: measured, no note.
    assert snap.job(scenario.running).energy_joules is not None
    assert scenario.running not in snap.job_notes


def test_dcgm_with_the_scheduler_exporters_attribution(
    lab, scenario: Scenario, slurm_engine_url: str, tmp_path: Path
) -> None:
    """dcgm-exporter without a job mapping, and a scheduler-exporter scraped beside it:
    a finished job's GPUs come from the Slurm allocation it recorded while the job ran
    (``factoryctl_slurm_gpu_job_info``), through the snapshot and the CLI."""
    from factoryctl.telemetry.job_energy import EnergyReader
    from factoryctl.telemetry.schema import SLURM_GPU_JOB_INFO

    src = source(slurm_engine_url, "dcgm", lab.dcgm)
    snap = _check(src, scenario, lab.dcgm, DCGM_TOLERANCE, f"dcgm+scheduler {slurm_engine_url}")
    schema = src.schema(snap.time)
    assert schema.attribution == SLURM_GPU_JOB_INFO and schema.node_label == "Hostname"
    reader = EnergyReader(src.client, schema, src.interval(snap.time))
    held = reader.attributed_gpus([snap.job(j) for j in scenario.finished], snap.time)
    for job_id in scenario.finished:
        keys = {(a.node, i) for a in held[job_id] for i in a.gpu_indices}
        assert keys == truth_keys(lab.dcgm, job_id), job_id
    _cli_after_the_end(lab, scenario, src, lab.dcgm, DCGM_TOLERANCE, tmp_path)


def test_dcgm_without_scheduler_jobs_from_the_scheduler_exporter(
    lab, scenario: Scenario, slurm_engine_url: str, tmp_path: Path
) -> None:
    """--scheduler none on that site: the running job, its user and the nodes' allocation
    from the recorded Slurm allocation, keyed on the exporter's ``node`` label."""
    from tests.integration.test_prometheus_cli import cli

    n0, n1 = lab.sim.node_names
    jobs = cli("--prometheus", slurm_engine_url, "jobs", "-o", "json", home=tmp_path)
    assert jobs.status == 0, jobs.stderr
    items = jobs.json()["items"]
    assert [(i["job_id"], i["user"], i["gpus"], i["nodes"]) for i in items] == [
        (scenario.running, "dana", 2, n1)
    ]
    assert jobs.stderr == ""
    nodes = cli("--prometheus", slurm_engine_url, "nodes", "-o", "json", home=tmp_path).json()
    assert "state" not in nodes["unavailable"]
    assert {i["name"]: (i["gpus_total"], i["gpus_allocated"]) for i in nodes["items"]} == {
        n0: (4, 0),
        n1: (4, 2),
    }


def test_dcgm_without_scheduler_energy_from_the_scheduler_exporters_history(
    lab, scenario: Scenario, slurm_engine_url: str, tmp_path: Path
) -> None:
    """--scheduler none on that site, after the jobs ended: ``energy --by job|user`` and
    ``jobs --all`` give each finished job's energy from the recorded allocation, its start
    and end inferred from the series' first and last samples (said so, with the
    resolution), the partition null. The inferred edges lie inside the job by up to a
    scrape interval (1 s), the scheduler-exporter's refresh (0.25 s) and one resolution
    step at each end: the bound checked, on jobs of 24-84 s. Cost: three CLI runs on the
    session's engine, each detecting the schema afresh (6.6 s measured at load 15)."""
    from tests.integration.test_prometheus_cli import cli

    def check(doc: dict, rows: dict, what: str) -> None:
        notes = [w for w in doc["warnings"] if "inferred from the first and last samples" in w]
        steps = {float(m) for w in notes for m in re.findall(r"resolution ([0-9.]+) s", w)}
        assert len(steps) == 1, doc["warnings"]
        step = steps.pop()
        for job_id, truth in scenario.finished.items():
            row = rows[job_id]
            assert row["partition"] is None and row["user"], row
            start, end = row["start_time"], row["end_time"]
            assert start is not None and end is not None and end <= scenario.end + 1.0, row
            missing = 2 * (1.0 + 0.25 + step) / (end - start)  # both edges, as a share
            err = (row["energy_joules"] - truth) / truth
            print(f"no scheduler, {what}, job {job_id}: {err:+.3%} over {end - start:.1f} s"
                  f" (resolution {step:g} s; bound -{missing:.1%} .. +{DCGM_TOLERANCE:.0%})")  # fmt: skip
            assert -missing - DCGM_TOLERANCE <= err <= DCGM_TOLERANCE, (job_id, row, truth)
        assert "partition" in doc["unavailable"]

    since = f"{int(time.time() - lab.started + 60)}s"
    res = cli("--prometheus", slurm_engine_url, "energy", "--since", since, "-o", "json",
              home=tmp_path)  # fmt: skip
    assert res.status == 0, res.stderr
    doc = res.json()
    rows = {i["job_id"]: i for i in doc["items"]}
    check(doc, rows, "energy")
    assert rows[scenario.running]["end_time"] is None
    by_user = cli("--prometheus", slurm_engine_url, "energy", "--since", since, "--by", "user",
                  "-o", "json", home=tmp_path).json()  # fmt: skip
    users = {i["user"]: i["energy_joules"] for i in by_user["items"]}
    assert users[rows["501"]["user"]] == pytest.approx(rows["501"]["energy_joules"], rel=1e-6)
    jobs = cli("--prometheus", slurm_engine_url, "jobs", "--all", "-o", "json", home=tmp_path)
    assert jobs.status == 0, jobs.stderr
    listed = {i["job_id"]: i for i in jobs.json()["items"]}
    check(jobs.json(), listed, "jobs --all")
    assert {listed[j]["state"] for j in scenario.finished} == {"unknown"}


def _cli(src: PrometheusSource, *argv: str, home: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, stdin_isatty=False, environ={"HOME": str(home)})
    env.source_factory = lambda _env: src  # type: ignore[assignment,method-assign]
    status = main(list(argv), env)
    return status, out.getvalue(), err.getvalue()


def test_cli_native(lab, scenario: Scenario, engine_url: str, tmp_path: Path) -> None:
    src = source(engine_url, "native", lab.native)
    _cli_after_the_end(lab, scenario, src, lab.native, NATIVE_TOLERANCE, tmp_path)


def test_cli_dcgm_hpc_job(lab, scenario: Scenario, hpc_engine_url: str, tmp_path: Path) -> None:
    assert lab.dcgm_hpc is not None
    src = source(hpc_engine_url, "dcgm", lab.dcgm_hpc)
    _cli_after_the_end(lab, scenario, src, lab.dcgm_hpc, DCGM_TOLERANCE, tmp_path)


def _cli_after_the_end(
    lab, scenario: Scenario, src: PrometheusSource, targets: SimTargets, tol: float, tmp_path: Path
) -> None:
    """``job ID``, ``jobs --all`` and ``energy`` after the jobs ended."""
    flavour = src.describe(scenario.end)
    for job_id, truth in scenario.finished.items():
        status, out, err = _cli(src, "job", job_id, "-o", "json", home=tmp_path)
        assert status == 0, err
        doc = json.loads(out)
        assert doc["job"]["gpus"] == len(truth_keys(targets, job_id))
        assert _error(doc["job"]["energy_joules"], truth) <= tol, (job_id, doc["job"])
        assert "warning" not in err
    status, out, err = _cli(src, "jobs", "--all", "-o", "json", home=tmp_path)
    assert status == 0, err
    items = {i["job_id"]: i for i in json.loads(out)["items"]}
    for job_id, truth in scenario.finished.items():
        assert _error(items[job_id]["energy_joules"], truth) <= tol, (job_id, items[job_id])
    assert "warning" not in err
    # A duration back from now, which may be long after the scenario ended.
    since = f"{int(time.time() - lab.started + 60)}s"
    status, out, err = _cli(src, "energy", "--since", since, "-o", "json", home=tmp_path)
    assert status == 0, err
    doc = json.loads(out)
    assert {"kind", "time", "source", "unavailable", "warnings", "items"} <= set(doc)
    rows = {i["job_id"]: i for i in doc["items"]}
    for job_id, truth in scenario.finished.items():
        err_ = _error(rows[job_id]["energy_joules"], truth)
        print(f"{flavour} energy report job {job_id}: {err_:.3%}")
        assert err_ <= tol, (job_id, rows[job_id])
    assert doc["total_joules"] is not None and doc["total_joules"] > sum(scenario.finished.values())


# -- --scheduler none on a dcgm-exporter site (issue 12, part 3) ------------------------


def test_dcgm_without_scheduler_or_mapping_says_state_is_unknown(
    lab, scenario: Scenario, engine_url: str, tmp_path: Path
) -> None:
    from tests.integration.test_prometheus_cli import cli

    nodes = cli(
        "--prometheus", engine_url, "--schema", "dcgm", "nodes", "-o", "json", home=tmp_path
    )
    assert nodes.status == 0, nodes.stderr
    doc = nodes.json()
    assert {"state", "gpus_allocated"} <= set(doc["unavailable"])
    assert [(i["state"], i["gpus_allocated"], i["gpus_total"]) for i in doc["items"]] == [
        (None, None, 4),
        (None, None, 4),
    ]
    table = cli("--prometheus", engine_url, "--schema", "dcgm", "nodes", home=tmp_path)
    assert "idle" not in table.stdout and "n/a" in table.stdout
    jobs = cli("--prometheus", engine_url, "--schema", "dcgm", "jobs", "-o", "json", home=tmp_path)
    assert jobs.status == 0
    assert "jobs" in jobs.json()["unavailable"] and jobs.json()["items"] == []
    assert "no scheduler and no job attribution" in jobs.stderr
    assert len(jobs.stderr.splitlines()) == 1


def test_dcgm_without_scheduler_jobs_from_hpc_job(
    lab, scenario: Scenario, hpc_engine_url: str, tmp_path: Path
) -> None:
    from tests.integration.test_prometheus_cli import cli

    n0, n1 = lab.sim.node_names
    jobs = cli("--prometheus", hpc_engine_url, "jobs", "-o", "json", home=tmp_path)
    assert jobs.status == 0, jobs.stderr
    assert [(i["job_id"], i["gpus"], i["nodes"]) for i in jobs.json()["items"]] == [
        (scenario.running, 2, n1)
    ]
    assert jobs.stderr == ""
    nodes = cli("--prometheus", hpc_engine_url, "nodes", "-o", "json", home=tmp_path).json()
    assert "state" not in nodes["unavailable"]
    # Each GPU once, however many hpc_job copies and job changes its series went through.
    assert {i["name"]: (i["gpus_total"], i["gpus_allocated"]) for i in nodes["items"]} == {
        n0: (4, 0),
        n1: (4, 2),
    }
    gpus = cli("--prometheus", hpc_engine_url, "gpus", "-o", "json", home=tmp_path).json()
    assert len(gpus["items"]) == 8
    assert all(g["throttle_reasons"] is None for g in gpus["items"])
    held = {(g["node"], g["gpu"]): g["job_ids"] for g in gpus["items"] if g["job_ids"]}
    assert held == {(n1, 2): scenario.running, (n1, 3): scenario.running}


def test_why_unknown_range_query_answers_as_instant_queries(lab, engine_url: str) -> None:
    """The why-unknown question for an array's many ends, asked as one range query
    (``EnergyReader._seen_in_runs``), gets on every engine exactly the answers one instant
    query per end gets; ends before the lab's first sample and after it, so both answers
    occur. Cost: one range and 24 instant queries per engine (~0.2 s)."""
    from factoryctl.telemetry.job_energy import EnergyReader
    from factoryctl.telemetry.metrics import NATIVE

    client = PromClient(PromConfig(engine_url, timeout=10))
    reader = EnergyReader(client, NATIVE, 1.0)
    first = int(lab.started)
    ranges = [(float(first - 40 + 3 * i), "2000ms") for i in range(24)]
    ranged = reader._seen_in_runs(ranges)
    assert set(ranged) == set(ranges)
    one_by_one = {
        r: bool(client.query(f"count(count_over_time({NATIVE.marker}[{r[1]}]))", r[0]).vector)
        for r in ranges
    }
    assert ranged == one_by_one
    assert set(one_by_one.values()) == {False, True}, one_by_one
