"""``factoryctl top``: the full-screen console on the configured source.

Textual is imported only when the console actually opens, so ``factoryctl --help``
and every scripted command stay light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from factoryctl.cli.common import get_env
from factoryctl.cli.env import Environment
from factoryctl.errors import ConfigError, ExitStatus, FactoryctlError

if TYPE_CHECKING:
    from factoryctl.telemetry.demo import DemoSource
    from factoryctl.tui.app import FactoryApp
    from factoryctl.tui.backend import ActionBackend, SnapshotSource


def run_app(app: FactoryApp) -> None:
    """Run the console until the user quits (tests replace this to inspect the app)."""
    app.run()


def keymap_from_settings(env: Environment) -> dict[str, str]:
    """``[tui.bindings]`` as binding id -> keys, checked against the console's ids."""
    from textual.binding import Binding

    from factoryctl.tui.app import FactoryApp

    raw: Mapping[str, Any] = env.settings.get("tui", {}).get("bindings", {}) or {}
    known = {b.id for b in FactoryApp.BINDINGS if isinstance(b, Binding) and b.id}
    keymap: dict[str, str] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(
                f"[tui.bindings] {key}: unknown binding id (known: {', '.join(sorted(known))})"
            )
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f'[tui.bindings] {key}: expected keys as a string, e.g. "ctrl+d"')
        keymap[key] = value
    return keymap


def blast_radius(env: Environment, node_count: int) -> int:
    actions = env.settings.get("actions", {})
    ratio = float(actions.get("blast_radius_ratio", 0.10))
    cap = int(actions.get("blast_radius_nodes", 64))
    return max(1, min(cap, int(ratio * node_count)))


def demo_console(env: Environment, demo: DemoSource) -> tuple[SnapshotSource, ActionBackend]:
    """The live demo: the simulator follows the clock, actions go to the simulator."""
    from factoryctl.tui.sim_backend import SimActionBackend
    from factoryctl.tui.sources import LiveDemoSource

    live = LiveDemoSource(demo, clock=env.clock)
    actions = SimActionBackend(
        demo.sim,
        lock=live.lock,
        max_nodes=blast_radius(env, len(demo.sim.node_names)),
        clock=env.clock,
    )
    return live, actions


def open_console(
    env: Environment,
    source: SnapshotSource,
    actions: ActionBackend | None,
    *,
    readonly: bool,
    refresh: float,
) -> None:
    if not (env.stdout_isatty and env.stdin_isatty):
        raise FactoryctlError(
            "the console needs a terminal (for scripts use factoryctl nodes/jobs -o json)",
            ExitStatus.USAGE,
        )
    from factoryctl.tui import make_app

    app = make_app(
        source,
        readonly=readonly,
        refresh=refresh,
        clock=env.clock,
        actions=actions,
        keymap=keymap_from_settings(env),
    )
    run_app(app)


@click.command()
@click.option("--readonly", is_flag=True, help="Hide and refuse every action.")
@click.option(
    "--refresh",
    type=click.FloatRange(0.2, 3600),
    default=None,
    help="Seconds between polls (default: [tui] refresh, 2).",
)
def top(readonly: bool, refresh: float | None) -> None:
    """Open the full-screen console on the configured Prometheus and scheduler."""
    from factoryctl.telemetry.demo import DemoSource

    env = get_env()
    source = env.source()
    actions: ActionBackend | None = None
    if isinstance(source, DemoSource):
        source, actions = demo_console(env, source)
    elif not readonly:
        env.warn("no action layer for this source yet: the console opens read-only")
    seconds = refresh if refresh is not None else float(env.settings["tui"]["refresh"])
    open_console(env, source, actions, readonly=readonly, refresh=seconds)
