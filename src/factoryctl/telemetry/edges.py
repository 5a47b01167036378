"""Energy of one GPU over exactly [start, end] from its scraped energy counter. Pure.

Scrapes never land on a job's start or end, so the samples bracketing each edge are split
between "before" and "after" by *power x time*: the power reading at the earlier sample
holds up to the instant the power changed, the reading at the later sample from then on.
That instant follows from the counter: its increase between the two samples is
``P0 * (c - t0) + P1 * (t1 - c)``, so ``c = (P1 * t1 - P0 * t0 - gain) / (P1 - P0)``.
The change is rarely at the edge itself: Slurm's start and end are whole seconds (floored)
and a job's GPUs change power when its program starts or stops, a fraction of a second to
seconds later. Charging the later reading from the edge on instead overcharged 16 s jobs
by up to 2.1 % (a 650 W reading over the ~0.3-1.3 s of 60 W idle between Slurm's start and
the workload's; the real-Slurm scene in tests/integration/test_slurm_scene.py). Where the
two readings are too alike to place the change (within 5 %), the split is by power x time
on each side of the edge, which is exact for constant power. Linear interpolation would
smear a jump from 60 W idle to 650 W training across the whole scrape interval and
undercharge every job by up to a quarter interval of its power at each edge.

A counter that goes down has restarted from zero (driver reload): the delta across the
drop is the value after it, as in ``factoryctl.energy.counter_increase``, plus the power
before the reset times the part of the interval the counter forgot (``gain``).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

Point = tuple[float, float]  # (time, value)


def delta(prev: float, cur: float) -> float:
    return cur - prev if cur >= prev else cur


def gain(x: Point, y: Point, power: Sequence[Point]) -> float:
    """Energy between samples x and y, across a counter reset if there was one.

    After a reset the counter only holds the energy since the reset; what was drawn between
    x and the reset is gone from it. The reset time follows from the counter and the power
    after it (r = y.t - y.v / P(y)), and the lost part is P(x) * (r - x.t).
    """
    if y[1] >= x[1]:
        return y[1] - x[1]
    px, py = value_near(power, x[0]), value_near(power, y[0])
    if px is None or py is None or py <= 0:
        return y[1]
    since_reset = min(y[0] - x[0], y[1] / py)
    return y[1] + px * max(0.0, (y[0] - x[0]) - since_reset)


def value_near(points: Sequence[Point], t: float) -> float | None:
    """The sample at or before ``t``, else the first after it."""
    if not points:
        return None
    i = bisect.bisect_right([p[0] for p in points], t)
    return points[i - 1][1] if i > 0 else points[0][1]


# Readings closer than this (relative) do not tell where between two samples power changed.
ALIKE = 0.05


def change_time(x: Point, y: Point, px: float, py: float, energy: float) -> float | None:
    """When power went from ``px`` (read at sample x) to ``py`` (at y), from the counter's
    increase ``energy`` between them, clamped to [x, y]; None where the readings are alike."""
    if abs(py - px) <= ALIKE * max(px, py):
        return None
    c = (py * y[0] - px * x[0] - energy) / (py - px)
    return min(max(c, x[0]), y[0])


def _after_fraction(
    x: Point, y: Point, t: float, power: Sequence[Point], energy: float | None = None
) -> float:
    """Share of the energy between samples x and y that falls after ``t`` (``energy``: the
    counter's increase between them, which places the power change)."""
    px = value_near(power, x[0])
    py = value_near(power, y[0])
    if px is not None and py is not None and px >= 0 and py >= 0:
        c = None if energy is None else change_time(x, y, px, py, energy)
        if c is None:
            c = t  # no better knowledge: the power changed at the edge
        before = px * (min(t, c) - x[0]) + py * max(0.0, t - c)
        after = px * max(0.0, c - t) + py * (y[0] - max(t, c))
        if before + after > 0:
            return after / (before + after)
    span = y[0] - x[0]
    return (y[0] - t) / span if span > 0 else 0.5


def gpu_energy_between(
    energy: Sequence[Point],
    power: Sequence[Point],
    start: float,
    end: float,
) -> float | None:
    """Counter increase over [start, end]; None when no sample tells anything about it.

    ``energy`` must hold the samples around both edges. Between the edges, deltas of a
    counter that never reset telescope, so the edge samples alone are enough; when the
    counter reset inside the job, pass every sample in between.
    """
    pts = sorted(dict(energy).items())
    pw = sorted(dict(power).items())
    if not pts or end <= start:
        return None
    times = [p[0] for p in pts]
    i_a = bisect.bisect_right(times, start)  # first sample after start
    i_b = bisect.bisect_right(times, end) - 1  # last sample at or before end
    p = pts[i_a - 1] if i_a > 0 else None
    q = pts[i_b + 1] if i_b + 1 < len(pts) else None
    if i_a > i_b:
        # No sample inside the job: it lies between two scrapes.
        if p is None or q is None:
            return None
        g = gain(p, q, pw)
        frac_after_start = _after_fraction(p, q, start, pw, g)
        frac_after_end = _after_fraction(p, q, end, pw, g)
        return g * max(0.0, frac_after_start - frac_after_end)
    a, b = pts[i_a], pts[i_b]
    head = 0.0
    if p is not None:
        g = gain(p, a, pw)
        head = g * _after_fraction(p, a, start, pw, g)
    if q is not None:
        g = gain(b, q, pw)
        tail = g * (1.0 - _after_fraction(b, q, end, pw, g))
    else:
        # The job's end (or "now") is past the newest scrape: carry the last power reading.
        tail = (value_near(pw, b[0]) or 0.0) * max(0.0, end - b[0])
    middle = sum(gain(x, y, pw) for x, y in itertools.pairwise(pts[i_a : i_b + 1]))
    return head + middle + tail
