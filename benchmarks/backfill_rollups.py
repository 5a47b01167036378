"""What the rollups cost the lab's backfill: CPU time with and without them, same run.

    .venv/bin/python benchmarks/backfill_rollups.py [--gpus 10000] [--minutes 5] [--runs 2]

Each run backfills the same simulated span twice, ``rollups=False`` (the baseline: only
the per-GPU and job series) and with the rollups, into sinks that compute but keep
nothing: none at all ("no sink"), then VictoriaMetrics' JSON import and the OpenMetrics
text for promtool encoded in memory. CPU time (``time.process_time``), so a shared
machine's load skews it less than wall time; the 1-min load average is printed beside it.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

from factoryctl.lab.backfill import backfill
from factoryctl.lab.backfill_sinks import Chunk, Layout, OpenMetricsFile, Sink, VictoriaImport

END = 1_767_225_600.0


class Nothing:
    def write(self, layout: Layout, chunk: Chunk) -> None:
        pass

    def close(self) -> None:
        pass


class EncodeVictoria(VictoriaImport):
    def __init__(self) -> None:  # no server: encode only
        self._heads: dict[str, list[str]] = {}

    def write(self, layout: Layout, chunk: Chunk) -> None:
        self.encode(layout, chunk)

    def close(self) -> None:
        pass


class EncodeOpenMetrics(OpenMetricsFile):
    def __init__(self) -> None:  # into memory, not a file
        self.path = Path(os.devnull)
        self._out = io.StringIO()
        self._heads = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    print(f"{args.gpus} GPUs, {args.minutes:g} min at 15 s; load {os.getloadavg()[0]:.1f}")
    print("| run | rollups | samples | CPU, no sink | CPU, both sinks encoded |")
    print("|---|---|---|---|---|")
    for run in range(1, args.runs + 1):
        for rollups in (False, True):
            cpu = []
            cases: list[list[Sink]] = [[Nothing()], [EncodeVictoria(), EncodeOpenMetrics()]]
            for sinks in cases:
                t = time.process_time()
                result = backfill(sinks, args.gpus, args.minutes, END, rollups=rollups)
                cpu.append(time.process_time() - t)
            print(
                f"| {run} | {'yes' if rollups else 'no'} | {result.samples:,} "
                f"| {cpu[0]:.2f} s | {cpu[1]:.2f} s |"
            )
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
