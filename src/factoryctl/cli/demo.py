"""``factoryctl demo``: the simulated factory, live, with no services needed."""

from __future__ import annotations

from collections import Counter

import click

from factoryctl.cli.common import get_env
from factoryctl.formats import fmt_kwh, fmt_ratio, fmt_watts
from factoryctl.model import FactorySnapshot
from factoryctl.occupancy import factory_occupancy
from factoryctl.views import job_rows


def summary(snap: FactorySnapshot) -> str:
    """A one-screen text overview (what the demo prints where no TUI can run)."""
    occ = factory_occupancy(snap)
    states = Counter(n.state.value for n in snap.nodes)
    power = sum(g.power_watts for g in snap.gpus if g.power_watts is not None)
    running = job_rows(snap)
    energy = sum(r["energy_kwh"] or 0.0 for r in running)
    lines = [
        f"factory  {len(snap.nodes)} nodes, {occ.total} GPUs   "
        + "  ".join(f"{k} {v}" for k, v in sorted(states.items())),
        f"GPUs     allocated {occ.allocated} ({fmt_ratio(occ.allocated_ratio)})   active {occ.active}   "
        f"idle-allocated {occ.idle_allocated}   out of service {occ.out_of_service}",
        f"power    {fmt_watts(power)} now   running jobs {len(running)} used {fmt_kwh(energy)} so far",
    ]
    idle = sorted((r for r in running if r["idle_gpus"]), key=lambda r: -r["idle_gpus"])[:5]
    if idle:
        lines.append(
            "idle GPUs held by: "
            + ", ".join(f"job {r['job_id']} ({r['user']}, {r['idle_gpus']})" for r in idle)
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
