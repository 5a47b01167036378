"""The console's dialog through the real action layer (plan, guards, audit) over the
demo scheduler, as ``factoryctl demo`` and ``factoryctl top --demo`` wire it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tui_fakes import FakeClock, settle

from factoryctl.actions.audit import AuditLog
from factoryctl.actions.guards import BlastRadius
from factoryctl.model import NodeState
from factoryctl.scheduler.demo import DemoScheduler
from factoryctl.telemetry.demo import DemoSource
from factoryctl.tui import make_app
from factoryctl.tui.app import FactoryApp
from factoryctl.tui.layer_backend import ActionLayerBackend
from factoryctl.tui.modals import ActionModal
from factoryctl.tui.table import VirtualTable


def layer_app(source: DemoSource, audit: Path, max_nodes: int = 16) -> FactoryApp:
    backend = ActionLayerBackend(
        DemoScheduler(source.sim),
        BlastRadius(ratio=1.0, max_nodes=max_nodes),
        AuditLog(audit),
        "operator1",
    )
    return make_app(source, refresh=None, clock=FakeClock(), actions=backend)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def said(app: FactoryApp, text: str) -> bool:
    return any(text in m for _, m in app.messages)


async def test_drain_goes_through_the_action_layer_and_the_audit_log(
    source: DemoSource, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    app = layer_app(source, audit)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("2", "space", "space", "d")
        await settle(pilot)
        assert isinstance(app.screen, ActionModal)
        plan = app.screen.plan
        assert plan.nodes == ("gpu001", "gpu002") and plan.gpus_lost == 16
        assert plan.jobs and any("keeps running" in n for n in plan.notes)
        for ch in "psu swap":
            await pilot.press("space" if ch == " " else ch)
        await pilot.press("enter")
        await settle(pilot)
        assert said(app, "drain: 2 node(s) done")
        assert any("audit " in line and "operator1" in line for line in app.audit)
    events = [r["event"] for r in records(audit)]
    assert events == ["start", "result"]
    assert records(audit)[0]["reason"] == "factoryctl: psu swap (operator1)"
    nodes = {n.name: n for n in source.snapshot().nodes}
    assert nodes["gpu001"].state in (NodeState.DRAINING, NodeState.DRAINED)
    assert nodes["gpu001"].reason == "factoryctl: psu swap (operator1)"


async def test_blast_radius_refusal_is_shown_and_logged(source: DemoSource, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    app = layer_app(source, audit, max_nodes=1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("2", "space", "space", "b")
        await settle(pilot)
        assert isinstance(app.screen, ActionModal)
        assert app.screen.plan.refused is not None
        assert said(app, "reboot refused: blast radius: reboot would act on 2 of 16 nodes")
        await pilot.press("escape")
    assert [r["event"] for r in records(audit)] == ["refused"]
    assert all(a.reboot_until is None for a in source.sim.admin)


async def test_resume_of_a_health_check_drain_is_refused_by_ownership(
    source: DemoSource, tmp_path: Path
) -> None:
    source.sim.inject_xid("gpu004", 2, 79)  # NHC drains the node with its own reason
    app = layer_app(source, tmp_path / "audit.jsonl")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        nodes = app.query_one("#nodes", VirtualTable)
        nodes.cursor = [r.key for r in nodes.rows].index("gpu004")
        await pilot.press("space", "u")
        await settle(pilot)
        assert isinstance(app.screen, ActionModal)
        assert "drained by Slurm or a health check" in (app.screen.plan.refused or "")
        await pilot.press("escape")
    assert source.sim.admin[3].drain


async def test_maintenance_needs_the_cli_for_its_window(source: DemoSource, tmp_path: Path) -> None:
    app = layer_app(source, tmp_path / "audit.jsonl")
    async with app.run_test() as pilot:
        await settle(pilot)
        await pilot.press("2", "space", "m")
        await settle(pilot)
        assert not isinstance(app.screen, ActionModal)
        assert said(app, "maint refused: a maintenance window needs a start and a duration")
