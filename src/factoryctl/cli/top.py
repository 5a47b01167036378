"""``factoryctl top``: the full-screen console on the configured source.

Textual is imported only when the console actually opens, so ``factoryctl --help``
and every scripted command stay light.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import click

from factoryctl.cli.common import get_env
from factoryctl.cli.env import Environment
from factoryctl.errors import ConfigError, ExitStatus, FactoryctlError

if TYPE_CHECKING:
    from factoryctl.scheduler.base import Scheduler
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


def action_backend(
    env: Environment, scheduler: Scheduler, lock: threading.Lock | None = None
) -> ActionBackend:
    """The console's actions through the same layer, guards and audit log as the CLI."""
    from factoryctl.actions.outcome import operator
    from factoryctl.cli.actions import audit_log, blast_radius
    from factoryctl.tui.layer_backend import ActionLayerBackend

    return ActionLayerBackend(
        scheduler, blast_radius(env), audit_log(env), operator(env.environ), lock=lock
    )


def demo_console(env: Environment, demo: DemoSource) -> tuple[SnapshotSource, ActionBackend]:
    """The live demo: the simulator follows the clock; actions go through the action
    layer to the demo scheduler, which acts on the same simulator."""
    from factoryctl.scheduler.demo import DemoScheduler
    from factoryctl.tui.sources import LiveDemoSource

    live = LiveDemoSource(demo, clock=env.clock)
    return live, action_backend(env, DemoScheduler(demo.sim), lock=live.lock)


def rollouts_loader(env: Environment) -> Callable[[], list[tuple[Any, str]]]:
    """What ``:rollouts`` shows: this state directory's campaigns, as ``factoryctl rollout
    list`` reads them (run in the console's rollouts worker, off the event loop)."""
    from factoryctl.actions.rollout_journal import Store
    from factoryctl.cli.actions import audit_log

    store = Store(audit_log(env).path.parent / "rollouts")

    def load() -> list[tuple[Any, str]]:
        return [(c, store.effective_status(c)) for c in store.campaigns()]

    return load


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
        rollouts=rollouts_loader(env),
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
    from factoryctl.telemetry.scheduler_source import NO_TELEMETRY, SchedulerSource

    env = get_env()
    seconds = refresh if refresh is not None else float(env.settings["tui"]["refresh"])
    source: SnapshotSource = env.source()
    if isinstance(source, SchedulerSource):  # no Prometheus: say so before the screen opens
        env.warn(f"warning: {NO_TELEMETRY}")
    if isinstance(source, DemoSource):
        live, demo_actions = demo_console(env, source)
        open_console(env, live, demo_actions, readonly=readonly, refresh=seconds)
        return
    actions: ActionBackend | None = None
    if not readonly:
        try:
            actions = action_backend(env, env.scheduler())
        except ConfigError as err:
            env.warn(f"{err.message}: the console opens read-only")
    open_console(env, source, actions, readonly=readonly, refresh=seconds)
