"""``--watch``: redraw a listing every few seconds until Ctrl-C (like ``watch(1)``).

Each round takes a fresh snapshot; on a terminal the screen is cleared first, elsewhere
(pipes, ``-o json``) each round is simply printed after the last, one document per round.
Ctrl-C is the normal way out and exits 0.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import click

from factoryctl.cli.common import get_env
from factoryctl.errors import UsageError

CLEAR = "\x1b[H\x1b[2J"


def watch_option(command: Callable[..., Any]) -> Callable[..., Any]:
    @click.option(
        "--watch",
        "watch_seconds",
        type=float,
        is_flag=False,
        flag_value=2.0,
        default=None,
        metavar="SECONDS",
        help="Redraw every SECONDS (default 2) until Ctrl-C.",
    )
    @functools.wraps(command)
    def wrapper(*args: Any, watch_seconds: float | None, **kwargs: Any) -> Any:
        if watch_seconds is None:
            return command(*args, **kwargs)
        if watch_seconds <= 0:
            raise UsageError(f"--watch needs a positive number of seconds, not {watch_seconds:g}")
        env = get_env()
        try:
            while True:
                started = time.monotonic()
                # Prometheus snapshots are fresh each call; the demo moves its clock on.
                advance = getattr(env.source(), "advance_to", None)
                if callable(advance):
                    advance(env.clock())
                if env.stdout_isatty and env.output in ("table", "wide"):
                    env.stdout.write(CLEAR)
                command(*args, **kwargs)
                time.sleep(max(0.0, watch_seconds - (time.monotonic() - started)))
        except KeyboardInterrupt:
            return 0

    return wrapper
