"""How fast factoryctl reads a big factory from Prometheus, against curl running the same PromQL.

Backfills one hour of a simulated factory (default 10,000 GPUs = 1,250 x 8, 15 s step) into
a fresh VictoriaMetrics on a free port through its JSON import API (``factoryctl.lab.backfill``,
exporter semantics for the per-job energy counters), then times:

* ``factoryctl nodes -o json`` and ``factoryctl jobs -o json`` (a new process each run, as
  a user runs it), against ``curl`` running the very queries factoryctl sent (recorded);
* ``factoryctl energy --since 50m -o json``: per-job energy of every job in the window
  (the backfilled hour ends 10 minutes in the future, so that runs see fresh data).

Usage: ``python benchmarks/prometheus_views.py [--gpus 10000] [--runs 5] [--lead 600]``.
Figures go to docs/benchmarks.md with the machine they were measured on. The 10,000-GPU
case also runs in CI, shorter and on both engines, with every row checked against the
simulator: tests/integration/test_prometheus_10k.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from factoryctl.lab.backfill import STEP, backfill
from factoryctl.lab.backfill_sinks import VictoriaImport, wait_served
from factoryctl.lab.promql_timing import (
    command_seconds,
    curl_seconds,
    recorded_queries,
    telemetry_only_env,
)
from factoryctl.lab.stack import Stack


def timed(argv: list[str], env: dict[str, str]) -> float:
    try:
        return command_seconds(argv, env)[0]
    except RuntimeError as err:
        raise SystemExit(str(err)) from None


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
            # The hour ends ``lead`` seconds from now: the import takes a while, and every
            # timed run must find fresh samples (within 2 scrape intervals) when it runs.
            # At 100,000 GPUs the import took 18 minutes on the shared 2-core VM.
            truth = backfill(
                [VictoriaImport(url)], args.gpus, args.hours * 60, end=time.time() + args.lead
            )
            print(f"backfill: {truth.samples:,} samples in {time.perf_counter() - t0:.0f} s")
            wait_served(url, args.gpus, timeout=120, victoria=True)
            env = telemetry_only_env(url, STEP)
            exe = [sys.executable, "-m", "factoryctl"]
            rows = []
            for label, argv, queries in (
                (
                    "nodes -o json",
                    [*exe, "nodes", "-o", "json"],
                    recorded_queries(url, "nodes", STEP),
                ),
                ("jobs -o json", [*exe, "jobs", "-o", "json"], recorded_queries(url, "jobs", STEP)),
                (
                    "energy --since 50m -o json",
                    [*exe, "energy", "--since", "50m", "-o", "json"],
                    recorded_queries(url, "energy", STEP, energy_window=3000.0),
                ),
            ):
                # Interleaved, one of each per round: a load change on the shared machine
                # then hits both sides alike instead of one block of runs.
                pairs = [(timed(argv, env), curl_seconds(url, queries)) for _ in range(args.runs)]
                ours = statistics.median(p[0] for p in pairs)
                base = statistics.median(p[1] for p in pairs)
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
