"""Durations and points in time as operators type them: ``90s``, ``15m``, ``1h30m``, ``2d``
(and Prometheus's own ``500ms``, ``1m30s``), or an ISO 8601 timestamp. Results are seconds /
epoch seconds. An ISO time without a zone is local time, as Slurm prints and reads it."""

from __future__ import annotations

import re
from datetime import datetime

from factoryctl.errors import UsageError

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 365 * 86400}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|[smhdwy]))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|[smhdwy])")


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
    return parsed.timestamp()  # naive: local time
