"""``factoryctl demo``: the simulated factory, live, with no services needed."""

from __future__ import annotations

from collections import Counter
from itertools import compress, repeat
from operator import is_not

import click

from factoryctl.cli.common import get_env
from factoryctl.energy import joules_to_kwh
from factoryctl.formats import fmt_kwh, fmt_ratio, fmt_watts
from factoryctl.model import FactorySnapshot
from factoryctl.occupancy import ACTIVE_THRESHOLD, factory_occupancy


def summary(snap: FactorySnapshot) -> str:
    """A one-screen text overview (what the demo prints where no TUI can run).

    Read from the snapshot's GPU columns, not GPU objects or full job rows: at 100,000
    GPUs this is the demo's first screen."""
    occ = factory_occupancy(snap)
    states = Counter(n.state.value for n in snap.nodes)
    table = snap.columns()
    watts = table.column("power_watts")
    power = sum(compress(watts, map(is_not, watts, repeat(None))))
    up, util = table.column("up"), table.column("utilization")
    running = [j for j in snap.jobs if not j.state.finished]  # and pending ones
    energy = sum(
        0.0 if j.energy_joules is None else joules_to_kwh(j.energy_joules) for j in running
    )
    lines = [
        f"factory  {len(snap.nodes)} nodes, {occ.total} GPUs   "
        + "  ".join(f"{k} {v}" for k, v in sorted(states.items())),
        f"GPUs     allocated {occ.allocated} ({fmt_ratio(occ.allocated_ratio)})   active {occ.active}   "
        f"idle-allocated {occ.idle_allocated}   out of service {occ.out_of_service}",
        f"power    {fmt_watts(power)} now   running jobs {len(running)} used {fmt_kwh(energy)} so far",
    ]
    # Idle GPUs as occupancy.job_occupancy counts them: reporting, under the threshold.
    idle_gpus = [
        (job, n)
        for job in running
        if (
            n := sum(
                1
                for p in table.job_positions(job)
                if up[p] and (u := util[p]) is not None and u < ACTIVE_THRESHOLD
            )
        )
    ]
    idle = sorted(idle_gpus, key=lambda jn: -jn[1])[:5]
    if idle:
        lines.append(
            "idle GPUs held by: "
            + ", ".join(f"job {job.job_id} ({job.user}, {n})" for job, n in idle)
        )
    return "\n".join(lines)


@click.command()
@click.option("--nodes", type=click.IntRange(1, 20000), help="Nodes (default: [demo] nodes, 64).")
@click.option(
    "--gpus-per-node", type=click.IntRange(1, 16), help="GPUs per node (default: [demo], 8)."
)
@click.option("--seed", type=int, help="Simulator seed (default: [demo] seed, 0).")
@click.option(
    "--refresh", default=2.0, show_default=True, type=click.FloatRange(0.1, 3600), help="Seconds."
)
@click.option("--once", is_flag=True, help="Print one summary and exit.")
@click.option("--readonly", is_flag=True, help="Open the console with every action hidden.")
def demo(
    nodes: int | None,
    gpus_per_node: int | None,
    seed: int | None,
    refresh: float,
    once: bool,
    readonly: bool,
) -> None:
    """Open the console on a simulated factory (no Prometheus or Slurm needed)."""
    from factoryctl.telemetry.demo import DemoSource

    env = get_env()
    # The same [demo] settings as the global --demo, so both show the same factory.
    d = env.settings["demo"]
    source = DemoSource.create(
        nodes=d["nodes"] if nodes is None else nodes,
        gpus_per_node=d["gpus_per_node"] if gpus_per_node is None else gpus_per_node,
        seed=d["seed"] if seed is None else seed,
        now=env.clock(),
        faults_per_node_day=d["faults_per_node_day"],
    )
    if once or not env.stdout_isatty:
        env.write(summary(source.snapshot()))
        return
    from factoryctl.cli.top import demo_console, open_console

    live, actions = demo_console(env, source)
    open_console(env, live, actions, readonly=readonly, refresh=refresh)
