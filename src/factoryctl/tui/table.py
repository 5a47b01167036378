"""A table that renders only its visible rows (Textual's line API).

``DataTable`` builds a renderable per cell for every row it holds; at 12,500 nodes and
every poll that is too slow, and k9s shows what happens next. Here rows are plain
tuples built off the event loop, and ``render_line`` formats only the lines on screen,
so a poll or a keypress costs the same at 100 rows and at 100,000.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from factoryctl.tui.commands import NO_FILTER, RowFilter
from factoryctl.tui.rows import Column, Row, filter_rows, sort_rows


class VirtualTable(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    VirtualTable { height: 1fr; overflow-x: hidden; }
    VirtualTable > .vtable--header { text-style: bold; background: $panel; }
    VirtualTable > .vtable--cursor { background: $accent 40%; text-style: bold; }
    VirtualTable:focus > .vtable--cursor { background: $accent; }
    VirtualTable > .vtable--marked { color: $warning; text-style: bold; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"vtable--header", "vtable--cursor", "vtable--marked"}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup,ctrl+b", "page(-1)", "Page up", show=False),
        Binding("pagedown,ctrl+f", "page(1)", "Page down", show=False),
        Binding("home,g", "jump(0)", "Top", show=False),
        Binding("end", "jump(-1)", "Bottom", show=False),
        Binding("enter", "select", "Open", show=False),
    ]

    cursor: reactive[int] = reactive(0, always_update=True)

    class Selected(Message):
        """Enter on a row: drill down into it."""

        def __init__(self, table: VirtualTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

    def __init__(self, columns: Sequence[Column], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = tuple(columns)
        self.all_rows: tuple[Row, ...] = ()
        self.rows: list[Row] = []  # filtered and sorted: what the table shows
        self.row_filter: RowFilter = NO_FILTER
        self.sort_column: int | None = None
        self.sort_descending = False
        self.marks: set[str] = set()

    # -- data -----------------------------------------------------------------------------
    def set_rows(self, rows: Sequence[Row]) -> None:
        self.all_rows = tuple(rows)
        self._rebuild()

    def set_filter(self, row_filter: RowFilter) -> None:
        self.row_filter = row_filter
        self._rebuild()

    def sort_by(self, column: int) -> None:
        if self.sort_column == column:
            self.sort_descending = not self.sort_descending
        else:
            self.sort_column = column
            self.sort_descending = self.columns[column].descending_first
        self._rebuild()

    def _rebuild(self) -> None:
        # Keep the cursor on the same row (by key) when data, filter or order change.
        current = self.current_key
        rows = filter_rows(self.all_rows, self.row_filter)
        if self.sort_column is not None:
            rows = sort_rows(rows, self.sort_column, self.sort_descending)
        self.rows = rows
        self.virtual_size = Size(self.size.width, len(rows) + 1)
        index = next((i for i, r in enumerate(rows) if r.key == current), None)
        if index is None:
            index = min(self.cursor, max(0, len(rows) - 1))
        self.cursor = index
        self.refresh()

    @property
    def current_key(self) -> str | None:
        if 0 <= self.cursor < len(self.rows):
            return self.rows[self.cursor].key
        return None

    def toggle_mark(self) -> str | None:
        key = self.current_key
        if key is None:
            return None
        if key in self.marks:
            self.marks.discard(key)
        else:
            self.marks.add(key)
        self.action_cursor(1)
        self.refresh()
        return key

    def clear_marks(self) -> None:
        self.marks.clear()
        self.refresh()

    @property
    def sort_label(self) -> str:
        if self.sort_column is None:
            return ""
        arrow = "↓" if self.sort_descending else "↑"
        return f"{self.columns[self.sort_column].name}{arrow}"

    # -- movement -------------------------------------------------------------------------
    def watch_cursor(self, cursor: int) -> None:
        body = max(1, self.size.height - 1)
        top = int(self.scroll_y)
        if cursor < top:
            self.scroll_to(y=cursor, animate=False)
        elif cursor >= top + body:
            self.scroll_to(y=cursor - body + 1, animate=False)
        self.refresh()

    def action_cursor(self, delta: int) -> None:
        if self.rows:
            self.cursor = max(0, min(len(self.rows) - 1, self.cursor + delta))

    def action_page(self, direction: int) -> None:
        self.action_cursor(direction * max(1, self.size.height - 2))

    def action_jump(self, where: int) -> None:
        if self.rows:
            self.cursor = 0 if where == 0 else len(self.rows) - 1

    def action_select(self) -> None:
        key = self.current_key
        if key is not None:
            self.post_message(self.Selected(self, key))

    def on_key(self, event: events.Key) -> None:
        # Upper-case letters sort by the column whose sort key they are (k9s habit).
        char = event.character
        if char and char.isupper():
            for i, col in enumerate(self.columns):
                if col.sort_key == char:
                    self.sort_by(i)
                    event.stop()
                    event.prevent_default()
                    return

    def on_click(self, event: events.Click) -> None:
        row = int(self.scroll_y) + event.y - 1
        if event.y >= 1 and 0 <= row < len(self.rows):
            if row == self.cursor and event.chain >= 2:
                self.action_select()
            self.cursor = row

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, len(self.rows) + 1)

    # -- rendering ------------------------------------------------------------------------
    def _widths(self, total: int) -> list[int]:
        # One space between columns; the flexible column (width 0) takes what is left.
        fixed = sum(c.width for c in self.columns) + len(self.columns) - 1
        flex = max(4, total - fixed)
        return [c.width or flex for c in self.columns]

    def _line(self, cells: Sequence[str], widths: Sequence[int], marker: str) -> str:
        parts = [marker]
        for cell, width, col in zip(cells, widths, self.columns, strict=True):
            text = cell if len(cell) <= width else cell[: max(0, width - 1)] + "…"
            parts.append(text.rjust(width) if col.right else text.ljust(width))
        return parts[0] + " ".join(parts[1:])

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        widths = self._widths(width - 1)  # one column for the mark
        base = self.rich_style
        if y == 0:
            names = []
            for i, col in enumerate(self.columns):
                name = col.name
                if i == self.sort_column:
                    name += "↓" if self.sort_descending else "↑"
                names.append(name)
            text = self._line(names, widths, " ")
            style = base + self.get_component_rich_style("vtable--header")
            return Strip([Segment(text, style)]).adjust_cell_length(width, style)
        index = int(self.scroll_y) + y - 1
        if index >= len(self.rows):
            return Strip.blank(width, base)
        row = self.rows[index]
        marked = row.key in self.marks
        text = self._line(row.cells, widths, "●" if marked else " ")
        style = base
        if row.style:
            style += Style.parse(row.style)
        if marked:
            style += self.get_component_rich_style("vtable--marked")
        if index == self.cursor:
            style += self.get_component_rich_style("vtable--cursor")
        return Strip([Segment(text, style)]).adjust_cell_length(width, style)
