"""Heat-map binning and sparklines: many GPU values squeezed into a few characters.

At 12,500 nodes there are more GPUs than cells on any screen, so consecutive GPUs (in
node order, so a cell is a rack-like run of nodes) are averaged into one cell. A cell
remembers whether any GPU in it is down: an average must not hide a dead GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BLOCKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True, slots=True)
class Cell:
    mean: float | None  # mean of the known values in the bin (None: nothing reported)
    down: int  # GPUs in the bin that are down or silent
    first: int  # index of the bin's first GPU
    count: int


def bin_values(values: Sequence[float | None], cells: int) -> list[Cell]:
    """Split ``values`` into at most ``cells`` contiguous bins of near-equal size."""
    n = len(values)
    if n == 0 or cells <= 0:
        return []
    cells = min(cells, n)
    out = []
    for c in range(cells):
        lo, hi = c * n // cells, (c + 1) * n // cells
        # Built-ins over a slice, not a Python loop per value: this runs on the event loop
        # for 100,000 GPUs whenever the Overview repaints.
        reported = [v for v in values[lo:hi] if v is not None]
        known = len(reported)
        mean = sum(reported) / known if known else None
        out.append(Cell(mean, hi - lo - known, lo, hi - lo))
    return out


def grid_cells(n_values: int, width: int, height: int, group: int) -> tuple[int, int]:
    """(cells per row, rows) for a heat map: one cell per GPU with ``group`` (GPUs per
    node) cells per node when it fits, else as many cells as the area holds."""
    if n_values == 0 or width <= 0 or height <= 0:
        return (0, 0)
    if group > 0:
        # A node per group of cells plus a space between nodes, if everything fits.
        per_row = max(1, (width + 1) // (group + 1))
        rows = -(-n_values // group // per_row)
        if rows <= height:
            return (per_row * group, rows)
    cols = width
    rows = min(height, -(-n_values // cols))
    return (cols, rows)


def level(value: float | None, lo: float = 0.0, hi: float = 1.0) -> int:
    """0-7 block level of a value within [lo, hi]; -1 for unknown."""
    if value is None:
        return -1
    if hi <= lo:
        return 0
    x = (value - lo) / (hi - lo)
    return max(0, min(len(BLOCKS) - 1, int(x * len(BLOCKS))))


def sparkline(values: Sequence[float | None], lo: float = 0.0, hi: float = 1.0) -> str:
    """Unicode blocks, one per value; a gap (space) where nothing was reported."""
    return "".join(" " if (k := level(v, lo, hi)) < 0 else BLOCKS[k] for v in values)
