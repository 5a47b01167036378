"""What the console's frame costs per poll on a summarized snapshot at 100,000 GPUs, now
that it also feeds the sparklines and the power layer from the node rollups.

    git archive main src | tar -x -C /tmp/framebase      # "before"
    .venv/bin/python benchmarks/summarized_frame.py --baseline /tmp/framebase/src

The snapshot is ``summaries.summarized`` of a 12,500 x 8 simulator (what a rollup-reading
source returns: 12,500 node summaries, the running jobs' summaries, the problem GPUs).
``build_frame`` runs ``--polls`` times with its history kept from poll to poll, as the
console's poller does; the per-GPU frame of the same factory is the baseline in the same
run, and so is, where the tree has it, the Overview's frame of the summarized snapshot
without table rows (``build_frame(..., rows=False)``; "no rows"). Wall and CPU time are
both given. Each side runs in its own process, alternating, ``--runs`` times; the 1-min load
average is printed beside each figure (the machine is shared).
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import replace
from typing import Any

HOUR = 1_780_000_000.0 // 3600 * 3600
NOW = HOUR + 60


def measure(nodes: int, polls: int) -> dict[str, float]:
    from factoryctl.summaries import summarized
    from factoryctl.telemetry.demo import DemoSource
    from factoryctl.tui.frame import build_frame
    from factoryctl.tui.history import History

    source = DemoSource.create(nodes=nodes, gpus_per_node=8, seed=1, now=NOW, warmup=0)
    full = source.snapshot()
    small = summarized(full)
    out = {}
    sides = [("summarized", small, True), ("per_gpu", full, True)]
    if "rows" in inspect.signature(build_frame).parameters:  # a tree from before has not
        sides.append(("no_rows", small, False))
    for name, snap, rows in sides:
        history, times, cpu = History(), [], []
        for k in range(polls + 1):
            t, c = time.perf_counter(), time.process_time()
            frame = build_frame(snap, history, NOW + k, **({} if rows else {"rows": False}))
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            history = frame.history
        # The first poll builds the columns' lookups: left out. CPU time beside wall time:
        # on a shared machine the wall time mostly measures the other processes.
        out[name] = statistics.median(times[1:])
        out[f"{name}_cpu"] = statistics.median(cpu[1:])
    out["history_mib"] = history_memory(small)
    out["load"] = os.getloadavg()[0]
    return out


def history_memory(snap: Any) -> float:
    """MiB the console's history holds after 60 summarized polls (tracemalloc)."""
    from factoryctl.tui.frame import build_frame
    from factoryctl.tui.history import History

    history = build_frame(snap, History(), NOW).history
    tracemalloc.start()
    for k in range(1, 61):
        history = build_frame(replace(snap, time=snap.time + k), history, NOW + k).history
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return held / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=12500)
    parser.add_argument("--polls", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", help="a src/ tree to measure as 'before'")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.nodes, args.polls)))
        return
    sides = {"after": None}
    if args.baseline:
        sides = {"before": args.baseline, "after": None}
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    print(f"# {args.nodes:,} nodes x 8 GPUs, build_frame median of {args.polls} polls per run")
    for run in range(args.runs):
        for side, src in sides.items():
            env = {**os.environ, "PYTHONPATH": src or here}
            argv = [sys.executable, __file__, "--child", "--nodes", str(args.nodes)]
            argv += ["--polls", str(args.polls)]
            got = json.loads(subprocess.run(argv, env=env, check=True, capture_output=True).stdout)
            no_rows = (
                f"summarized, no rows {got['no_rows'] * 1000:6.1f} ms "
                f"(cpu {got['no_rows_cpu'] * 1000:6.1f}) "
                if "no_rows" in got
                else ""
            )
            print(
                f"run {run + 1} {side:6}: summarized {got['summarized'] * 1000:6.1f} ms "
                f"(cpu {got['summarized_cpu'] * 1000:6.1f}), per-GPU "
                f"{got['per_gpu'] * 1000:6.1f} ms (cpu {got['per_gpu_cpu'] * 1000:6.1f}) "
                f"{no_rows}history after 60 summarized polls {got['history_mib']:.1f} MiB "
                f"(load {got['load']:.1f})"
            )


if __name__ == "__main__":
    main()
