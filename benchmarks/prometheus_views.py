"""How fast factoryctl reads a big factory from Prometheus, against curl running the same PromQL.

Backfills one hour of a simulated factory (default 10,000 GPUs = 1,250 x 8, 15 s step) into
a fresh VictoriaMetrics on a free port through its JSON import API, then times:

* ``factoryctl nodes -o json`` and ``factoryctl jobs -o json`` (a new process each run, as
  a user runs it), against ``curl`` running the very queries factoryctl sent (recorded);
* ``factoryctl energy --since 50m -o json``: per-job energy of every job in the window
  (the backfilled hour ends 10 minutes in the future, so that runs see fresh data).

Usage: ``python benchmarks/prometheus_views.py [--gpus 10000] [--runs 5] [--lead 600]``. Figures go to
docs/benchmarks.md with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from pathlib import Path

import httpx

from factoryctl.lab.procs import wait_until
from factoryctl.lab.stack import Stack
from factoryctl.sim import SimConfig, SimFactory
from factoryctl.telemetry import schema as m
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions

STEP = 15.0


def backfill(url: str, gpus: int, hours: float, lead: float = 600.0) -> tuple[int, float]:
    """Simulate and import; returns (samples, end time)."""
    # The hour ends ``lead`` seconds from now: the import takes a while, and every timed run
    # must find fresh samples (within 2 scrape intervals) at the moment it runs. At 100,000
    # GPUs the import took 18 minutes on the shared 2-core VM, so 10 minutes was too short.
    now = time.time() + lead
    start = (now - hours * 3600) // STEP * STEP
    sim = SimFactory(SimConfig(nodes=gpus // 8, gpus_per_node=8, seed=1, start_time=start))
    n, gpn, names = sim.gpu_count, sim.gpn, sim.node_names
    steps = int(hours * 3600 / STEP)
    chunk = 20  # samples per JSON line: 5 minutes
    gauges = {
        m.GPU_UTILIZATION: sim.utilization,
        m.GPU_POWER: sim.power,
        m.GPU_ENERGY: sim.energy,
        m.GPU_TEMPERATURE: sim.temperature,
        m.GPU_MEMORY_USED: sim.memory_used,
    }
    buf = {name: [array("d") for _ in range(n)] for name in gauges}
    stamps: list[int] = []
    info: dict[tuple[int, str, str], list[int]] = {}  # (gpu, job, user) -> timestamps
    job_energy: dict[tuple[int, str], tuple[list[int], list[float]]] = {}
    totals: dict[tuple[int, str], float] = {}
    prev = array("d", sim.energy)
    prev_owner = [o.job_id if o else None for o in sim.owner]
    samples = 0
    client = httpx.Client(timeout=120)

    def flush() -> None:
        nonlocal samples
        lines = []
        for name, per_gpu in buf.items():
            for g in range(n):
                lab = {
                    "__name__": name,
                    "node": names[g // gpn],
                    "gpu": str(g % gpn),
                    "uuid": sim.uuids[g],
                }
                lines.append(
                    json.dumps({"metric": lab, "values": list(per_gpu[g]), "timestamps": stamps})
                )
                samples += len(stamps)
                per_gpu[g] = array("d")
        for g in range(n):
            lab = {
                "__name__": m.GPU_UP,
                "node": names[g // gpn],
                "gpu": str(g % gpn),
                "uuid": sim.uuids[g],
            }
            lines.append(
                json.dumps({"metric": lab, "values": [1] * len(stamps), "timestamps": stamps})
            )
            inv = dict(lab, __name__=m.GPU_INFO, model=sim.config.spec.model)
            lines.append(
                json.dumps({"metric": inv, "values": [1] * len(stamps), "timestamps": stamps})
            )
            samples += 2 * len(stamps)
        for (g, job, user), ts in info.items():
            lab = {
                "__name__": m.GPU_JOB_INFO,
                "node": names[g // gpn],
                "gpu": str(g % gpn),
                "uuid": sim.uuids[g],
                "job_id": job,
                "user": user,
            }
            lines.append(json.dumps({"metric": lab, "values": [1] * len(ts), "timestamps": ts}))
            samples += len(ts)
        info.clear()
        for (i, job), (ts, vals) in job_energy.items():
            lab = {"__name__": m.JOB_ENERGY, "node": names[i], "job_id": job}
            lines.append(json.dumps({"metric": lab, "values": vals, "timestamps": ts}))
            samples += len(ts)
        job_energy.clear()
        stamps.clear()
        resp = client.post(url + "/api/v1/import", content="\n".join(lines).encode())
        resp.raise_for_status()

    for _ in range(steps):
        sim.advance(STEP, STEP)
        ts = int(sim.now * 1000)
        stamps.append(ts)
        for name, values in gauges.items():
            per_gpu = buf[name]
            for g in range(n):
                per_gpu[g].append(values[g])
        # Exporter semantics: a step's energy goes to the job that held the GPU at its start.
        touched: set[tuple[int, str]] = set()
        for g in range(n):
            cur = sim.energy[g]
            delta = cur - prev[g] if cur >= prev[g] else cur
            prev[g] = cur
            job = prev_owner[g]
            if job is not None:
                key = (g // gpn, job)
                totals[key] = totals.get(key, 0.0) + delta
                touched.add(key)
            owner = sim.owner[g]
            prev_owner[g] = owner.job_id if owner else None
            if owner is not None:
                info.setdefault((g, owner.job_id, owner.user), []).append(ts)
                touched.add((g // gpn, owner.job_id))
        for key in touched:
            tsl, vals = job_energy.setdefault(key, ([], []))
            tsl.append(ts)
            vals.append(totals.get(key, 0.0))
        if len(stamps) >= chunk:
            flush()
    if stamps:
        flush()
    return samples, sim.now


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, env=env, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.decode()[-500:]}")
    return elapsed


def recorded_queries(url: str, view: str | None, energy: bool = False) -> list[dict[str, str]]:
    sent: list[dict[str, str]] = []
    inner = httpx.HTTPTransport()

    class Recorder(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            from urllib.parse import parse_qsl

            sent.append({"path": request.url.path, **dict(parse_qsl(request.content.decode()))})
            return inner.handle_request(request)

    client = PromClient(PromConfig(url, timeout=120), transport=Recorder())
    src = PrometheusSource(client, None, SourceOptions(schema="native", scrape_interval=STEP))
    if energy:
        now = time.time()
        src.energy_report(now - 3000, now)
    elif view == "nodes":
        src.node_rows_for_view()  # what `factoryctl nodes` calls
    elif view == "jobs":
        src.job_rows_for_view()  # what `factoryctl jobs` calls (no scheduler)
    else:
        src.snapshot(view=view)
    return sent


def curl_time(url: str, queries: list[dict[str, str]]) -> float:
    t0 = time.perf_counter()
    for q in queries:
        args = ["curl", "-sf", "-o", "/dev/null", url + q["path"]]
        for k, v in q.items():
            if k != "path":
                args += ["--data-urlencode", f"{k}={v}"]
        subprocess.run(args, check=True)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", type=int, default=10_000)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--lead",
        type=float,
        default=600.0,
        help="Seconds past now that the backfilled hour ends; must exceed the import time "
        "(~50 s at 10k GPUs, 18 min at 100k on a loaded 2-core VM: use 2400 there).",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="factoryctl-bench-") as tmp:
        stack = Stack(Path(tmp), [], ("victoriametrics",)).start()
        try:
            url = stack.running["victoriametrics"].url
            t0 = time.perf_counter()
            samples, _ = backfill(url, args.gpus, args.hours, args.lead)
            urllib.request.urlopen(url + "/internal/force_flush").read()
            print(f"backfill: {samples:,} samples in {time.perf_counter() - t0:.0f} s")
            client = PromClient(PromConfig(url))
            wait_until(
                lambda: (
                    (client.query(f"count({m.GPU_UP})", time.time()).scalar() or 0) >= args.gpus
                ),
                120,
                "imported data to become searchable",
                interval=1.0,
            )
            env = {
                **os.environ,
                "FACTORYCTL_PROMETHEUS_URL": url,
                "FACTORYCTL_SCHEDULER_TYPE": "none",
                "FACTORYCTL_PROMETHEUS_SCHEMA": "native",
                "FACTORYCTL_PROMETHEUS_SCRAPE_INTERVAL": str(STEP),
                "FACTORYCTL_PROMETHEUS_TIMEOUT": "120",
            }
            exe = [sys.executable, "-m", "factoryctl"]
            rows = []
            for label, argv, queries in (
                ("nodes -o json", [*exe, "nodes", "-o", "json"], recorded_queries(url, "nodes")),
                ("jobs -o json", [*exe, "jobs", "-o", "json"], recorded_queries(url, "jobs")),
                (
                    "energy --since 50m -o json",
                    [*exe, "energy", "--since", "50m", "-o", "json"],
                    recorded_queries(url, None, energy=True),
                ),
            ):
                ours = statistics.median(timed(argv, env) for _ in range(args.runs))
                base = statistics.median(curl_time(url, queries) for _ in range(args.runs))
                rows.append((label, ours, base, len(queries)))
            startup = statistics.median(timed([*exe, "--version"], env) for _ in range(args.runs))
            print(f"\n{args.gpus:,} GPUs, {args.hours:g} h at {STEP:g} s, VictoriaMetrics 1.79")
            print(f"python startup (factoryctl --version): {startup:.2f} s")
            print("| command | factoryctl | curl, same PromQL | queries | ratio |")
            print("|---|---|---|---|---|")
            for label, ours, base, nq in rows:
                print(
                    f"| `factoryctl {label}` | {ours:.2f} s | {base:.2f} s | {nq} | {ours / base:.2f}x |"
                )
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
