"""A finished job's GPU count from its TRES: Slurm drops its GPU indices when it ends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factoryctl.model import JobState
from factoryctl.scheduler.slurm_json import parse_jobs
from factoryctl.scheduler.slurm_parse import tres_gpus


@pytest.mark.parametrize(
    ("tres", "gpus"),
    [
        ("gres:gpu:2", 2),  # 22.05 tres_per_node
        ("gres/gpu:4", 4),  # 24.11+ tres_per_node
        ("gres/gpu:h100:8", 8),
        ("cpu=8,mem=64G,node=2,billing=8,gres/gpu=8,gres/gpu:h100=8", 8),  # tres_alloc_str
        ("cpu=1,node=1,billing=1", None),  # names no GPU: unknown, not 0
        ("", None),
    ],
)
def test_gpus_from_tres(tres: str, gpus: int | None) -> None:
    assert tres_gpus(tres) == gpus


@pytest.mark.parametrize(
    ("tres_per_node", "tres_alloc", "shape"),
    [
        ("gres:gpu:2", "cpu=2,node=2,billing=2", "22.05"),
        ("gres/gpu:2", "cpu=2,node=2,billing=2,gres/gpu=4", "24.11"),
        (None, "cpu=2,node=2,billing=2,gres/gpu=4", "24.11"),
    ],
)
def test_finished_job_counts_its_gpus_from_tres(
    tres_per_node: str | None, tres_alloc: str, shape: str
) -> None:
    """Slurm answers ``gres_detail: []`` once a job ended: its GPU count is in its TRES."""
    name = "rest_v0.0.38_jobs_22.05.json" if shape == "22.05" else "scontrol_job_24.11.json"
    doc = json.loads((Path(__file__).parents[1] / "fixtures" / "slurm" / name).read_text())
    job = dict(next(j for j in doc["jobs"] if str(j["job_id"]) == "2"))
    job["job_state"] = "COMPLETED" if shape == "22.05" else ["COMPLETED"]
    job["gres_detail"] = []
    job["tres_alloc_str"] = tres_alloc
    if tres_per_node is None:
        job.pop("tres_per_node", None)
    else:
        job["tres_per_node"] = tres_per_node
    doc["jobs"] = [job]
    (parsed,) = parse_jobs(json.dumps(doc), "squeue --json")
    assert parsed.state is JobState.COMPLETED
    assert not list(parsed.gpu_keys())
    assert [a.count for a in parsed.allocations] == [2, 2]
    assert parsed.gpu_count == 4
