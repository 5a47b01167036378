"""The scheduler at 12,500 nodes: the Slurm calls, ``nodes -o json``, the console poll and
a 1,000-node drain plan, before and after, against one real slurmctld.

    git archive <base-sha> src | tar -x -C /tmp/schedbase
    .venv/bin/python benchmarks/scheduler_scale.py --baseline /tmp/schedbase/src \\
        [--release bookworm --release trixie] [--nodes 12500] [--runs 3] [--json]

For each release a ``factoryctl.lab.slurm`` cluster declares ``--nodes`` nodes of 8 GPUs
(Gres) with ``--live`` slurmd running (``slurmd -N``) and the rest DOWN, as
``drain_bench.py`` does with 1,000. It then holds ``--jobs`` jobs: ``--live`` x
``--cpus`` of them running (one CPU each; ``--gpu-jobs`` of them with a GPU), the rest
pending and held (``sbatch --hold``: the scheduler never tries to place them, which
would otherwise cost slurmctld its time at every pass). Every daemon is stopped by the
PID it was started with, even when a case fails.

Cases, in the same run against the same slurmctld:

* the Slurm calls alone: the JSON node list (``sinfo --json`` on 22.05, ``scontrol
  --json show node`` from 23.02), ``squeue --json --states=all``, the grouped ``sinfo
  -O`` that the node cache reads at every poll, and the two reads of the node list
  without JSON (``slurm_sinfo``: every field grouped, and ``scontrol -o show node``),
  and the three of the job list without the pending jobs' JSON (``slurm_squeue``);
* ``factoryctl --scheduler slurm nodes -o json`` (a fresh process each run);
* ``factoryctl --scheduler slurm drain 'gpu[00001-01000]' --dry-run --force --reason x
  -o json``: the 1,000-node plan (``--force``: past the blast-radius guard, which would
  refuse it before the plan is printed);
* the console poll: ``Environment.source().snapshot()`` as ``factoryctl top`` opens it
  with ``--scheduler slurm``, polled ``--polls`` times back to back in one process: the
  first poll, then the median of the others; the time spent waiting on Slurm's commands
  is measured beside (the rest is ours). With Prometheus configured the console reads
  the scheduler through the same object, so this is the scheduler's share of that poll.

Each factoryctl case runs with ``--baseline`` (the code at the branch point, by
PYTHONPATH) and with this checkout's ``src``, interleaved run by run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from factoryctl.lab.debian import DebianRelease, host_codename, release
from factoryctl.lab.procs import wait_until
from factoryctl.lab.slurm import SlurmCluster
from factoryctl.scheduler.slurm_sinfo import SCONTROL_NODES_ARGV, SINFO_NODES_ARGV
from factoryctl.scheduler.slurm_squeue import (
    SCONTROL_JOBS_ARGV,
    SQUEUE_JSON_NOT_PENDING_ARGV,
    SQUEUE_LIST_ARGV,
)

HERE = Path(__file__).resolve().parent.parent / "src"

# Run inside a fresh interpreter whose PYTHONPATH is the code under test: the console's
# own path from settings to snapshot, timing Slurm's commands by wrapping the runner.
POLL = r"""
import json, sys, time
from factoryctl.cli.env import Environment
env = Environment()
env.load(None)
env.settings["scheduler"]["type"] = "slurm"
env.settings["prometheus"]["url"] = ""
source = env.source()
backend = env.scheduler().inner
inner_run, in_slurm = backend.runner, [0.0]
def runner(argv, e, timeout):
    t = time.perf_counter()
    try:
        return inner_run(argv, e, timeout)
    finally:
        in_slurm[0] += time.perf_counter() - t
backend.runner = runner
polls = []
for _ in range(int(sys.argv[1])):
    in_slurm[0] = 0.0
    t = time.perf_counter()
    snap = source.snapshot()
    polls.append({"s": time.perf_counter() - t, "slurm_s": in_slurm[0],
                  "nodes": len(snap.nodes), "jobs": len(snap.jobs)})
print(json.dumps({"polls": polls, "calls": [" ".join(c[:3]) for c in backend.calls]}))
"""


def start(args: argparse.Namespace, rel: DebianRelease) -> SlurmCluster:
    cluster = SlurmCluster(
        nodes=args.live,
        extra_nodes=args.nodes - args.live,
        gpus_per_node=8,
        cpus_per_node=args.cpus,
        release=rel,
    )
    cluster.start(timeout=300)
    return cluster


def load_jobs(cluster: SlurmCluster, args: argparse.Namespace) -> dict[str, int]:
    running = args.live * args.cpus

    def submit(i: int) -> str:
        if i < args.gpu_jobs:
            return cluster.sbatch("-n1", "--gres=gpu:1", script="sleep 7200")
        if i < running:
            return cluster.sbatch("-n1", script="sleep 7200")
        return cluster.sbatch("-n1", "--hold", script="sleep 7200")

    # Two at a time: the machine has two cores, and other work on it.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(submit, range(args.jobs)))

    def count(state: str) -> int:
        out = cluster.run(["squeue", "-h", "-t", state, "-o", "%i"], check=True, timeout=120)
        return len(out.stdout.split())

    wait_until(lambda: count("R") >= running, 300, f"{running} jobs running", interval=1.0)
    return {"running": count("R"), "pending": count("PD")}


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} failed: {result.stderr.strip()[-300:]}")
    return elapsed, result.stdout


def with_code(env: dict[str, str], src: Path) -> dict[str, str]:
    return dict(env, PYTHONPATH=str(src), HOME=env.get("HOME", "/root"))


def measure(cluster: SlurmCluster, args: argparse.Namespace) -> dict[str, Any]:
    env = cluster.env
    new = cluster.release.slurm_version() >= (23, 2)
    raw_cmds = {
        "scontrol --json show node" if new else "sinfo --json": (
            ["scontrol", "--json", "show", "node"] if new else ["sinfo", "--json"]
        ),
        "squeue --json --states=all": ["squeue", "--json", "--states=all"],
        "sinfo -O (grouped states)": [
            "sinfo",
            "--noheader",
            "--all",
            "-O",
            "NodeList:|,StateComplete:|,GresUsed:|,Reason:",
        ],
        # The node list without JSON (slurm_sinfo): every field grouped, and the index.
        "sinfo -O (grouped node list)": list(SINFO_NODES_ARGV),
        "scontrol -o show node": list(SCONTROL_NODES_ARGV),
        # The job list without the pending jobs' JSON (slurm_squeue).
        "squeue -O (job list)": list(SQUEUE_LIST_ARGV),
        "squeue --json (not pending)": list(SQUEUE_JSON_NOT_PENDING_ARGV),
        "scontrol -o show job": list(SCONTROL_JOBS_ARGV),
    }
    raw: dict[str, list[float]] = {k: [] for k in raw_cmds}
    sizes: dict[str, int] = {}
    for _ in range(args.runs):
        for label, argv in raw_cmds.items():
            real = cluster.release.argv(argv[0], *argv[1:])
            elapsed, out = timed(real, dict(env, SLURM_TIME_FORMAT="%s"))
            raw[label].append(elapsed)
            sizes[label] = len(out)
    codes = {"before": Path(args.baseline), "after": HERE} if args.baseline else {"after": HERE}
    fctl = [sys.executable, "-m", "factoryctl", "--scheduler", "slurm"]
    hl = f"{cluster.prefix}[{1:05d}-{1000:05d}]"
    cases: dict[str, dict[str, list[float]]] = {c: {} for c in codes}
    polls: dict[str, list[dict[str, Any]]] = {c: [] for c in codes}
    calls: dict[str, list[str]] = {}
    for _ in range(args.runs):
        for code, src in codes.items():
            cenv = with_code(env, src)
            elapsed, out = timed([*fctl, "nodes", "-o", "json"], cenv)
            items = json.loads(out)["items"]
            assert len(items) == args.nodes, f"{code}: nodes listed {len(items)}"
            cases[code].setdefault("nodes -o json", []).append(elapsed)
            argv = [*fctl, "drain", hl, "--dry-run", "--force", "--reason", "x", "-o", "json"]
            elapsed, out = timed(argv, cenv)
            plan = json.loads(out)
            assert len(plan["nodes"]) == 1000, f"{code}: plan of {len(plan['nodes'])} nodes"
            cases[code].setdefault("drain 1,000 nodes --dry-run", []).append(elapsed)
            _, out = timed([sys.executable, "-c", POLL, str(args.polls)], cenv)
            result = json.loads(out)
            for p in result["polls"]:
                assert p["nodes"] == args.nodes, f"{code}: poll saw {p['nodes']} nodes"
            polls[code].extend(result["polls"])
            calls[code] = result["calls"][: 2 * args.polls]
    summary: dict[str, Any] = {
        "raw": {k: {"median_s": statistics.median(v), "bytes": sizes[k]} for k, v in raw.items()},
        "cases": {},
        "calls": calls,
    }
    for code in codes:
        out_cases = {k: statistics.median(v) for k, v in cases[code].items()}
        first = [p for i, p in enumerate(polls[code]) if i % args.polls == 0]
        rest = [p for i, p in enumerate(polls[code]) if i % args.polls != 0]
        for label, group in (("first poll", first), ("next polls", rest)):
            if group:
                out_cases[f"console {label}"] = statistics.median(p["s"] for p in group)
                out_cases[f"console {label}: in Slurm"] = statistics.median(
                    p["slurm_s"] for p in group
                )
        summary["cases"][code] = out_cases
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", action="append", help="bookworm, trixie, forky")
    parser.add_argument("--nodes", type=int, default=12500)
    parser.add_argument("--live", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=16, help="CPUs per node: running jobs")
    parser.add_argument("--gpu-jobs", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--polls", type=int, default=5)
    parser.add_argument("--baseline", help="src directory of the code to compare against")
    parser.add_argument(
        "--json", action="store_true", help="Print each release's results as a JSON line."
    )
    args = parser.parse_args()
    releases = [release(r) for r in (args.release or [host_codename()])]
    for rel in releases:
        cluster = start(args, rel)
        try:
            jobs = load_jobs(cluster, args)
            major, minor = rel.slurm_version()
            load_before = os.getloadavg()[0]
            result = {"release": f"{major}.{minor:02d}", "jobs": jobs, **measure(cluster, args)}
            # The machine is shared: the 1-min load average beside every figure.
            result["load1"] = {"before": load_before, "after": os.getloadavg()[0]}
        finally:
            cluster.stop()
        if args.json:  # one line per release as it ends: a later release's failure keeps it
            print(json.dumps(result), flush=True)
        else:
            report(result, args)
    return 0


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    load1 = r["load1"]
    print(
        f"\nSlurm {r['release']}: {args.nodes} nodes declared, {args.live} slurmd;"
        f" jobs running {r['jobs']['running']}, pending {r['jobs']['pending']};"
        f" load average (1 min) {load1['before']:.2f} to {load1['after']:.2f};"
        f" medians of {args.runs} runs"
    )
    for label, v in r["raw"].items():
        print(f"  {label:<40} {v['median_s'] * 1000:>7.0f} ms  {v['bytes'] / 1e6:>6.1f} MB")
    codes = list(r["cases"])
    print(f"  {'factoryctl':<40} " + " ".join(f"{c:>10}" for c in codes))
    for label in r["cases"][codes[-1]]:
        vals = [r["cases"][c].get(label) for c in codes]
        cells = " ".join(f"{v * 1000:>8.0f}ms" if v is not None else f"{'-':>10}" for v in vals)
        ratio = (
            f"  {vals[0] / vals[-1]:.1f}x"
            if len(vals) > 1 and vals[0] and vals[-1] and ": in Slurm" not in label
            else ""
        )
        print(f"  {label:<40} {cells}{ratio}")
    for code, argv in r["calls"].items():
        print(f"  console's Slurm calls ({code}): {'; '.join(dict.fromkeys(argv))}")


if __name__ == "__main__":
    sys.exit(main())
