"""Helpers shared by commands: getting the environment, emitting rows in every format."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import click

from factoryctl.cli.env import Environment
from factoryctl.formats import render_csv, render_json, render_table
from factoryctl.model import FactorySnapshot
from factoryctl.views import Column, Row, job_note_lines

STATE_COLORS = {
    "idle": "green",
    "allocated": "cyan",
    "mixed": "cyan",
    "draining": "yellow",
    "drained": "yellow",
    "maint": "blue",
    "rebooting": "magenta",
    "down": "red",
    "unknown": "red",
    "failed": "red",
    "node_fail": "red",
}


def get_env() -> Environment:
    ctx = click.get_current_context()
    env = ctx.find_object(Environment)
    assert env is not None, "the factoryctl group sets the environment"
    return env


def _style(env: Environment) -> Any:
    if not env.use_color():
        return None

    def style(key: str, raw: str, padded: str) -> str:
        if key == "state" and raw in STATE_COLORS:
            return click.style(padded, fg=STATE_COLORS[raw])
        return padded

    return style


def document(kind: str, snapshot: FactorySnapshot, **body: Any) -> dict[str, Any]:
    """The JSON envelope every command uses: stable keys, base units."""
    return {
        "kind": kind,
        "time": snapshot.time,
        "source": snapshot.source,
        "unavailable": sorted(snapshot.unavailable),
        "warnings": list(snapshot.warnings),
        **body,
    }


def about_jobs(snapshot: FactorySnapshot, job_ids: Iterable[str]) -> FactorySnapshot:
    """The snapshot with its notes about the jobs shown (``job_ids``) among its warnings:
    never a line about a job the view leaves out, and one line per distinct note."""
    lines = job_note_lines(snapshot.job_notes, job_ids)
    if not lines:
        return snapshot
    return replace(snapshot, warnings=tuple(dict.fromkeys((*snapshot.warnings, *lines))))


def warn_snapshot(env: Environment, snapshot: FactorySnapshot) -> None:
    """The snapshot's warnings, one line each on stderr (data stays on stdout)."""
    for warning in snapshot.warnings:
        env.warn(f"warning: {warning}")


def emit_rows(
    env: Environment,
    kind: str,
    snapshot: FactorySnapshot,
    rows: Sequence[Row],
    columns: Sequence[Column],
) -> None:
    warn_snapshot(env, snapshot)
    if env.output == "json":
        env.write(render_json(document(kind, snapshot, items=list(rows))))
    elif env.output == "csv":
        env.write(render_csv(rows))
    else:
        text = render_table(
            rows,
            columns,
            wide=env.output == "wide",
            unavailable=snapshot.unavailable,
            style=_style(env),
        )
        env.write(text)


def sort_option(default: str, help_keys: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--sort",
        "sort_key",
        default=default,
        show_default=True,
        metavar="KEY",
        help=f"Sort by a field; prefix '-' for descending. Keys: {help_keys}.",
    )
