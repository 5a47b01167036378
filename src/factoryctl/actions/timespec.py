"""Durations (``90s``, ``10m``, ``2h``, ``1d``, ``1h30m``) and start times (``now``,
``now+2h``, ``2026-12-01T22:00``, epoch seconds) as typed by an operator."""

from __future__ import annotations

import re
from datetime import datetime

from factoryctl.errors import UsageError

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds. A bare number is seconds."""
    raw = text.strip().lower()
    try:
        value = float(raw)
    except ValueError:
        parts = _PART.findall(raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise UsageError(
                f"invalid duration {text!r}: use e.g. 90s, 10m, 2h, 1d or 1h30m"
            ) from None
        value = sum(float(n) * _UNIT[u] for n, u in parts)
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
