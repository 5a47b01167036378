"""How fast ``factoryctl energy`` reports every job of an hour, against curl.

Backfills one simulated hour of only what the energy report reads (the exporters' job
attribution, ``factoryctl_job_gpus``, the per-job energy counters, ``up`` and the
inventory; no per-GPU gauges, so 100,000 GPUs import in ~8 minutes instead of ~17) into a
fresh VictoriaMetrics, then times ``factoryctl energy --since 50m -o json`` (a new process
each run, telemetry only) interleaved with ``curl`` sending the very queries it sent, one
pair per round, and prints each query's own time.

Usage: ``python benchmarks/energy_report.py [--gpus 100000] [--runs 9] [--lead 1500]``;
``--lead`` (seconds past now that the hour ends) must exceed the import time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from factoryctl.lab.backfill import STEP, backfill
from factoryctl.lab.backfill_sinks import Chunk, Layout, VictoriaImport, wait_served
from factoryctl.lab.promql_timing import (
    command_seconds,
    curl_seconds,
    recorded_queries,
    telemetry_only_env,
)
from factoryctl.lab.stack import Stack


class JobSeriesOnly(VictoriaImport):
    """The import without the per-GPU gauges (utilization, power, ...)."""

    def write(self, layout: Layout, chunk: Chunk) -> None:
        chunk.gauges = {}
        super().write(layout, chunk)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--lead", type=float, default=1500.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="factoryctl-energy-") as tmp:
        stack = Stack(Path(tmp), [], ("victoriametrics",)).start()
        try:
            url = stack.running["victoriametrics"].url
            t0 = time.perf_counter()
            truth = backfill(
                [JobSeriesOnly(url)], args.gpus, 60, time.time() + args.lead, rollups=False
            )
            httpx.get(url + "/internal/force_flush")
            print(f"backfill: {truth.samples:,} samples in {time.perf_counter() - t0:.0f} s")
            wait_served(url, args.gpus, victoria=True, timeout=300)
            env = telemetry_only_env(url, STEP)
            argv = [sys.executable, "-m", "factoryctl", "energy", "--since", "50m", "-o", "json"]
            queries = recorded_queries(url, "energy", STEP)
            ours: list[float] = []
            base: list[float] = []
            out = b"{}"
            for _ in range(args.runs):  # interleaved: a load change hits both alike
                seconds, out = command_seconds(argv, env)
                ours.append(seconds)
                base.append(curl_seconds(url, queries))
            jobs = len(json.loads(out)["items"])
            print(f"{args.gpus:,} GPUs, {jobs:,} jobs in the window, {len(queries)} queries")
            print(f"factoryctl energy: median {statistics.median(ours):.2f} s, runs {ours}")
            print(f"curl, same PromQL: median {statistics.median(base):.2f} s, runs {base}")
            print(f"ratio {statistics.median(ours) / statistics.median(base):.2f}x")
            for q in queries:
                print(f"  {curl_seconds(url, [q]):.2f} s  {q.get('query', '')[:100]}")
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
