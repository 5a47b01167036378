"""How fast ``factoryctl energy --since 30d --by account`` reports 10,000 finished jobs
from Slurm's accounting, against the ``sacct`` call alone.

Starts a lab cluster of one release with slurmdbd and MariaDB (``--release``, default the
host's), runs two job arrays (``sbatch --array`` of ``--wrap true`` with one GPU each, in
accounts proj-a and proj-b; MaxArraySize and MaxJobCount raised for them) and times how
long Slurm takes to run them all, then starts the release's Prometheus with
no data (the native schema named; the ``true`` jobs held no GPU long enough to be
attributed, so each job's energy is reported unknown, and the report's every query for
10,000 jobs is still made). Then, interleaved, one pair per round: ``sacct --json -X --allusers`` over
the 30 days exactly as factoryctl runs it, and ``python -m factoryctl energy --since 30d
--by account -o json`` (a new process each, as a user runs them). Prints medians.

Usage: ``python benchmarks/accounting_bench.py [--jobs 10000] [--runs 5] [--release X]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from factoryctl.lab.debian import DebianRelease, host_codename, release
from factoryctl.lab.procs import wait_until
from factoryctl.lab.promql_timing import command_seconds
from factoryctl.lab.slurm import SlurmCluster
from factoryctl.lab.stack import Stack
from factoryctl.scheduler.slurm_accounting import sacct_argv

WINDOW = 30 * 86400.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--release", default=host_codename())
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--gpus-per-node", type=int, default=16)
    args = parser.parse_args()
    rel = (
        DebianRelease(host_codename()) if args.release == host_codename() else release(args.release)
    )
    half = args.jobs // 2
    conf = [f"MaxArraySize={half}", f"MaxJobCount={args.jobs * 2 + 100}", "MinJobAge=2"]
    cluster = SlurmCluster(
        nodes=args.nodes, gpus_per_node=args.gpus_per_node, cpus_per_node=64,
        release=rel, accounting=True, extra_conf=conf,
    )  # fmt: skip
    with cluster, tempfile.TemporaryDirectory(prefix="factoryctl-acct-") as tmp:
        t0 = time.perf_counter()
        for account in ("proj-a", "proj-b"):
            cluster.sbatch(f"--array=0-{half - 1}", "--gres=gpu:1", "-A", account,
                           "-J", "bench", script="true")  # fmt: skip
        wait_until(lambda: not cluster.run(["squeue", "-h"]).stdout.strip(), 3600,
                   "the arrays to finish", interval=1.0)  # fmt: skip
        ran = time.perf_counter() - t0
        now = time.time()
        argv = sacct_argv(now - WINDOW, now)
        # Until slurmdbd holds every record (slurmctld sends them in batches).
        records = 0

        def recorded() -> bool:
            nonlocal records
            records = len(json.loads(cluster.run(argv, timeout=300).stdout)["jobs"])
            return records >= 2 * half

        wait_until(recorded, 600, f"slurmdbd to hold {2 * half} records", interval=2.0)
        print(f"slurm {'.'.join(map(str, rel.slurm_version()))} ({rel.codename}):"
              f" {records} jobs ran in {ran:.0f} s ({records / ran:.0f} jobs/s),"
              f" {args.nodes} nodes x {args.gpus_per_node} GPUs")  # fmt: skip

        # An engine of the release with no GPU data (native schema named, so nothing to
        # detect): the ``true`` jobs held no GPU long enough to be attributed, and the
        # report still asks the engine every question it asks for 10,000 finished jobs.
        engine = f"prometheus@{rel.codename}"
        stack = Stack(Path(tmp), [], [engine], "1s")
        try:
            stack.start()
            url = stack.running[engine].url
            env = {**cluster.env, "HOME": tmp, "FACTORYCTL_SCHEDULER_TYPE": "slurm",
                   "FACTORYCTL_PROMETHEUS_URL": url, "FACTORYCTL_PROMETHEUS_SCHEMA": "native",
                   "FACTORYCTL_PROMETHEUS_SCRAPE_INTERVAL": "15",
                   "FACTORYCTL_PROMETHEUS_TIMEOUT": "120"}  # fmt: skip
            env.pop("XDG_CONFIG_HOME", None)
            energy = [sys.executable, "-m", "factoryctl", "energy", "--since", "30d",
                      "--by", "account", "-o", "json"]  # fmt: skip
            sacct = cluster.release.argv(argv[0], *argv[1:]) if not rel.native else argv
            sacct_s: list[float] = []
            energy_s: list[float] = []
            for _ in range(args.runs):
                s, _out = command_seconds(sacct, cluster.env)
                sacct_s.append(s)
                e, out = command_seconds(energy, env)
                energy_s.append(e)
                doc = json.loads(out)
                jobs = sum(i["jobs"] for i in doc["items"])
                assert jobs >= 2 * half, (jobs, doc["items"])
            s_med, e_med = statistics.median(sacct_s), statistics.median(energy_s)
            print(f"sacct --json -X --allusers (30 d): median {s_med:.2f} s of {args.runs}"
                  f" ({', '.join(f'{x:.2f}' for x in sacct_s)})")  # fmt: skip
            print(f"factoryctl energy --since 30d --by account: median {e_med:.2f} s"
                  f" ({', '.join(f'{x:.2f}' for x in energy_s)}); {jobs} jobs;"
                  f" ratio {e_med / s_med:.2f}x")  # fmt: skip
            print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
