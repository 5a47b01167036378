"""The Overview's heat map widget: one cell per GPU, or the mean of a run of GPUs per
cell when there are more GPUs than cells (binning is in ``heatmap.py``)."""

from __future__ import annotations

from typing import ClassVar

from rich.console import RenderableType
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual.widget import Widget

from factoryctl.tui.frame import Frame
from factoryctl.tui.heatmap import BLOCKS, bin_values, grid_cells, level

# Cold to hot: idle GPUs read blue, busy ones green, saturated ones red-ish.
HEAT = ["#1d3b6e", "#2a5d8f", "#2f8f83", "#3fa34d", "#8fbf3f", "#d9c03a", "#e08a2c", "#d9482b"]


class HeatMap(Widget):
    """One cell per GPU grouped by node when it fits, else mean utilization per run of GPUs."""

    DEFAULT_CSS = "HeatMap { height: 1fr; min-height: 3; }"

    METRICS: ClassVar[dict[str, str]] = {
        "utilization": "GPU utilization",
        "power": "GPU power / power limit",
    }

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.frame: Frame | None = None
        self.metric = "utilization"
        self._lines: list[list[tuple[str, str]]] | None = None
        self._lines_frame: Frame | None = None
        self._lines_key: tuple[str, int, int] | None = None
        self._styles: dict[str, Style] = {}  # a cell's style string -> on the base style
        self._styles_base: Style | None = None

    def show(self, frame: Frame | None) -> None:
        self.frame = frame
        self.refresh()

    def toggle_metric(self) -> str:
        self.metric = "power" if self.metric == "utilization" else "utilization"
        self.refresh()
        return self.metric

    def render_line(self, y: int) -> Strip:
        # The Line API, not ``render()``: a 100,000-GPU heat map is ~5,600 cells whose
        # styles change from one cell to the next. As a Rich ``Text`` each run becomes a
        # span that Textual restyles one by one (~0.1 s per paint, on the event loop);
        # here each line is segments with one of a dozen cached styles.
        width, base = self.size.width, self.rich_style
        lines = self._layout(width)
        if y >= len(lines):
            return Strip.blank(width, base)
        if self._styles_base != base:  # theme or focus changed the widget's own style
            self._styles, self._styles_base = {}, base
        styles, x = self._styles, 0
        segments = []
        for text, style in lines[y]:
            rich = styles.get(style)
            if rich is None:
                rich = styles[style] = base + (Style.parse(style) if style else Style())
            # The offset meta is what Textual's text rendering attaches (mouse hit-tests).
            segments.append(Segment(text, rich + Style.from_meta({"offset": (x, y)})))
            x += len(text)
        return Strip(segments).adjust_cell_length(width, Style(bgcolor=base.bgcolor))

    def render(self) -> RenderableType:
        """The same map as one ``Text`` (Textual paints it through ``render_line``)."""
        text = Text(end="")
        for k, line in enumerate(self._layout(self.size.width)):
            if k:
                text.append("\n")
            for run, style in line:
                text.append(run, style=style or None)
        return text

    def _layout(self, width: int) -> list[list[tuple[str, str]]]:
        """The map's lines as (text, style) runs, built once per frame, metric and size."""
        key = (self.metric, width, self.size.height)
        # The frame itself, not its id: a freed frame's id can come back with the next.
        if self._lines is None or self._lines_frame is not self.frame or self._lines_key != key:
            self._lines = self._build_lines(width, max(0, self.size.height - 1))
            self._lines_frame, self._lines_key = self.frame, key
        return self._lines

    def _build_lines(self, width: int, height: int) -> list[list[tuple[str, str]]]:
        frame = self.frame
        if frame is None or not frame.gpu_utilization:
            return [[("no GPUs reported", "dim")]]
        values = frame.gpu_power if self.metric == "power" else frame.gpu_utilization
        label = self.METRICS[self.metric]
        if self.metric == "power" and frame.power_note:  # rollups without power limits
            label = f"GPU power ({frame.power_note})"
        gpn = frame.gpus_per_node
        cols, rows = grid_cells(len(values), width, height, gpn)
        grid: list[list[tuple[str, str]]] = []  # (character, style) per cell, per row
        if cols * rows >= len(values) and gpn > 0:
            title = f"{label}, one cell per GPU, {gpn} per node (h: switch metric)"
            nodes_per_row = cols // gpn
            for r in range(rows):
                cells: list[tuple[str, str]] = []
                for k in range(nodes_per_row):
                    start = (r * nodes_per_row + k) * gpn
                    cells.extend(
                        _cell(v, 1 if v is None else 0) for v in values[start : start + gpn]
                    )
                    if k < nodes_per_row - 1:
                        cells.append((" ", ""))
                grid.append(cells)
        else:
            bins = bin_values(values, cols * rows)
            per = bins[0].count if bins else 0
            if gpn:
                title = f"{label}, mean per cell of ~{per} GPUs (red x: a GPU down; h: switch)"
            else:  # one value per node (a summarized poll): cells average nodes
                title = f"{label}, mean per cell of ~{per} nodes (red x: no GPU up; h: switch)"
            for r in range(rows):
                grid.append([_cell(b.mean, b.down) for b in bins[r * cols : (r + 1) * cols]])
        # The title wraps as text does; trailing blanks go, as ``Text.rstrip`` did.
        lines = [[(line.plain, "dim")] for line in Text(title).wrap(self.app.console, width)]
        for cells in grid:
            # Runs of equal style become one segment.
            line: list[tuple[str, str]] = []
            run: list[str] = []
            run_style: str | None = None
            for ch, style in cells:
                if style != run_style and run:
                    line.append(("".join(run), run_style or ""))
                    run = []
                run.append(ch)
                run_style = style
            if run:
                line.append(("".join(run), run_style or ""))
            lines.append(line)
        while lines and all(not t.strip() for t, _ in lines[-1]):
            lines.pop()
        if lines:
            last = lines[-1]
            while last and not last[-1][0].strip():
                last.pop()
            if last:
                last[-1] = (last[-1][0].rstrip(), last[-1][1])
        return lines


def _cell(value: float | None, down: int) -> tuple[str, str]:
    if down and value is None:
        return ("x", "bold red")
    if down:
        return ("x", f"bold red on {HEAT[max(0, level(value))]}")
    if value is None:
        return ("·", "dim")
    k = level(value)
    return (BLOCKS[k], HEAT[k])
