"""Issue 12: energy per job after the job ends, and messages only about the jobs shown."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
import pytest

from factoryctl.model import GPU, Allocation, FactorySnapshot, Job, JobState, Node, NodeState
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.job_energy import EnergyReader
from factoryctl.telemetry.metrics import DCGM, NATIVE
from factoryctl.views import gpu_rows, job_note_lines
from tests.conftest import FROZEN_NOW, Result

Run = Callable[..., Result]
T = 1_767_225_600.0


def test_notes_collapse_and_name_only_the_jobs_shown() -> None:
    notes = {"1": "no attribution", "2": "no attribution", "3": "samples missing", "9": "x"}
    assert job_note_lines(notes, ["1", "2", "3", "4"]) == [
        "2 jobs (1, 2): no attribution",
        "job 3: samples missing",
    ]
    assert job_note_lines(notes, []) == []


class NotesSource:
    def snapshot(self) -> FactorySnapshot:
        return self.snapshot_for_view("jobs")

    def snapshot_for_view(self, view: str) -> FactorySnapshot:
        jobs = (
            *tuple(
                Job(
                    str(i), "ada", allocations=(Allocation("n1", (i,)),), start_time=FROZEN_NOW - 60
                )
                for i in range(3)
            ),
            Job(
                "9",
                "ben",
                state=JobState.COMPLETED,
                start_time=FROZEN_NOW - 600,
                end_time=FROZEN_NOW - 300,
            ),
        )
        gpus = (*tuple(GPU("n1", i, job_ids=(str(i),)) for i in range(3)), GPU("n2", 0))
        return FactorySnapshot(
            time=FROZEN_NOW,
            nodes=(Node("n1", NodeState.MIXED), Node("n2", NodeState.IDLE)),
            gpus=gpus,
            jobs=jobs,
            source="test",
            job_notes={"0": "same note", "1": "same note", "9": "about a job not shown"},
        )


def test_jobs_warns_once_about_the_jobs_shown_only(run_cli: Run) -> None:
    res = run_cli("jobs", source=NotesSource())
    assert res.status == 0, res.stderr
    assert res.stderr.splitlines() == ["factoryctl: warning: 2 jobs (0, 1): same note"]
    res = run_cli("gpus", "--node", "n2", source=NotesSource())  # n2 runs none of them
    assert res.status == 0 and res.stderr == ""
    res = run_cli("gpus", "--node", "n1", source=NotesSource())
    assert res.stderr.splitlines() == ["factoryctl: warning: 2 jobs (0, 1): same note"]
    res = run_cli("job", "1", "-o", "json", source=NotesSource())
    assert json.loads(res.stdout)["warnings"] == ["job 1: same note"]
    res = run_cli("jobs", "--all", "-o", "json", source=NotesSource())
    assert len(json.loads(res.stdout)["warnings"]) == 2


def test_throttle_reasons_is_null_where_dcgm_cannot_say() -> None:
    gpus = (GPU("n1", 0), GPU("n1", 1, up=False))
    dcgm = FactorySnapshot(time=T, gpus=gpus, unavailable=DCGM.unavailable())
    assert [r["throttle_reasons"] for r in gpu_rows(dcgm)] == [None, None]
    native = FactorySnapshot(time=T, gpus=gpus, unavailable=NATIVE.unavailable())
    assert [r["throttle_reasons"] for r in gpu_rows(native)] == ["", None]


def vector(items: list[tuple[dict[str, str], float]]) -> dict[str, object]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [T, str(v)]} for m, v in items],
        },
    }


class AttributionProm:
    """Answers the attribution-history query with the given series; every other query
    with ``others`` (the GPU-sample probe) or nothing."""

    def __init__(self, held: list[dict[str, str]], others: bool = True) -> None:
        self.held = held
        self.others = others
        self.queries: list[str] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        q = parse_qs(req.content.decode())["query"][0]
        self.queries.append(q)
        if q.startswith("max by (hpc_job") or q.startswith("max by (job_id"):
            return httpx.Response(200, json=vector([(m, 1) for m in self.held]))
        if q.startswith("count(count_over_time(") and self.others:
            return httpx.Response(200, json=vector([({}, 8)]))
        return httpx.Response(200, json=vector([]))


def reader(handler: AttributionProm, schema=DCGM) -> EnergyReader:
    client = PromClient(PromConfig("http://prom:9090"), transport=httpx.MockTransport(handler))
    return EnergyReader(client, schema, 15.0)


FINISHED = Job(
    "42",
    "ada",
    state=JobState.COMPLETED,
    start_time=T - 3600,
    end_time=T - 600,
    allocations=(Allocation("dgx01", (), gpus=2), Allocation("dgx02", (), gpus=1)),
)


def test_gpus_of_a_finished_job_from_hpc_job_history() -> None:
    fake = AttributionProm(
        [
            {"hpc_job": "42", "Hostname": "dgx01", "gpu": "0"},
            {"hpc_job": "42", "Hostname": "dgx01", "gpu": "3"},
            {"hpc_job": "42", "Hostname": "dgx02", "gpu": "1"},
        ]
    )
    held = reader(fake).attributed_gpus([FINISHED], T)
    assert held == {"42": (Allocation("dgx01", (0, 3)), Allocation("dgx02", (1,)))}
    # Over exactly the job's time (with two scrape intervals of slack), at its end.
    assert fake.queries == [
        "max by (hpc_job, Hostname, gpu) (max_over_time(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
        '{hpc_job=~"42"}[3060000ms]))'
    ]


@pytest.mark.parametrize(
    ("others", "needle"),
    [
        (True, "no attribution recorded for it (no hpc_job label"),
        (False, "no GPU samples at all over its time range (older than the retention"),
    ],
)
def test_a_finished_job_whose_gpus_cannot_be_known_says_why(others: bool, needle: str) -> None:
    energy = reader(AttributionProm([], others)).gpu_counters([FINISHED], T)["42"]
    assert energy.joules is None
    assert needle in energy.note
    assert "no energy samples for its GPUs" not in energy.note


def test_gpus_of_a_finished_job_from_the_scheduler_exporters_history() -> None:
    """dcgm-exporter without a job mapping, with ``factoryctl scheduler-exporter``: the
    GPUs come from Slurm's allocation as recorded, keyed on its ``node`` label."""
    fake = AttributionProm(
        [
            {"job_id": "42", "node": "dgx01", "gpu": "0"},
            {"job_id": "42", "node": "dgx01", "gpu": "3"},
            {"job_id": "42", "node": "dgx02", "gpu": "1"},
        ]
    )
    schema = DCGM.with_scheduler_attribution()
    held = reader(fake, schema).attributed_gpus([FINISHED], T)
    assert held == {"42": (Allocation("dgx01", (0, 3)), Allocation("dgx02", (1,)))}
    assert fake.queries == [
        "max by (job_id, node, gpu) (max_over_time(factoryctl_slurm_gpu_job_info"
        '{job_id=~"42"}[3060000ms]))'
    ]
    note = reader(AttributionProm([]), schema).gpu_counters([FINISHED], T)["42"].note
    assert "no attribution recorded for it (factoryctl_slurm_gpu_job_info)" in note
