"""Durations (``90s``, ``10m``, ``2h``, ``1d``, ``1h30m``) and start times (``now``,
``now+2h``, ``2026-12-01T22:00``, epoch seconds) as typed by an operator.

Start times look forward (a maintenance window starts *in* 2 hours), unlike the
``factoryctl.durations.parse_time`` of queries, which look back. A time without a zone
is local time, as Slurm prints and reads it."""

from __future__ import annotations

from datetime import datetime

from factoryctl import durations
from factoryctl.errors import UsageError


def parse_duration(text: str) -> float:
    """Seconds, in the project's one duration grammar; zero or negative is refused."""
    value = durations.parse_duration(text)
    if value <= 0:
        raise UsageError(f"invalid duration {text!r}: must be positive")
    return value


def parse_start(text: str, now: float) -> float:
    """Epoch seconds. ISO times without a zone are local time, as in Slurm."""
    raw = text.strip()
    lowered = raw.lower()
    if lowered == "now":
        return now
    if lowered.startswith("now+"):
        return now + parse_duration(lowered[4:])
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(raw).timestamp()
    except ValueError:
        raise UsageError(
            f"invalid start time {text!r}: use now, now+2h, 2026-12-01T22:00 or epoch seconds"
        ) from None
