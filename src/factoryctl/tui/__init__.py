"""``factoryctl top``: the Textual console.

This package's pure modules (rows, overview, heatmap, history, commands, frame, backend)
import no Textual, so they are testable and reusable without a terminal. ``make_app``
imports Textual lazily: importing ``factoryctl.tui`` stays cheap for the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from factoryctl.tui.app import FactoryApp
    from factoryctl.tui.backend import ActionBackend, SnapshotSource
    from factoryctl.tui.rollout_rows import Loader


def make_app(
    source: SnapshotSource,
    *,
    readonly: bool = False,
    refresh: float | None = 2.0,
    clock: Callable[[], float] | None = None,
    actions: ActionBackend | None = None,
    keymap: Mapping[str, str] | None = None,
    history: int = 60,
    rollouts: Loader | None = None,
) -> FactoryApp:
    """The one way to build the console, for the CLI, the tests and the benchmark.

    ``refresh`` is seconds between polls; ``None`` polls once at start and then only on
    the refresh key (tests use this so nothing happens behind their back). ``clock``
    gives "now" for ages (tests freeze it). ``actions`` is the action layer; ``None``
    means no actions (as with ``readonly``). ``keymap`` maps binding ids to keys.
    ``rollouts`` reads the campaign journals for ``:rollouts`` (None: the view says so).
    """
    from factoryctl.tui.app import FactoryApp

    return FactoryApp(
        source,
        readonly=readonly,
        refresh=refresh,
        clock=clock,
        actions=actions,
        keymap=keymap,
        history=history,
        rollouts=rollouts,
    )


__all__ = ["make_app"]
