"""Rows for the console's ``:rollouts`` view, built without Textual: the campaigns (as
``factoryctl rollout list`` reads them from the journals) and one campaign's nodes, with
the step each is at, Slurm's state of it, how long it has been there and why it failed.

Built in the rollouts worker's thread from a ``RolloutsRead`` (what the journals said, and
when) and the latest frame's Slurm states; the widget only shows them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from factoryctl.actions.rollout_journal import Campaign
from factoryctl.actions.rollout_phases import FAILED, PENDING, SKIPPED
from factoryctl.tui import fmt
from factoryctl.tui.rows import Column, Row

CAMPAIGN_COLUMNS = (
    Column("ID", 9, "I"),
    Column("USER", 8, "U"),
    Column("STATUS", 11, "S"),
    Column("DONE", 5, "D", right=True, descending_first=True),
    Column("FAIL", 4, "F", right=True, descending_first=True),
    Column("TOTAL", 5, "T", right=True, descending_first=True),
    Column("STARTED", 17, "A"),
    Column("REASON", 0, "R"),
)
CAMPAIGN_NODE_COLUMNS = (
    Column("NODE", 10, "N"),
    Column("STEP", 13, "P"),
    Column("SLURM", 9, "S"),
    Column("FOR", 7, "E", right=True, descending_first=True),
    Column("FAILURE / NOTE", 0, "F"),
)

# A campaign as the console shows it: what its journal says, and whether a process runs it
# ("interrupted": journal says running, nobody holds its lock).
Listed = tuple[Campaign, str]
Loader = Callable[[], Sequence[Listed]]


@dataclass(frozen=True, slots=True)
class RolloutsRead:
    campaigns: tuple[Listed, ...]
    at: float  # when the journals were read (the console's clock)


def campaign_rows(read: RolloutsRead) -> list[Row]:
    """Newest first: the campaign being run now is the one looked for."""
    rows = []
    for campaign, status in reversed(read.campaigns):
        started = campaign.spec.get("time")
        rows.append(
            Row(
                key=campaign.id,
                cells=(
                    campaign.id,
                    campaign.user,
                    status,
                    str(campaign.count("done")),
                    str(campaign.count(FAILED)),
                    str(len(campaign.nodes)),
                    fmt.utc(float(started))[:16] if started else "-",
                    campaign.reason,
                ),
                values=(
                    campaign.id,
                    campaign.user,
                    status,
                    campaign.count("done"),
                    campaign.count(FAILED),
                    len(campaign.nodes),
                    float(started or 0.0),
                    campaign.reason,
                ),
                style=_status_style(status),
            )
        )
    return rows


def node_rows(campaign: Campaign, slurm: Mapping[str, str], now: float) -> list[Row]:
    """One row per node in campaign order; ``slurm``: node -> Slurm state ("-" unknown)."""
    rows = []
    for name, rec in campaign.nodes.items():
        elapsed = now - rec.since if rec.since and rec.phase != PENDING else None
        note = f"{rec.step} failed: {rec.note}" if rec.phase == FAILED else rec.note
        rows.append(
            Row(
                key=name,
                cells=(name, rec.phase, slurm.get(name, "-"), fmt.duration(elapsed), note),
                values=(name, rec.phase, slurm.get(name, "-"), elapsed, note),
                style="bold red" if rec.phase == FAILED else "dim" if rec.phase == SKIPPED else "",
            )
        )
    return rows


def summary(campaign: Campaign, status: str) -> str:
    s = campaign.summary()
    head = f"rollout {campaign.id} by {campaign.user}: {status}"
    counts = (
        f"{s['done']} done, {s['failed']} failed, {s['skipped']} skipped, "
        f"{len(s['in_flight'])} in flight, {s['pending']} pending of {s['total']}"
    )
    return f"{head} · {counts}" + (f" · {campaign.message}" if campaign.message else "")


def pick(read: RolloutsRead, wanted: str | None) -> Listed | None:
    """The campaign to show: the one chosen if it still exists, else the latest."""
    for item in read.campaigns:
        if item[0].id == wanted:
            return item
    return read.campaigns[-1] if read.campaigns else None


def _status_style(status: str) -> str:
    return {
        "running": "bold green",
        "breaker": "bold red",
        "interrupted": "bold yellow",
        "paused": "yellow",
        "aborted": "red",
    }.get(status, "")
