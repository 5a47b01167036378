"""Formatting base units for the screen. The only place units turn into text."""

from __future__ import annotations

import time

from factoryctl.energy import joules_to_kwh
from factoryctl.formats import fmt_duration

DASH = "-"


def pct(ratio: float | None) -> str:
    return DASH if ratio is None else f"{ratio * 100:.0f}%"


def watts(w: float | None) -> str:
    if w is None:
        return DASH
    if abs(w) >= 1e6:
        return f"{w / 1e6:.2f}MW"
    if abs(w) >= 1e4:
        return f"{w / 1e3:.1f}kW"
    return f"{w:.0f}W"


def kwh(joules: float | None) -> str:
    if joules is None:
        return DASH
    k = joules_to_kwh(joules)
    if k >= 1e4:
        return f"{k / 1e3:.1f}MWh"
    return f"{k:.1f}"


def energy(joules: float | None) -> str:
    if joules is None:
        return DASH
    k = joules_to_kwh(joules)
    return f"{k / 1e3:.2f} MWh" if k >= 1e3 else f"{k:.1f} kWh"


def celsius(c: float | None) -> str:
    return DASH if c is None else f"{c:.0f}C"


def duration(seconds: float | None) -> str:
    return DASH if seconds is None else fmt_duration(seconds)


def age(seconds: float) -> str:
    return duration(max(0.0, seconds)) if seconds >= 60 else f"{max(0, int(seconds))}s"


def utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def count(n: int) -> str:
    return f"{n:,}"
