"""Draining 1,000 nodes: one scheduler call for the whole hostlist, against raw scontrol.

    .venv/bin/python benchmarks/drain_bench.py [--nodes 1000] [--live 4] [--runs 3]

Starts a real Slurm 22.05 cluster (factoryctl.lab.slurm) with ``--nodes`` declared in
slurm.conf but only ``--live`` slurmd running: the rest read DOWN, which Slurm drains
like any other node. Running 1,000 slurmd on a 2-core machine would measure the machine,
not the drain path. Cases, all in the same run against the same slurmctld:

* raw scontrol, one hostlist: ``scontrol update NodeName=gpu[0001-1000] State=DRAIN ...``
  (the floor: one process, one RPC)
* raw scontrol, node by node: 1,000 ``scontrol update NodeName=gpuNNNN ...`` calls
  (what a shell loop, or a tool without hostlists, does)
* factoryctl backend: ``SlurmCLI.drain(1,000 names)`` (counts its scontrol calls)
* factoryctl action: plan (sinfo + squeue), audit, drain, verify (sinfo), no confirmation

Between runs every node is undrained with one scontrol call (not timed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from factoryctl import hostlists
from factoryctl.actions.audit import AuditLog
from factoryctl.actions.execute import execute
from factoryctl.actions.guards import BlastRadius
from factoryctl.actions.outcome import Request
from factoryctl.actions.plan import Verb
from factoryctl.lab.slurm import SlurmCluster
from factoryctl.scheduler.slurm_cli import SlurmCLI


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--live", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    args = parser.parse_args()

    cluster = SlurmCluster(nodes=args.live, extra_nodes=args.nodes - args.live, gpus_per_node=8)
    cluster.start(timeout=120)
    try:
        names = cluster.node_names
        hl = hostlists.collect(names)

        def scontrol(*argv: str) -> None:
            cluster.run(["scontrol", *argv], check=True, timeout=600)

        def undrain() -> None:
            # Answers "Invalid node state" when some nodes were not drained: expected.
            cluster.run(["scontrol", "update", f"NodeName={hl}", "State=UNDRAIN"], timeout=600)

        def raw_one() -> int:
            scontrol("update", f"NodeName={hl}", "State=DRAIN", "Reason=bench")
            return 1

        def raw_each() -> int:
            for name in names:
                scontrol("update", f"NodeName={name}", "State=DRAIN", "Reason=bench")
            return len(names)

        def backend() -> int:
            slurm = SlurmCLI(env=cluster.env)
            slurm.drain(names, "factoryctl: bench (bench)")
            return len(slurm.calls)

        audit_dir = Path(tempfile.mkdtemp(prefix="factoryctl-bench-"))

        def action() -> int:
            slurm = SlurmCLI(env=cluster.env)
            request = Request(Verb.DRAIN, hl, "bench", "bench", force=True)
            outcome = execute(slurm, request, BlastRadius(), AuditLog(audit_dir / "audit.jsonl"))
            changed = sum(1 for r in outcome.results.values() if r["result"] == "changed")
            assert changed == len(names), outcome.message
            return len(slurm.calls)

        cases: dict[str, Callable[[], int]] = {
            "raw scontrol, one hostlist": raw_one,
            "raw scontrol, node by node": raw_each,
            "factoryctl SlurmCLI.drain": backend,
            "factoryctl drain action (plan+audit+verify)": action,
        }
        results = []
        for label, fn in cases.items():
            samples, calls = [], 0
            runs = 1 if fn is raw_each else args.runs  # 1,000 processes: once is enough
            for _ in range(runs):
                undrain()
                start = time.perf_counter()
                calls = fn()
                samples.append(time.perf_counter() - start)
            drained = sum(
                1
                for n in json.loads(cluster.run(["sinfo", "--json"], check=True).stdout)["nodes"]
                if "DRAIN" in n.get("state_flags", [])
            )
            results.append(
                {
                    "case": label,
                    "median_s": statistics.median(samples),
                    "runs": runs,
                    "scheduler_calls": calls,
                    "nodes_drained": drained,
                }
            )
    finally:
        cluster.stop()

    base = results[0]["median_s"]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"{args.nodes} nodes declared, {args.live} slurmd running; Slurm 22.05; Python {sys.version.split()[0]}"
    )
    print(f"{'case':<46} {'median':>9} {'x one-hostlist':>15} {'calls':>6} {'drained':>8}")
    for r in results:
        print(
            f"{r['case']:<46} {r['median_s'] * 1000:>7.0f}ms {r['median_s'] / base:>14.1f}x "
            f"{r['scheduler_calls']:>6} {r['nodes_drained']:>8}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
