"""``--scheduler none`` on a dcgm-exporter site whose Prometheus holds ``factoryctl
scheduler-exporter``'s attribution history (issue 12 leftovers): ``energy --by job|user|
account`` and ``jobs --all`` give finished jobs' energy from that history, with start and
end inferred from the series' first and last samples (said so, with the resolution), and
what the history cannot know (partition) null and in ``unavailable``. Before: ``energy``
exited 4 ("needs the scheduler's allocations") and ``jobs --all`` listed the running job
only.

Prometheus is a recorded fake answering each query the report makes (PromQL shapes
matched, not evaluated): two GPUs of gpu01 draw 1000 W each, a linear counter in mJ. The
real engine path is tests/integration/test_finished_job_energy.py. Cost: ~0.3 s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.metrics import DCGM_ENERGY, DCGM_POWER
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions
from factoryctl.telemetry.recorded_jobs import MAX_RESOLUTION, resolution
from factoryctl.telemetry.schema import SLURM_GPU_JOB_INFO, SLURM_JOBS_GPU_INDICES_UNKNOWN
from tests.conftest import FROZEN_NOW, Result

Run = Callable[..., Result]
WATTS = 1000.0
BASE = FROZEN_NOW - 7200  # the counters' zero
# job -> (user, account, GPUs on gpu01, first sample, last sample)
JOBS = {
    "7": ("ada", "proj-a", (0, 1), FROZEN_NOW - 3600, FROZEN_NOW - 3300),
    "8": ("ben", "proj-b", (2,), FROZEN_NOW - 600, FROZEN_NOW - 1),  # running
}


def _vector(rows: list[tuple[dict[str, str], float]], at: float) -> dict[str, Any]:
    result = [{"metric": m, "value": [at, repr(v)]} for m, v in rows]
    return {"resultType": "vector", "result": result}


def _matrix(q: str, at: float) -> dict[str, Any]:
    """Raw energy (mJ) and power samples, every second, of the GPUs the selector names."""
    span = int(re.search(r"\[(\d+)ms\]$", q).group(1)) / 1000  # type: ignore[union-attr]
    gpus = [int(g) for g in re.search(r'gpu=~"([0-9|]+)"', q).group(1).split("|")]  # type: ignore[union-attr]
    times = [at - span + i for i in range(int(span) + 1)]
    out = []
    for gpu in gpus:
        labels = {"Hostname": "gpu01", "gpu": str(gpu)}
        energy = [[t, repr((t - BASE) * WATTS * 1000)] for t in times]
        power = [[t, repr(WATTS)] for t in times]
        out.append({"metric": {**labels, "__name__": DCGM_ENERGY}, "values": energy})
        out.append({"metric": {**labels, "__name__": DCGM_POWER}, "values": power})
    return {"resultType": "matrix", "result": out}


def _answer(q: str, at: float) -> dict[str, Any]:
    def per_job(value: Callable[[tuple[Any, ...]], float]) -> dict[str, Any]:
        return _vector([({"job_id": j}, value(v)) for j, v in JOBS.items()], at)

    if q.startswith("topk(1,"):
        return _vector([({"Hostname": "gpu01", "gpu": "0"}, 50.0)], at)
    if SLURM_JOBS_GPU_INDICES_UNKNOWN in q:
        # Scraped (one series), and no running job without GPU indices (its sum).
        return _vector([({}, 1.0 if q.startswith("count(") else 0.0)], at)
    if q.startswith("count by (job_id, node, user, account)"):
        rows = [({"job_id": j, "node": "gpu01", "user": u, "account": a}, float(len(g)))
                for j, (u, a, g, _s, _e) in JOBS.items()]  # fmt: skip
        return _vector(rows, at)
    if q.startswith("min by (job_id) (min_over_time(timestamp("):
        return per_job(lambda v: v[3])
    if q.startswith("max by (job_id) (max_over_time(timestamp("):
        return per_job(lambda v: v[4])
    if q.startswith(f"max by (job_id, node, gpu) (max_over_time({SLURM_GPU_JOB_INFO}"):
        rows = [({"job_id": j, "node": "gpu01", "gpu": str(g)}, 1.0)
                for j, (_u, _a, gpus, _s, _e) in JOBS.items() for g in gpus]  # fmt: skip
        return _vector(rows, at)
    if q.startswith('{__name__=~"') and q.endswith("ms]"):
        return _matrix(q, at)
    if q.startswith("resets(") or q.startswith("sum(clamp_min"):
        return _vector([], at)
    if q.startswith("count(count_over_time("):
        return _vector([({}, 1.0)], at)
    # The jobs view's snapshot: four GPUs reporting, job 8 holding GPU 2 now.
    gpus = [{"Hostname": "gpu01", "gpu": str(g), "UUID": f"GPU-{g}"} for g in range(4)]
    if q.startswith("last_over_time(DCGM_FI_DEV_GPU_UTIL["):
        return _vector([(g, 50.0) for g in gpus], at)
    if q.startswith('{__name__=~"'):
        names = re.search(r'"(.*)"', q).group(1).split("|")  # type: ignore[union-attr]
        return _vector([({**g, "__name__": n}, 50.0) for g in gpus for n in names], at)
    if q.startswith(f"group by (job_id, node, gpu, user) (last_over_time({SLURM_GPU_JOB_INFO}"):
        return _vector([({"job_id": "8", "node": "gpu01", "gpu": "2", "user": "ben"}, 1.0)], at)
    raise AssertionError(f"a query this fake does not know: {q}")


def _prometheus(asked: list[str]) -> httpx.MockTransport:
    def handle(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/targets"):
            return httpx.Response(200, json={"status": "success", "data": {"activeTargets": []}})
        form = {k: v[0] for k, v in parse_qs(req.content.decode()).items()}
        asked.append(form["query"])
        data = _answer(form["query"], float(form["time"]))
        return httpx.Response(200, json={"status": "success", "data": data})

    return httpx.MockTransport(handle)


def _source(asked: list[str]) -> PrometheusSource:
    client = PromClient(PromConfig("http://prom:9090"), transport=_prometheus(asked))  # type: ignore[arg-type]
    options = SourceOptions("dcgm", scrape_interval=1.0, search_delay=0.0)
    return PrometheusSource(client, options=options, clock=lambda: FROZEN_NOW)


def test_energy_by_job_from_the_scheduler_exporters_history(run_cli: Run) -> None:
    asked: list[str] = []
    res = run_cli("energy", "--since", "2h", "-o", "json", source=_source(asked))
    assert res.status == 0, res.stderr
    doc = json.loads(res.stdout)
    rows = {i["job_id"]: i for i in doc["items"]}
    assert set(rows) == {"7", "8"}
    done = rows["7"]
    # 2 GPUs x 1000 W over the inferred [first, last] sample: 300 s.
    assert done["energy_joules"] == pytest.approx(2 * WATTS * 300, rel=1e-6)
    assert (done["start_time"], done["end_time"]) == (JOBS["7"][3], JOBS["7"][4])
    assert (done["user"], done["account"], done["gpus"]) == ("ada", "proj-a", 2)
    # Running (named within two scrapes of now): energy from its first sample to now.
    assert rows["8"]["end_time"] is None
    assert rows["8"]["energy_joules"] == pytest.approx(WATTS * 600, rel=1e-6)
    # What Slurm alone knows is null and named.
    assert done["partition"] is None and "partition" in doc["unavailable"]
    assert doc["total_joules"] == pytest.approx(2 * WATTS * 300 + WATTS * 600, rel=1e-6)
    # The inference is said, once per kind of note, with its resolution.
    assert doc["warnings"] == [
        "job 7: no scheduler: start and end inferred from the first and last samples of"
        f" {SLURM_GPU_JOB_INFO} (resolution 1 s)",
        "job 8: no scheduler: start inferred from the first and last samples of"
        f" {SLURM_GPU_JOB_INFO} (resolution 1 s)",
    ]
    first = next(q for q in asked if "min_over_time(timestamp(" in q)
    assert first.endswith("[7200000ms:1000ms]))")


@pytest.mark.parametrize(("by", "key", "want"), [("user", "user", "ada"),
                                                 ("account", "account", "proj-a")])  # fmt: skip
def test_energy_by_user_and_account(run_cli: Run, by: str, key: str, want: str) -> None:
    res = run_cli("energy", "--since", "2h", "--by", by, "-o", "json", source=_source([]))
    assert res.status == 0, res.stderr
    groups = {i[key]: i for i in json.loads(res.stdout)["items"]}
    assert groups[want]["energy_joules"] == pytest.approx(2 * WATTS * 300, rel=1e-6)
    assert groups[want]["jobs"] == 1


def test_jobs_all_lists_the_finished_job_with_its_energy(run_cli: Run) -> None:
    res = run_cli("jobs", "--all", "-o", "json", source=_source([]))
    assert res.status == 0, res.stderr
    doc = json.loads(res.stdout)
    rows = {i["job_id"]: i for i in doc["items"]}
    assert "7" in rows, doc
    assert rows["7"]["energy_joules"] == pytest.approx(2 * WATTS * 300, rel=1e-6)
    assert rows["7"]["state"] == "unknown" and rows["7"]["gpus"] == 2
    # No scheduler: the partition and the name are null for every job, and named.
    assert {(r["partition"], r["name"]) for r in rows.values()} == {(None, None)}
    assert {"partition", "name"} <= set(doc["unavailable"])
    assert "inferred from the first and last samples" in " ".join(doc["warnings"])
    # Without --all: the running job only, as before.
    plain = json.loads(run_cli("jobs", "-o", "json", source=_source([])).stdout)
    assert "7" not in {i["job_id"] for i in plain["items"]}


def test_resolution_follows_the_range_and_stays_within_the_lookback() -> None:
    assert resolution(0, 3600, 15.0) == 15.0
    assert resolution(0, 30 * 86400, 15.0) == 236.0  # 11,000 steps at most
    assert resolution(0, 365 * 86400, 15.0) == MAX_RESOLUTION
