"""The ``:rollouts`` view: the campaigns, and one campaign's nodes (the latest, or the
one Enter chose). Rows come built from the rollouts worker (``rollout_rows``); this widget
only shows them."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from factoryctl.tui.rollout_rows import CAMPAIGN_COLUMNS, CAMPAIGN_NODE_COLUMNS
from factoryctl.tui.rows import Row
from factoryctl.tui.table import VirtualTable


class RolloutsView(Vertical):
    DEFAULT_CSS = """
    RolloutsView #rollout-campaigns { height: 8; }
    RolloutsView #rollout-summary, RolloutsView #rollout-title { height: auto; padding: 0 1; }
    RolloutsView #rollout-title { background: $panel; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="rollout-summary")
        yield VirtualTable(CAMPAIGN_COLUMNS, id="rollout-campaigns")
        yield Static("", id="rollout-title")
        yield VirtualTable(CAMPAIGN_NODE_COLUMNS, id="rollout-nodes")

    def show(
        self, summary: str, campaigns: Sequence[Row], title: str, nodes: Sequence[Row]
    ) -> None:
        self.query_one("#rollout-summary", Static).update(summary)
        self.query_one("#rollout-campaigns", VirtualTable).set_rows(campaigns)
        self.query_one("#rollout-title", Static).update(title)
        self.query_one("#rollout-nodes", VirtualTable).set_rows(nodes)
