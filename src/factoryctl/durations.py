"""Durations and points in time as operators type them: ``90s``, ``15m``, ``1h30m``, ``2d``,
or an ISO 8601 timestamp. Results are seconds / epoch seconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from factoryctl.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)([smhdw]))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str, what: str = "duration") -> float:
    value = text.strip().lower()
    if value.replace(".", "", 1).isdigit():
        return float(value)  # plain seconds
    if not _DURATION.match(value):
        raise UsageError(f"invalid {what} {text!r}: use e.g. 90s, 15m, 1h30m, 2d")
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))


def parse_time(text: str, now: float, what: str = "time") -> float:
    """A point in time: ``now``, a duration ago (``2h``), or an ISO timestamp."""
    value = text.strip()
    if value.lower() == "now":
        return now
    try:
        return now - parse_duration(value, what)
    except UsageError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"invalid {what} {text!r}: use a duration ago (2h) or an ISO time (2026-01-01T12:00)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
