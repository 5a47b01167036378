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
--by account -o json`` (a new process each, as a user runs them). Prints medians, and
the CPU time each factoryctl run took (its sacct and squeue included).

``--baseline SRC`` also times another checkout's ``src`` (``git archive <commit> src``) in
each round, on the same cluster and engine (``PYTHONPATH=SRC``), so before/after share
the machine's load; ``--profile DIR`` then runs this checkout's command once under
cProfile (``DIR/energy.prof``) and once with ``-X importtime`` (``DIR/importtime.txt``).

Usage: ``python benchmarks/accounting_bench.py [--jobs 10000] [--runs 5] [--release X]
[--baseline /tmp/base/src] [--profile DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
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
    parser.add_argument("--baseline", type=Path, help="another checkout's src, timed too")
    parser.add_argument("--profile", type=Path, help="write cProfile and importtime here")
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
            sides = {"this": env}
            if args.baseline is not None:
                sides["baseline"] = {**env, "PYTHONPATH": str(args.baseline.resolve())}
            sacct_s: list[float] = []
            energy_s: dict[str, list[float]] = {side: [] for side in sides}
            jobs = 0
            cpu_s: dict[str, list[float]] = {side: [] for side in sides}
            sacct_cpu: list[float] = []
            for _ in range(args.runs):
                before = _children_cpu()
                s, _out = command_seconds(sacct, cluster.env)
                sacct_s.append(s)
                sacct_cpu.append(_children_cpu() - before)
                for side, side_env in sides.items():
                    before = _children_cpu()
                    e, out = command_seconds(energy, side_env)
                    energy_s[side].append(e)
                    cpu_s[side].append(_children_cpu() - before)
                    doc = json.loads(out)
                    jobs = sum(i["jobs"] for i in doc["items"])
                    assert jobs >= 2 * half, (side, jobs, doc["items"])
            s_med = statistics.median(sacct_s)
            print(f"sacct --json -X --allusers (30 d): median {s_med:.2f} s of {args.runs}"
                  f" ({', '.join(f'{x:.2f}' for x in sacct_s)}); CPU median"
                  f" {statistics.median(sacct_cpu):.2f} s")  # fmt: skip
            for side, times in energy_s.items():
                e_med = statistics.median(times)
                print(f"factoryctl energy --since 30d --by account ({side}): median"
                      f" {e_med:.2f} s ({', '.join(f'{x:.2f}' for x in times)}); {jobs} jobs;"
                      f" ratio {e_med / s_med:.2f}x; CPU (its sacct's included) median"
                      f" {statistics.median(cpu_s[side]):.2f} s")  # fmt: skip
            print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
            if args.profile is not None:
                _profile(args.profile, energy, env)
        finally:
            stack.stop()
    return 0


def _children_cpu() -> float:
    """User + system CPU of every finished child and its waited-for children (factoryctl's
    sacct and squeue too): less moved by the machine's load than the wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _profile(where: Path, energy: list[str], env: dict[str, str]) -> None:
    """One run of this checkout's command under cProfile, one with ``-X importtime``."""
    where.mkdir(parents=True, exist_ok=True)
    prof = [energy[0], "-m", "cProfile", "-o", str(where / "energy.prof"), "-m", *energy[2:]]
    command_seconds(prof, env)
    imports = subprocess.run([energy[0], "-X", "importtime", *energy[1:]], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
    (where / "importtime.txt").write_text(imports.stderr)
    print(f"profile: {where / 'energy.prof'}, {where / 'importtime.txt'}")


if __name__ == "__main__":
    raise SystemExit(main())
