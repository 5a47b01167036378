"""Queries stay under VictoriaMetrics' 16 KiB ``-search.maxQueryLen`` at factory scale.

Measured on the 100,000-GPU backfill: ``factoryctl energy`` for the hour put ~6,000 job
ids in one ``job_id=~`` alternation (47,698 bytes) and VictoriaMetrics refused it (422).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

import httpx

from factoryctl.model import Allocation, Job
from factoryctl.telemetry.client import PromClient, PromConfig, label_matcher, label_matchers
from factoryctl.telemetry.job_energy import EnergyReader
from factoryctl.telemetry.metrics import DCGM, NATIVE

T = 1_767_225_600.0
VM_LIMIT = 16384


def reply(result_type: str, result: list[dict[str, object]]) -> httpx.Response:
    return httpx.Response(
        200, json={"status": "success", "data": {"resultType": result_type, "result": result}}
    )


class Recorder:
    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.queries: list[str] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        q = parse_qs(req.content.decode())["query"][0]
        self.queries.append(q)
        if len(q) > VM_LIMIT:  # what VictoriaMetrics 1.79 answers
            return httpx.Response(
                422, json={"status": "error", "errorType": "422", "error": "too long query"}
            )
        t = float(parse_qs(req.content.decode())["time"][0])
        if q.startswith("sum by (job_id) (max_over_time"):
            value = 1000.0
        elif q.startswith("sum by (job_id) (last_over_time"):
            value = 400.0
        elif q.startswith("sum by (job_id) (resets"):
            value = 0.0
        else:
            return reply("matrix", [])
        rows = [{"metric": {"job_id": str(j)}, "value": [t, str(value)]} for j in range(self.jobs)]
        return reply("vector", rows)


def test_matchers_split_under_the_budget_and_keep_every_value() -> None:
    values = [f"gpu{i:05d}" for i in range(3000)]
    parts = label_matchers(values, budget=1000)
    assert len(parts) > 1 and all(len(p) <= 1000 for p in parts)
    assert [v for p in parts for v in p.split("|")] == values


def test_energy_of_thousands_of_jobs_fits_one_query_and_keeps_only_those_asked() -> None:
    rec = Recorder(jobs=8000)
    client = PromClient(PromConfig("http://vm:8428"), transport=httpx.MockTransport(rec))
    wanted = [str(j) for j in range(1000, 7000)]  # 6,000 ids: ~29 KB as one alternation
    out = EnergyReader(client, NATIVE, 15.0).job_counters(T - 3600, T, wanted)
    assert sorted(out) == sorted(wanted)
    assert all(v == 600.0 for v in out.values())
    assert rec.queries and all(len(q) <= VM_LIMIT for q in rec.queries)
    # A handful of ids still filters on the engine.
    few = EnergyReader(client, NATIVE, 15.0).job_counters(T - 3600, T, ["5", "6"])
    assert sorted(few) == ["5", "6"] and 'job_id=~"5|6"' in rec.queries[-1]


def test_gpu_counter_energy_of_a_1500_node_job_splits_its_nodes() -> None:
    rec = Recorder(jobs=0)
    client = PromClient(PromConfig("http://vm:8428"), transport=httpx.MockTransport(rec))
    nodes = [f"gpu-rack{i // 32:03d}-node{i:05d}" for i in range(1500)]
    job = Job(
        "42",
        "ada",
        start_time=T - 600,
        allocations=tuple(Allocation(n, tuple(range(8))) for n in nodes),
    )
    result = EnergyReader(client, DCGM, 15.0).gpu_counters([job], now=T)
    assert result["42"].joules is None  # no samples here; the point is the queries
    assert len(rec.queries) > 3 and all(len(q) <= VM_LIMIT for q in rec.queries)
    parts = [
        set(m.group(1).split("|"))
        for q in rec.queries
        if (m := re.search(r'Hostname=~"([^"]*)"', q))
    ]
    # Every node is asked about, in some part.
    assert all(any(label_matcher([n]) in p for p in parts) for n in nodes)
