"""Pilot tests: drive keys, wait for workers (never sleep), assert on state and messages."""

from __future__ import annotations

from textual.widgets import Button, Input, Static
from tui_fakes import (
    NOW,
    BlockingSource,
    EmptySource,
    FakeClock,
    FlakySource,
    RefusingBackend,
    demo,
    settle,
    text_of,
)

from factoryctl.model import NodeState
from factoryctl.telemetry.demo import DemoSource
from factoryctl.tui import make_app
from factoryctl.tui.app import FactoryApp
from factoryctl.tui.backend import ActionBackend
from factoryctl.tui.modals import ActionModal, HelpScreen
from factoryctl.tui.sim_backend import SimActionBackend
from factoryctl.tui.table import VirtualTable


def app_for(
    source: object,
    *,
    clock: FakeClock | None = None,
    actions: ActionBackend | None = None,
    readonly: bool = False,
    keymap: dict[str, str] | None = None,
) -> FactoryApp:
    return make_app(
        source,  # type: ignore[arg-type]
        refresh=None,
        clock=clock or FakeClock(),
        actions=actions,
        readonly=readonly,
        keymap=keymap,
    )


def sim_app(source: DemoSource, **kw: object) -> tuple[FactoryApp, SimActionBackend]:
    backend = SimActionBackend(source.sim, clock=lambda: NOW, max_nodes=kw.pop("max_nodes", 16))  # type: ignore[arg-type]
    return app_for(source, actions=backend, **kw), backend  # type: ignore[arg-type]


def table(app: FactoryApp, name: str) -> VirtualTable:
    return app.query_one(f"#{name}", VirtualTable)


def said(app: FactoryApp, text: str) -> bool:
    return any(text in m for _, m in app.messages)


async def type_text(pilot: object, text: str) -> None:
    for ch in text:
        await pilot.press(ch)  # type: ignore[attr-defined]


async def command(pilot: object, text: str) -> None:
    await pilot.press("colon")  # type: ignore[attr-defined]
    await type_text(pilot, text)
    await pilot.press("enter")  # type: ignore[attr-defined]
    await settle(pilot)


async def test_first_poll_fills_every_view(source: DemoSource) -> None:
    app = app_for(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.polls == 1
        assert app.frame is not None
        assert len(table(app, "nodes").all_rows) == 16
        assert len(table(app, "jobs").all_rows) == len(app.frame.snapshot.jobs)
        totals = text_of(app.query_one("#totals", Static))
        assert "16:" in totals or "128 total" in totals
        assert app.error is None


async def test_command_mode_navigates_and_escape_goes_back(source: DemoSource) -> None:
    app = app_for(source)
    async with app.run_test() as pilot:
        await settle(pilot)
        await command(pilot, "nodes")
        assert app.current_view == "nodes"
        await command(pilot, "node gpu003")
        assert app.view_stack[-1] == ("node-detail", "gpu003")
        job = next(j for j in app.frame.snapshot.jobs if j.state.value == "running")  # type: ignore[union-attr]
        await command(pilot, f"job {job.job_id}")
        assert app.view_stack[-1] == ("job-detail", job.job_id)
        await pilot.press("escape")
        assert app.view_stack[-1] == ("node-detail", "gpu003")
        await pilot.press("escape")
        assert app.current_view == "nodes"
        await command(pilot, "jobs")
        assert app.current_view == "jobs"


async def test_unknown_command_and_unknown_node_say_so_and_app_stays_up(
    source: DemoSource,
) -> None:
    app = app_for(source)
    async with app.run_test() as pilot:
        await settle(pilot)
        await command(pilot, "frobnicate")
        assert said(app, "unknown command :frobnicate")
        await command(pilot, "node nosuch")
        assert said(app, "unknown node 'nosuch'")
        await command(pilot, "job 999999999")
        assert said(app, "unknown job '999999999'")
        assert app.is_running
        await pilot.press("2")
        assert app.current_view == "nodes"


async def test_filter_invert_invalid_regex_and_clear(source: DemoSource) -> None:
    app = app_for(source)
    async with app.run_test() as pilot:
        await settle(pilot)
        await pilot.press("2", "slash")
        await type_text(pilot, "gpu00[1-3]")
        await pilot.press("enter")
        nodes = table(app, "nodes")
        assert [r.key for r in nodes.rows] == ["gpu001", "gpu002", "gpu003"]
        await pilot.press("slash")
        prompt = app.query_one("#prompt", Input)
        assert prompt.value == "gpu00[1-3]"  # the prompt starts from the current filter
        prompt.value = "!gpu00[1-3]"
        await pilot.press("enter")
        assert len(nodes.rows) == 13
        assert "gpu001" not in {r.key for r in nodes.rows}
        await pilot.press("slash")
        app.query_one("#prompt", Input).value = "gpu[0"
        await pilot.press("enter")
        assert said(app, "invalid filter /gpu[0/")
        assert len(nodes.rows) == 13  # the previous filter stays
        await pilot.press("escape")  # first Esc clears the filter
        assert len(nodes.rows) == 16
        assert app.current_view == "nodes"


async def test_sort_by_column_key_and_reverse(source: DemoSource) -> None:
    app = app_for(source)
    async with app.run_test() as pilot:
        await settle(pilot)
        await pilot.press("2", "P")
        nodes = table(app, "nodes")
        power = [r.values[4] for r in nodes.rows]
        assert power == sorted(power, reverse=True)  # type: ignore[type-var]
        assert nodes.sort_label == "POWER↓"
        await pilot.press("P")
        power = [r.values[4] for r in nodes.rows]
        assert power == sorted(power)  # type: ignore[type-var]
        await pilot.press("N")
        assert [r.key for r in nodes.rows][:2] == ["gpu001", "gpu002"]


async def test_enter_drills_into_the_row_under_the_cursor(source: DemoSource) -> None:
    app = app_for(source)
    async with app.run_test() as pilot:
        await settle(pilot)
        await pilot.press("2", "down", "down", "enter")
        assert app.view_stack[-1] == ("node-detail", "gpu003")
        body = text_of(app.query_one("#node-detail #body", Static))
        assert "gpu003" in body
        await pilot.press("escape", "3", "enter")
        assert app.view_stack[-1] == ("job-detail", table(app, "jobs").rows[0].key)


async def test_mark_and_drain_with_reason_shows_result_and_audit(source: DemoSource) -> None:
    app, backend = sim_app(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("2", "space", "space")
        assert table(app, "nodes").marks == {"gpu001", "gpu002"}
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, ActionModal)
        plan = app.screen.plan
        assert plan.nodes == ("gpu001", "gpu002")
        assert plan.gpus_lost == 16
        await type_text(pilot, "fan swap")
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(app.screen, ActionModal)
        assert said(app, "drain: 2 node(s) done")
        assert app.audit and "reason='fan swap'" in app.audit[-1]
        assert backend.audit_log == app.audit
        states = {r.key: r.cells[1] for r in table(app, "nodes").all_rows}
        assert states["gpu001"] in (NodeState.DRAINING, NodeState.DRAINED)
        assert states["gpu002"] in (NodeState.DRAINING, NodeState.DRAINED)
        assert table(app, "nodes").marks == set()


async def test_action_on_zero_marked_rows_says_so(source: DemoSource) -> None:
    app, backend = sim_app(source)
    async with app.run_test() as pilot:
        await settle(pilot)
        await pilot.press("2", "d")
        await settle(pilot)
        assert said(app, "drain: no rows marked")
        assert not isinstance(app.screen, ActionModal)
        assert backend.audit_log == []


async def test_empty_reason_is_refused_and_dialog_stays(source: DemoSource) -> None:
    app, backend = sim_app(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("2", "space", "b")
        await settle(pilot)
        await type_text(pilot, "   ")
        await pilot.press("enter")
        assert isinstance(app.screen, ActionModal)
        assert said(app, "a reason is required")
        await pilot.press("escape")
        assert said(app, "reboot cancelled")
        assert all(a.reboot_until is None for a in source.sim.admin)
        assert backend.audit_log == []


async def test_blast_radius_refusal_disables_confirm(source: DemoSource) -> None:
    app, backend = sim_app(source, max_nodes=1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("2", "space", "space", "b")
        await settle(pilot)
        assert isinstance(app.screen, ActionModal)
        assert app.screen.query_one("#confirm", Button).disabled
        assert said(app, "reboot refused: blast radius: 2 nodes exceeds the limit of 1")
        await type_text(pilot, "firmware")
        await pilot.press("enter")
        assert isinstance(app.screen, ActionModal)
        await pilot.press("escape")
        assert all(a.reboot_until is None for a in source.sim.admin)
        assert backend.audit_log == []


async def test_scheduler_refusal_is_shown_and_nothing_changes(source: DemoSource) -> None:
    backend = RefusingBackend(SimActionBackend(source.sim))
    app = app_for(source, actions=backend)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("2", "space", "d")
        await settle(pilot)
        await type_text(pilot, "bad dimm")
        await pilot.press("enter")
        await settle(pilot)
        assert said(app, "drain refused by the scheduler: scontrol: error: Invalid node state")
        assert not source.sim.admin[0].drain
        assert app.is_running


async def test_readonly_hides_and_refuses_every_action(source: DemoSource) -> None:
    backend = SimActionBackend(source.sim)
    app = app_for(source, actions=backend, readonly=True)
    async with app.run_test() as pilot:
        await settle(pilot)
        await pilot.press("2", "space", "d", "b", "u", "m")
        await settle(pilot)
        assert not isinstance(app.screen, ActionModal)
        assert app.check_action("act", ("drain",)) is False
        assert "act" not in {b.binding.action.split("(")[0] for b in app.active_bindings.values()}
        await command(pilot, "drain")
        assert said(app, "drain refused: read-only console")
        assert "READ-ONLY" in text_of(app.query_one("#crumbs", Static))
        assert not any(a.drain for a in source.sim.admin)
        assert "Drain" not in str(app.help_text())


async def test_failed_poll_keeps_data_and_marks_it_stale_with_age(source: DemoSource) -> None:
    flaky, clock = FlakySource(source), FakeClock()
    app = app_for(flaky, clock=clock)
    async with app.run_test() as pilot:
        await settle(pilot)
        first = app.frame
        flaky.fail = True
        clock.t = NOW + 42
        await pilot.press("r")
        await settle(pilot)
        assert flaky.calls == 2
        assert app.frame is first
        assert app.error is not None and "unreachable" in app.error
        status = text_of(app.query_one("#status", Static))
        assert "STALE" in status and "42s old" in status
        assert said(app, "poll failed: Prometheus at http://127.0.0.1:9 unreachable")
        flaky.fail = False
        await pilot.press("r")
        await settle(pilot)
        assert app.error is None
        assert "STALE" not in text_of(app.query_one("#status", Static))


async def test_polls_never_overlap_and_the_loop_stays_responsive(source: DemoSource) -> None:
    slow = BlockingSource(source)
    app = app_for(slow)
    async with app.run_test() as pilot:
        # The first poll is blocked inside the source; keys are still handled.
        await pilot.press("2")
        assert app.current_view == "nodes"
        await pilot.press("r", "r", "r")
        assert slow.calls == 1
        slow.release.set()
        await settle(pilot)
        assert slow.calls == 1 and app.polls == 1
        assert len(table(app, "nodes").all_rows) == 16


async def test_a_slow_poll_keeps_the_screen_and_says_how_old_the_data_is(
    source: DemoSource,
) -> None:
    slow, clock = BlockingSource(source), FakeClock()
    slow.release.set()
    app = app_for(slow, clock=clock)
    async with app.run_test() as pilot:
        await settle(pilot)
        first = app.frame
        assert first is not None
        slow.release.clear()
        await pilot.press("r")  # this poll hangs in the engine
        assert slow.entered.wait(5)
        clock.t = first.snapshot.time + 3
        app._update_status()
        assert "SLOW" not in text_of(app.query_one("#status", Static))  # not late yet
        clock.t = first.snapshot.time + 30
        await pilot.press("2")  # keys are still handled
        app._update_status()
        status = text_of(app.query_one("#status", Static))
        assert "SLOW: data is 30s old" in status and "running for 30s" in status, status
        assert app.frame is first and app.current_view == "nodes"
        slow.release.set()
        await settle(pilot)
        assert app.polls == 2
        assert "SLOW" not in text_of(app.query_one("#status", Static))


async def test_pause_stops_timed_polls_but_not_a_manual_refresh(source: DemoSource) -> None:
    app = app_for(source)
    async with app.run_test() as pilot:
        await settle(pilot)
        await pilot.press("p")
        assert app.paused
        app._tick()  # what the refresh timer calls
        await settle(pilot)
        assert app.polls == 1
        assert "PAUSED" in text_of(app.query_one("#status", Static))
        await pilot.press("r")
        await settle(pilot)
        assert app.polls == 2
        await pilot.press("p")
        app._tick()
        await settle(pilot)
        assert app.polls == 3


async def test_history_grows_with_polls_for_sparklines(source: DemoSource) -> None:
    app = app_for(source)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        for _ in range(3):
            source.advance_to(source.sim.now + 10)
            await pilot.press("r")
            await settle(pilot)
        assert app.frame is not None
        assert len(app.frame.history.samples) == 4
        assert len(app.frame.history.series("gpu001", 0, "utilization")) == 4


async def test_bindings_are_remappable_by_id(source: DemoSource) -> None:
    app, _ = sim_app(source, keymap={"drain": "x", "view_nodes": "n"})
    async with app.run_test() as pilot:
        await settle(pilot)
        await pilot.press("n")
        assert app.current_view == "nodes"
        await pilot.press("d")
        await settle(pilot)
        assert not said(app, "drain:")
        await pilot.press("x")
        await settle(pilot)
        assert said(app, "drain: no rows marked")
        assert "x" in app.help_text().plain


async def test_help_opens_and_closes(source: DemoSource) -> None:
    app = app_for(source)
    async with app.run_test() as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_empty_source_shows_a_message_not_a_crash() -> None:
    app = app_for(EmptySource())
    async with app.run_test() as pilot:
        await settle(pilot)
        assert "no nodes reported" in text_of(app.query_one("#totals", Static))
        await pilot.press("2", "enter", "space", "P")
        assert app.current_view == "nodes"


async def test_a_big_factory_table_holds_every_row_but_renders_a_window() -> None:
    src = demo(nodes=600, seed=3)
    app = app_for(src)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2", "end")
        nodes = table(app, "nodes")
        assert nodes.cursor == 599
        assert nodes.scroll_y > 500
        await pilot.press("home")
        assert nodes.cursor == 0 and nodes.scroll_y == 0


async def test_triage_view_lists_problems_drills_down_and_drains(source: DemoSource) -> None:
    source.sim.inject_xid("gpu005", 3, 48)  # double-bit ECC: hardware, suggests a drain
    app, _ = sim_app(source)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        await command(pilot, "triage")
        assert app.current_view == "triage"
        triage = table(app, "triage")
        assert app.triage_time == app.frame.snapshot.time  # type: ignore[union-attr]
        keys = [r.key for r in triage.rows if r.cells[2] == "gpu005"]
        assert keys, [r.cells for r in triage.rows]
        problem = app.triage_problems[int(keys[0])]
        assert problem.node == "gpu005"
        triage.cursor = triage.rows.index(next(r for r in triage.rows if r.key == keys[0]))
        await pilot.press("space")
        assert app.action_targets() == ["gpu005"]
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, ActionModal)
        assert app.screen.plan.nodes == ("gpu005",)
        await pilot.press("escape")
        triage.cursor = triage.rows.index(next(r for r in triage.rows if r.key == keys[0]))
        await pilot.press("enter")
        assert app.view_stack[-1] == ("node-detail", "gpu005")
        if problem.action:
            assert said(app, f"suggested: {problem.action}")


async def test_heat_map_switches_between_utilization_and_power(source: DemoSource) -> None:
    from factoryctl.tui.views import HeatMap

    app = app_for(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        heat = app.query_one(HeatMap)
        assert heat.metric == "utilization"
        assert "GPU utilization" in str(heat.render())
        await pilot.press("h")
        assert heat.metric == "power"
        assert "GPU power / power limit" in str(heat.render())
        frame = app.frame
        assert frame is not None
        gpu = frame.snapshot.gpus[0]
        assert gpu.power_watts is not None and gpu.power_limit_watts
        assert frame.gpu_power[0] == gpu.power_watts / gpu.power_limit_watts


async def test_fast_typing_reaches_the_prompt(source: DemoSource) -> None:
    """Keys that arrive in one burst (a fast typist, tmux send-keys, a paste) after ':'
    go to the prompt, not to the bindings behind it (``d`` would start a drain)."""
    from textual import events

    app, _ = sim_app(source)
    async with app.run_test() as pilot:
        await settle(pilot)
        for key, char in [("colon", ":"), *((c, c) for c in "nodes"), ("enter", None)]:
            event = events.Key(key, char)
            event.set_sender(app)
            app._driver.send_message(event)  # type: ignore[union-attr]
        await settle(pilot)
        assert app.current_view == "nodes"
        assert not any("drain" in m for _, m in app.messages)


async def test_one_triage_at_a_time_however_many_polls(
    source: DemoSource, monkeypatch: object
) -> None:
    import threading

    import factoryctl.tui.console as console
    from factoryctl.triage import triage as real_triage

    release, calls = threading.Event(), []

    def slow_triage(snapshot: object) -> object:
        calls.append(snapshot)
        release.wait(10)
        return real_triage(snapshot)  # type: ignore[arg-type]

    monkeypatch.setattr(console, "triage", slow_triage)  # type: ignore[attr-defined]
    app = app_for(source)
    async with app.run_test() as pilot:
        await settle(pilot)
        await pilot.press("4")
        for _ in range(3):  # new data while the first triage is still running
            source.advance_to(source.sim.now + 5)
            app.poll()
            await app.workers.wait_for_complete([w for w in app.workers if w.group == "poll"])
            await pilot.pause()
        assert len(calls) == 1
        release.set()
        await settle(pilot)
        # The first result lands, then one more triage catches up with the latest data.
        assert len(calls) == 2
        assert app.triage_time == app.frame.snapshot.time  # type: ignore[union-attr]
