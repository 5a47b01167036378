"""The console app: navigation, ``:`` commands, ``/`` filters, marks and actions, on top
of ``ConsoleBase`` (console.py: polling, the reactive frame and the views)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Input

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.tui.backend import Action, ActionPlan
from factoryctl.tui.commands import CommandError, parse_command, parse_filter
from factoryctl.tui.console import TABLE_VIEWS, ConsoleBase, describe
from factoryctl.tui.help import help_text
from factoryctl.tui.messages import ActionDone, PlanReady
from factoryctl.tui.modals import ActionModal, HelpScreen
from factoryctl.tui.table import VirtualTable

SCHEDULER_STATUSES = {
    ExitStatus.SCHEDULER_ERROR,
    ExitStatus.SCHEDULER_UNREACHABLE,
    ExitStatus.PARTIAL,
    ExitStatus.TIMEOUT,
}


def refusal_text(verb: str, err: BaseException) -> str:
    """Say who said no: a guard (blast radius, ownership, bad reason) or the scheduler."""
    if isinstance(err, FactoryctlError) and err.status not in SCHEDULER_STATUSES:
        return f"{verb} refused: {err.message}"
    return f"{verb} refused by the scheduler: {describe(err)}"


class FactoryApp(ConsoleBase):
    # Every binding has an id so a config file can remap it (``make_app(keymap=...)``).
    BINDINGS: ClassVar[list[BindingType]] = [
        # Priority: handled as the key arrives, so the prompt has focus before the next
        # key of a burst (fast typing, a paste, tmux send-keys) is routed anywhere.
        Binding("colon", "command", "Cmd", id="command", priority=True),
        Binding("slash", "filter", "Filter", id="filter", priority=True),
        Binding("question_mark", "help", "Help", id="help"),
        Binding("d", "act('drain')", "Drain", id="drain"),
        Binding("u", "act('resume')", "Resume", id="resume"),
        Binding("b", "act('reboot')", "Reboot", id="reboot"),
        Binding("m", "act('maint')", "Maint", id="maint"),
        Binding("space", "mark", "Mark", id="mark"),
        Binding("p", "pause", "Pause", id="pause"),
        Binding("h", "heat_metric", "Heat map", show=False, id="heatmap_metric"),
        Binding("r", "refresh", "Refresh", id="refresh"),
        Binding("escape", "go_back", "Back", id="back"),
        Binding("1", "view('overview')", "Overview", show=False, id="view_overview"),
        Binding("2", "view('nodes')", "Nodes", show=False, id="view_nodes"),
        Binding("3", "view('jobs')", "Jobs", show=False, id="view_jobs"),
        Binding("4", "view('triage')", "Triage", show=False, id="view_triage"),
        Binding("5", "view('rollouts')", "Rollouts", show=False, id="view_rollouts"),
        Binding("q", "quit", "Quit", id="quit"),
    ]

    def show_view(self, view: str, arg: str = "", *, push: bool = True) -> None:
        if push and self.view_stack[-1] != (view, arg):
            if view in ("overview", "rollouts", *TABLE_VIEWS):
                # Top-level views replace the trail, as k9s does with :nodes / :jobs.
                self.view_stack = (
                    [(view, arg)] if view == "overview" else [("overview", ""), (view, arg)]
                )
            else:
                self.view_stack.append((view, arg))
        self.show_rows()  # before the switch: the table is filled when it appears
        self.query_one(ContentSwitcher).current = view
        self._render_detail()
        if view == "triage":
            self._start_triage()
        if view == "rollouts":
            self._start_rollouts()
        self._start_processes()
        self._start_detail_gpus()
        self.poll_if_short()
        widget = self.query_one("#rollout-campaigns" if view == "rollouts" else f"#{view}")
        if widget.can_focus:
            widget.focus()
        self._update_chrome()

    def action_view(self, view: str) -> None:
        self.show_view(view)

    def action_go_back(self) -> None:
        if self.prompt_mode:
            self._close_prompt()
            return
        table = self.current_table()
        if table is not None and table.row_filter.text:
            table.set_filter(parse_filter(""))
            self._update_crumbs()
            return
        if len(self.view_stack) > 1:
            self.view_stack.pop()
            self.show_view(self.view_stack[-1][0], self.view_stack[-1][1], push=False)

    @on(VirtualTable.Selected)
    def _drill(self, event: VirtualTable.Selected) -> None:
        if event.table.id == "nodes":
            self.show_view("node-detail", event.key)
        elif event.table.id == "jobs":
            self.show_view("job-detail", event.key)
        elif event.table.id == "rollout-campaigns":
            self.rollout_shown = event.key
            self._start_rollouts()
        elif event.table.id == "triage":
            problem = self.triage_problems[int(event.key)]
            if problem.node:
                self.open_node(problem.node)
            elif problem.jobs:
                self.open_job(problem.jobs[0][0])
            if problem.action:
                self.say(f"suggested: {problem.action}")

    def open_node(self, name: str) -> None:
        frame = self.frame
        if frame is None or frame.snapshot.node(name) is None:
            self.say(f"unknown node {name!r}", "error")
            return
        self.show_view("node-detail", name)

    def open_job(self, job_id: str) -> None:
        frame = self.frame
        if frame is None or frame.snapshot.job(job_id) is None:
            self.say(f"unknown job {job_id!r}", "error")
            return
        self.show_view("job-detail", job_id)

    # -- prompt: ":" commands and "/" filters ---------------------------------------------
    def action_command(self) -> None:
        self._open_prompt("command", "", ":nodes  :jobs  :node NAME  :job ID  :help")

    def action_filter(self) -> None:
        table = self.current_table()
        if table is None:
            self.say("filter works in :nodes and :jobs", "warning")
            return
        self._open_prompt("filter", table.row_filter.text, "regex, !regex to invert")

    def _open_prompt(self, mode: str, value: str, placeholder: str) -> None:
        prompt = self.query_one("#prompt", Input)
        self.prompt_mode = mode
        prompt.placeholder = placeholder
        prompt.value = value
        prompt.disabled = False
        prompt.add_class("visible")
        # Focus now, not after the queued events (Widget.focus defers): keys typed in
        # the same burst as ":" (fast typists, pastes, tmux send-keys) belong to the prompt.
        self.screen.set_focus(prompt)

    def _close_prompt(self) -> None:
        prompt = self.query_one("#prompt", Input)
        self.prompt_mode = ""
        prompt.remove_class("visible")
        prompt.disabled = True
        widget = self.query_one(f"#{self.current_view}")
        if widget.can_focus:
            widget.focus()

    @on(Input.Submitted, "#prompt")
    def _prompt_submitted(self, event: Input.Submitted) -> None:
        mode, value = self.prompt_mode, event.value
        self._close_prompt()
        if mode == "filter":
            self.apply_filter(value)
        elif mode == "command":
            self.run_command(value)

    def apply_filter(self, text: str) -> None:
        table = self.current_table()
        if table is None:
            return
        try:
            row_filter = parse_filter(text)
        except CommandError as err:
            self.say(str(err), "error")
            return
        table.set_filter(row_filter)
        self._update_crumbs()

    def run_command(self, text: str) -> None:
        try:
            cmd = parse_command(text)
        except CommandError as err:
            self.say(str(err), "error")
            return
        if cmd.verb == "view":
            self.show_view(cmd.arg)
        elif cmd.verb == "node":
            self.open_node(cmd.arg)
        elif cmd.verb == "job":
            self.open_job(cmd.arg)
        elif cmd.verb in {a.value for a in Action}:
            self.action_act(cmd.verb)
        elif cmd.verb == "help":
            self.action_help()
        elif cmd.verb == "quit":
            self.exit()
        elif cmd.verb == "pause":
            self.action_pause()
        elif cmd.verb == "refresh":
            self.action_refresh()

    # -- marks and actions ----------------------------------------------------------------
    def action_mark(self) -> None:
        table = self.current_table()
        if table is None:
            self.say("marks work in :nodes and :jobs", "warning")
            return
        table.toggle_mark()
        self._update_crumbs()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Read-only consoles hide every action; the command line still refuses them aloud.
        if action in ("command", "filter"):
            # Inside any text field (the prompt, the reason) ":" and "/" are just text.
            return self.screen is self.screen_stack[0] and not isinstance(self.focused, Input)
        return not (action == "act" and self.actions_backend is None)

    def action_targets(self) -> list[str]:
        view, arg = self.view_stack[-1]
        if view == "node-detail":
            return [arg]
        if view == "nodes":
            table = self.query_one("#nodes", VirtualTable)
            order = [r.key for r in table.all_rows]
            return [k for k in order if k in table.marks]
        if view == "triage":
            # Marked problems act on their nodes (once each, in list order).
            table = self.query_one("#triage", VirtualTable)
            nodes = [self.triage_problems[int(k)].node for k in sorted(table.marks, key=int)]
            return list(dict.fromkeys(n for n in nodes if n))
        return []

    def action_act(self, name: str) -> None:
        if self.actions_backend is None:
            why = "read-only console" if self.readonly else "no action layer configured"
            self.say(f"{name} refused: {why}", "error")
            return
        nodes = self.action_targets()
        if not nodes:
            self.say(
                f"{name}: no rows marked (mark nodes with space in :nodes or :triage, "
                "or open a node)",
                "warning",
            )
            return
        self._plan(Action(name), nodes)

    @work(thread=True, exclusive=True, group="action", exit_on_error=False)
    def _plan(self, action: Action, nodes: list[str]) -> None:
        assert self.actions_backend is not None
        try:
            plan = self.actions_backend.plan(action, nodes, "")
        except Exception as err:
            self.post_message(ActionDone(None, f"{action.value} refused: {describe(err)}"))
            return
        self.post_message(PlanReady(plan))

    def on_plan_ready(self, message: PlanReady) -> None:
        plan = message.plan
        if plan.refused:
            self.say(f"{plan.action.value} refused: {plan.refused}", "error")

        def confirmed(reason: str | None) -> None:
            if reason is None:
                self.say(f"{plan.action.value} cancelled")
                return
            self._execute(plan, reason)

        self.push_screen(ActionModal(plan), confirmed)

    @work(thread=True, exclusive=True, group="action", exit_on_error=False)
    def _execute(self, plan: ActionPlan, reason: str) -> None:
        backend = self.actions_backend
        assert backend is not None
        try:
            # Plan again with the reason: the cluster may have moved while the dialog was open.
            final = backend.plan(plan.action, plan.nodes, reason)
            if final.refused:
                self.post_message(ActionDone(None, f"{plan.action.value} refused: {final.refused}"))
                return
            result = backend.execute(final)
        except Exception as err:
            self.post_message(ActionDone(None, refusal_text(plan.action.value, err)))
            return
        self.post_message(ActionDone(result))

    def on_action_done(self, message: ActionDone) -> None:
        result = message.result
        if result is None:
            self.say(message.error, "error")
            return
        self.audit.extend(result.audit)
        severity = "error" if result.failed else "information"
        audit = f"\naudit: {result.audit[-1]}" if result.audit else ""
        self.say(result.summary + audit, severity)
        self.query_one("#nodes", VirtualTable).clear_marks()
        self.query_one("#triage", VirtualTable).clear_marks()
        self._update_crumbs()
        self.poll()

    # -- misc -----------------------------------------------------------------------------
    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_text()))

    def help_text(self) -> Text:
        keymap = getattr(self, "_keymap", {}) or {}
        return help_text(self.BINDINGS, keymap, self.actions_backend is not None)

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "Overview", "Factory totals and heat map", lambda: self.show_view("overview")
        )
        yield SystemCommand("Nodes", "All nodes", lambda: self.show_view("nodes"))
        yield SystemCommand("Jobs", "All jobs", lambda: self.show_view("jobs"))
        yield SystemCommand(
            "Triage", "Problems, whom they hurt, what to do", lambda: self.show_view("triage")
        )
        yield SystemCommand("Pause / resume polling", "Freeze the screen", self.action_pause)
        yield SystemCommand("Refresh now", "Poll the source once", self.action_refresh)
        if self.actions_backend is not None:
            for action in Action:
                yield SystemCommand(
                    f"{action.value.capitalize()} marked nodes",
                    "Shows the plan and asks for a reason first",
                    lambda a=action.value: self.action_act(a),
                )
