"""``factoryctl energy`` with a scheduler that forgot finished jobs (Slurm without sacct).

Slurm lists a finished job for MinJobAge (5 minutes) unless slurmdbd answers ``sacct``;
the exporters' attribution still says who held which GPUs in the window.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from urllib.parse import parse_qs

import httpx
import pytest

from factoryctl.model import Allocation, Job, JobState, Node
from factoryctl.telemetry import job_energy
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.job_energy import EnergyReader, JobEnergy
from factoryctl.telemetry.metrics import NATIVE
from factoryctl.telemetry.prometheus_source import (
    FORGOTTEN,
    NOT_ACCOUNTED,
    PrometheusSource,
    SourceOptions,
)
from tests.conftest import Result

T = 1_767_225_600.0


class OneJobScheduler:
    def nodes(self) -> Sequence[Node]:
        return ()

    def jobs(self) -> Sequence[Job]:
        alloc = (Allocation("n1", (0, 1)),)
        return (Job("10", "ada", start_time=T - 1800, allocations=alloc),)


def engine(req: httpx.Request) -> httpx.Response:
    form = parse_qs(req.content.decode())
    q, t = form["query"][0], float(form["time"][0])

    def vec(rows: list[tuple[dict[str, str], float]]) -> httpx.Response:
        result = [{"metric": m, "value": [t, str(v)]} for m, v in rows]
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    if q.startswith("max by (job_id, user, account, node) (max_over_time(factoryctl_job_gpus"):
        held = [("10", "ada", "n1", 2), ("9", "ben", "n2", 1)]
        return vec([({"job_id": j, "user": u, "node": n}, c) for j, u, n, c in held])
    if q.startswith("sum by (job_id) (max_over_time"):
        return vec([({"job_id": "10"}, 5000.0), ({"job_id": "9"}, 900.0)])
    if q.startswith("sum by (job_id) (last_over_time"):
        return vec([({"job_id": "9"}, 100.0)])
    if q.startswith("sum by (job_id) (resets"):
        return vec([])
    raise AssertionError(f"unexpected query {q}")


def test_jobs_the_scheduler_forgot_come_from_the_exporters_attribution() -> None:
    client = PromClient(PromConfig("http://prom:9090"), transport=httpx.MockTransport(engine))
    opts = SourceOptions(schema="native", scrape_interval=15.0)
    src = PrometheusSource(client, OneJobScheduler(), opts)
    jobs, energy = src.energy_report(T - 3600, T)
    by_id = {j.job_id: j for j in jobs}
    assert set(by_id) == {"9", "10"}
    forgotten = by_id["9"]
    assert forgotten.user == "ben" and forgotten.state is JobState.UNKNOWN
    assert forgotten.allocations == (Allocation("n2", (), gpus=1),) and forgotten.gpu_count == 1
    assert forgotten.start_time is None
    assert energy["9"].joules == pytest.approx(800.0) and energy["9"].note == FORGOTTEN
    assert energy["10"].joules == pytest.approx(5000.0) and energy["10"].note == ""


class ManyNotes:
    def snapshot(self) -> object:
        raise AssertionError("not used")

    def energy_report(
        self,
        since: float,
        until: float,
        warnings: list[str] | None = None,
        unavailable: set[str] | None = None,
    ) -> tuple[list[Job], dict[str, JobEnergy]]:
        jobs = [Job(str(i), "ada") for i in range(40)]
        return jobs, {j.job_id: JobEnergy(j.job_id, 1.0, "job-counter", FORGOTTEN) for j in jobs}


def test_one_warning_line_per_note_not_per_job(run_cli: Callable[..., Result]) -> None:
    res = run_cli("energy", "--since", "1h", "-o", "json", source=ManyNotes())
    assert res.status == 0, res.stderr
    doc = json.loads(res.stdout)
    assert len(doc["items"]) == 40
    assert doc["warnings"] == [f"40 jobs (0, 1, 2, 3, 4, ...): {FORGOTTEN}"]
    assert res.stderr.count("\n") == 1


def test_exporters_without_the_per_job_gpu_gauge_fall_back_to_the_attribution() -> None:
    asked: list[str] = []

    def older(req: httpx.Request) -> httpx.Response:
        q = parse_qs(req.content.decode())["query"][0]
        asked.append(q)
        if "factoryctl_job_gpus" in q:  # an older exporter: no such series
            t = float(parse_qs(req.content.decode())["time"][0])
            data = {"resultType": "vector", "result": []}
            return httpx.Response(200, json={"status": "success", "data": data, "t": t})
        if q.startswith("count by (job_id, user, account, node)"):
            q = "max by (job_id, user, account, node) (max_over_time(factoryctl_job_gpus"
            fake = httpx.Request("POST", req.url, data={"query": q, "time": "0"})
            return engine(fake)
        return engine(req)

    client = PromClient(PromConfig("http://prom:9090"), transport=httpx.MockTransport(older))
    opts = SourceOptions(schema="native", scrape_interval=15.0)
    jobs, _ = PrometheusSource(client, None, opts).energy_report(T - 3600, T)
    assert {j.job_id: j.gpu_count for j in jobs} == {"10": 2, "9": 1}
    assert any(q.startswith("count by (job_id, user, account, node)") for q in asked)


class AccountingScheduler(OneJobScheduler):
    """Slurm with slurmdbd: job 9 ended long ago, squeue forgot it, sacct has it."""

    def __init__(self, accounted: Sequence[Job]) -> None:
        self.accounted = accounted

    def jobs_between(self, since: float, until: float) -> Sequence[Job]:
        return self.accounted


def test_jobs_squeue_forgot_come_from_accounting_with_their_account() -> None:
    client = PromClient(PromConfig("http://prom:9090"), transport=httpx.MockTransport(engine))
    opts = SourceOptions(schema="native", scrape_interval=15.0)
    ended = Job("9", "ben", "proj-b", "gpu", state=JobState.COMPLETED, start_time=T - 3000,
                end_time=T - 2000, allocations=(Allocation("n2", (), gpus=1),))  # fmt: skip
    jobs, energy = PrometheusSource(client, AccountingScheduler([ended]), opts).energy_report(
        T - 3600, T
    )
    by_id = {j.job_id: j for j in jobs}
    assert by_id["9"] == ended  # accounting's record: account, start and end known
    assert energy["9"].joules == pytest.approx(800.0) and energy["9"].note == ""
    # Accounting answered without job 9: the attribution still reports it, saying so.
    jobs, energy = PrometheusSource(client, AccountingScheduler([]), opts).energy_report(
        T - 3600, T
    )
    assert energy["9"].note == NOT_ACCOUNTED and "accounting" in NOT_ACCOUNTED
    assert {j.job_id for j in jobs} == {"9", "10"}


# -- why unknown, for many ranges at once ----------------------------------------------
def _samples_between(lo: float, hi: float) -> httpx.MockTransport:
    """An engine whose marker has samples only in [lo, hi]: ``count(count_over_time(m[W]))``
    answers at t when [t - W, t] meets them (instant and range queries alike)."""

    def seen(t: float, window: float) -> bool:
        return t - window <= hi and t >= lo

    def handle(req: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(req.content.decode()).items()}
        window = int(re.search(r"\[(\d+)ms\]", form["query"]).group(1)) / 1000  # type: ignore[union-attr]
        if req.url.path.endswith("/query_range"):
            start, end = float(form["start"]), float(form["end"])
            times = [start + i for i in range(int(end - start) + 1)]
            points = [[t, "1"] for t in times if seen(t, window)]
            data = {
                "resultType": "matrix",
                "result": [{"metric": {}, "values": points}] if points else [],
            }
        else:
            t = float(form["time"])
            result = [{"metric": {}, "value": [t, "1"]}] if seen(t, window) else []
            data = {"resultType": "vector", "result": result}
        return httpx.Response(200, json={"status": "success", "data": data})

    return httpx.MockTransport(handle)


def test_why_unknown_for_an_arrays_ends_in_one_range_query_says_what_instant_queries_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A month's arrays end on hundreds of whole seconds: one range query answers them all,
    exactly as one instant query per end would (a fractional end is still asked alone)."""
    base = 1_767_000_000.0
    jobs = [
        Job(
            str(i),
            "ada",
            state=JobState.COMPLETED,
            start_time=base + i * 7 - 1,
            end_time=base + i * 7,
        )
        for i in range(60)
    ]
    jobs.append(Job("frac", "ada", state=JobState.COMPLETED, start_time=base + 99.5,
                    end_time=base + 100.5))  # fmt: skip
    asked: list[str] = []

    def answers(min_ends: int) -> dict[str, str]:
        monkeypatch.setattr(job_energy, "RUN_MIN_ENDS", min_ends)
        transport = _samples_between(base + 100, base + 200)
        client = PromClient(PromConfig("http://prom:9090"), transport=transport)  # type: ignore[arg-type]
        client._http.event_hooks["request"].append(lambda r: asked.append(r.url.path))
        return EnergyReader(client, NATIVE, 15.0).why_unknown_all(jobs, base + 1000)

    dense = job_energy.RUN_MIN_ENDS
    one_by_one = answers(10**6)
    assert asked.count("/api/v1/query") == 61 and "/api/v1/query_range" not in asked
    asked.clear()
    ranged = answers(dense)
    assert ranged == one_by_one
    assert asked == ["/api/v1/query_range", "/api/v1/query"]  # the fraction, alone
    # Both kinds of answer occur: the check is not vacuous.
    assert len(set(one_by_one.values())) == 2, set(one_by_one.values())
