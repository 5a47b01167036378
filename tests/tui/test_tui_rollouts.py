"""The console's ``:rollouts`` view over injected campaign journals: the pure rows, the
view driven by keys (journals read in the rollouts worker), and its SVG snapshot (new, on
purpose, with this view). ~2 s."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from tui_fakes import NOW, FakeClock, demo, settle

from factoryctl.actions.rollout_journal import Campaign, Store, replay
from factoryctl.tui import make_app
from factoryctl.tui.app import FactoryApp
from factoryctl.tui.rollout_rows import RolloutsRead, campaign_rows, node_rows, pick
from factoryctl.tui.table import VirtualTable

Snap = Callable[..., bool]


def _journal(
    cid: str, user: str, started: float, steps: Sequence[tuple[str, str, float, dict[str, Any]]]
) -> Campaign:
    records: list[dict[str, Any]] = [
        {
            "event": "campaign",
            "id": cid,
            "user": user,
            "reason": "driver 550",
            "time": started,
            "order": ["gpu001", "gpu002", "gpu003", "gpu004", "gpu005"],
        }
    ]
    for node, phase, t, extra in steps:
        records.append({"event": "node", "node": node, "phase": phase, "time": t, **extra})
    return replay(records)


def campaigns() -> list[tuple[Campaign, str]]:
    old = _journal("0ldc0ffe", "alice", NOW - 86400, [("gpu001", "done", NOW - 86000, {})])
    now = _journal(
        "c0ffee01",
        "erin",
        NOW - 600,
        [
            ("gpu001", "done", NOW - 400, {}),
            ("gpu002", "failed", NOW - 300, {"step": "xid", "note": "GPU 5: XID 79 x1"}),
            ("gpu003", "gate", NOW - 90, {"note": "waiting up to 120s for its GPUs"}),
            ("gpu004", "skipped", NOW - 200, {"note": "jobs outlived --drain-timeout"}),
        ],
    )
    return [(old, "finished"), (now, "running")]


def test_rows_newest_campaign_first_and_nodes_with_step_state_elapsed_failure() -> None:
    read = RolloutsRead(tuple(campaigns()), NOW)
    rows = campaign_rows(read)
    assert [r.key for r in rows] == ["c0ffee01", "0ldc0ffe"]
    assert rows[0].cells[:6] == ("c0ffee01", "erin", "running", "1", "1", "5")
    chosen = pick(read, None)
    assert chosen is not None and chosen[0].id == "c0ffee01"  # the latest by default
    picked = pick(read, "0ldc0ffe")
    assert picked is not None and picked[0].id == "0ldc0ffe"
    nodes = node_rows(chosen[0], {"gpu002": "drained", "gpu003": "drained"}, NOW)
    by = {r.key: r.cells for r in nodes}
    assert by["gpu002"] == ("gpu002", "failed", "drained", "5m00s", "xid failed: GPU 5: XID 79 x1")
    assert by["gpu003"][1:4] == ("gate", "drained", "1m30s")
    assert by["gpu005"][1:4] == ("pending", "-", "-")  # not started: no elapsed time


def _app(loader: Callable[[], list[tuple[Campaign, str]]] | None) -> FactoryApp:
    return make_app(demo(), refresh=None, clock=FakeClock(), rollouts=loader)


def _cells(app: FactoryApp, table: str) -> list[tuple[str, ...]]:
    return [r.cells for r in app.query_one(f"#{table}", VirtualTable).rows]


async def test_rollouts_view_lists_campaigns_and_enter_shows_another_ones_nodes() -> None:
    calls = []

    def loader() -> list[tuple[Campaign, str]]:
        calls.append(1)
        return campaigns()

    app = _app(loader)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        assert calls == []  # journals are read only while the view is open
        await pilot.press("5")
        await settle(pilot)
        assert [c[0] for c in _cells(app, "rollout-campaigns")] == ["c0ffee01", "0ldc0ffe"]
        nodes = _cells(app, "rollout-nodes")
        assert app.frame is not None
        slurm = {n.name: n.state.value for n in app.frame.snapshot.nodes}
        assert [c[:3] for c in nodes[:2]] == [
            ("gpu001", "done", slurm["gpu001"]),  # the state is the source's, as polled
            ("gpu002", "failed", slurm["gpu002"]),
        ]
        await pilot.press("down", "enter")
        await settle(pilot)
        assert app.rollout_shown == "0ldc0ffe"
        assert [c[1] for c in _cells(app, "rollout-nodes")] == [
            "done",
            "pending",
            "pending",
            "pending",
            "pending",
        ]
        assert app.view_stack[-1] == ("rollouts", "")


async def test_without_journals_or_with_a_broken_one_the_view_says_so() -> None:
    def broken() -> list[tuple[Campaign, str]]:
        raise OSError("permission denied: /state/factoryctl/rollouts")

    for loader, words in [
        (None, "no state directory"),
        (broken, "permission denied"),
        (list, "No campaigns"),
    ]:
        app = _app(loader)  # type: ignore[arg-type]
        async with app.run_test(size=(100, 24)) as pilot:
            await settle(pilot)
            app.show_view("rollouts")
            await settle(pilot)
            summary = str(app.query_one("#rollout-summary").render())
            assert words in summary, summary
            assert _cells(app, "rollout-nodes") == []


def test_journals_from_a_store_load_like_rollout_list(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for campaign, _ in campaigns():
        journal = store.journal(campaign.id)
        journal.append({"event": "campaign", **campaign.spec})
    assert [c.id for c in store.campaigns()] == ["0ldc0ffe", "c0ffee01"]


def test_rollouts_snapshot(snap_compare: Snap) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        pilot.app.show_view("rollouts")  # type: ignore[attr-defined]
        await settle(pilot)

    assert snap_compare(_app(campaigns), terminal_size=(100, 30), run_before=run_before)


@pytest.mark.parametrize(
    "command", [":ro"]
)  # :rollouts and its aliases: tests/tui/test_tui_pure.py
async def test_rollouts_command(command: str) -> None:
    app = _app(campaigns)
    async with app.run_test(size=(100, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*command)
        await pilot.press("enter")
        await settle(pilot)
        assert app.current_view == "rollouts"
