"""The console app: polling, navigation, commands, filters, marks and actions.

Data flow: a thread worker polls the source and builds a ``Frame`` off the event loop,
posts ``SnapshotFetched``; the handler sets the one ``frame`` reactive inside
``batch_update`` and the watcher hands the frame to the widgets. A failed poll keeps
the last frame and marks it stale with its age.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import ContentSwitcher, Footer, Input, Static
from textual.worker import Worker

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.triage import Problem, triage
from factoryctl.tui import fmt
from factoryctl.tui.backend import Action, ActionBackend, ActionPlan, SnapshotSource
from factoryctl.tui.commands import KNOWN, CommandError, parse_command, parse_filter
from factoryctl.tui.frame import Frame, build_frame
from factoryctl.tui.history import History
from factoryctl.tui.messages import (
    ActionDone,
    FetchFailed,
    PlanReady,
    SnapshotFetched,
    TriageReady,
)
from factoryctl.tui.modals import ActionModal, HelpScreen
from factoryctl.tui.rows import JOB_COLUMNS, NODE_COLUMNS, TRIAGE_COLUMNS, triage_rows
from factoryctl.tui.table import VirtualTable
from factoryctl.tui.views import (
    DetailView,
    HeatMap,
    OverviewView,
    header_text,
    job_detail,
    node_detail,
)

TABLE_VIEWS = ("nodes", "jobs", "triage")
VIEW_TITLES = {
    "overview": "overview",
    "nodes": "nodes",
    "jobs": "jobs",
    "triage": "triage",
    "node-detail": "node",
    "job-detail": "job",
}


def describe(err: BaseException) -> str:
    if isinstance(err, FactoryctlError):
        return err.message
    return f"{type(err).__name__}: {err}"


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


class FactoryApp(App[None]):
    TITLE = "factoryctl top"
    AUTO_FOCUS = None
    CSS = """
    #title { height: 1; background: $primary; color: $text; padding: 0 1; }
    #crumbs { height: 1; background: $panel; padding: 0 1; }
    #status { height: 1; padding: 0 1; }
    #status.stale { background: $error 30%; color: $text; }
    #status.paused { background: $warning 30%; }
    #prompt { dock: bottom; display: none; border: none; height: 1; padding: 0 1; }
    #prompt.visible { display: block; }
    ContentSwitcher { height: 1fr; }
    """
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
        Binding("q", "quit", "Quit", id="quit"),
    ]

    frame: reactive[Frame | None] = reactive(None, always_update=True)
    error: reactive[str | None] = reactive(None)
    paused: reactive[bool] = reactive(False)

    def __init__(
        self,
        source: SnapshotSource,
        *,
        readonly: bool = False,
        refresh: float | None = 2.0,
        clock: Callable[[], float] | None = None,
        actions: ActionBackend | None = None,
        keymap: Mapping[str, str] | None = None,
        history: int = 60,
    ) -> None:
        super().__init__()
        self.source = source
        self.readonly = readonly
        self.refresh_seconds = refresh
        self.clock = clock or time.time
        self.actions_backend = None if readonly else actions
        self._history = History(capacity=history)
        self.view_stack: list[tuple[str, str]] = [("overview", "")]
        self.prompt_mode = ""
        self.messages: list[tuple[str, str]] = []  # (severity, text) for tests and triage
        self.audit: list[str] = []
        self.polls = 0
        self.last_poll_seconds: float | None = None  # fetch + build, for the benchmark
        self.last_render_seconds: float | None = None  # poll start to painted screen
        self.last_apply_seconds: float | None = None  # event-loop time to apply a frame
        self._poll_worker: Worker[None] | None = None
        self.triage_problems: list[Problem] = []
        self.triage_time: float | None = None  # snapshot time the triage list is for
        self._timer: Timer | None = None
        if keymap:
            self.set_keymap(dict(keymap))

    # -- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(header_text(None), id="title")
        yield Static("", id="crumbs")
        with ContentSwitcher(initial="overview"):
            yield OverviewView(id="overview")
            yield VirtualTable(NODE_COLUMNS, id="nodes")
            yield VirtualTable(JOB_COLUMNS, id="jobs")
            yield VirtualTable(TRIAGE_COLUMNS, id="triage")
            yield DetailView(id="node-detail")
            yield DetailView(id="job-detail")
        yield Static("", id="status")
        yield Input(id="prompt", disabled=True)  # enabled only while prompting
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(OverviewView).show(None)
        self._update_chrome()
        self.poll()
        if self.refresh_seconds:
            self._timer = self.set_interval(self.refresh_seconds, self._tick)

    # -- polling --------------------------------------------------------------------------
    def _tick(self) -> None:
        if not self.paused:
            self.poll()
        self._update_status()

    def poll(self) -> None:
        """Start a poll unless one is still running: polls never overlap or queue up."""
        w = self._poll_worker
        if w is not None and not w.is_finished:
            return
        self._poll_worker = self._fetch()

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def _fetch(self) -> None:
        started = time.perf_counter()
        # A 100,000-GPU snapshot is ~2 million small acyclic objects; letting the cyclic
        # GC scan them while they are being built costs ~30% of the poll. Reference
        # counting still frees everything; cycles wait for the next collection.
        pause_gc = gc.isenabled()
        if pause_gc:
            gc.disable()
        try:
            snapshot = self.source.snapshot()
            frame = build_frame(snapshot, self._history, self.clock())
        except Exception as err:  # any source failure: keep the old data, say why
            self.post_message(FetchFailed(describe(err), started))
            return
        finally:
            if pause_gc:
                gc.enable()
        self.post_message(SnapshotFetched(frame, started))

    def on_snapshot_fetched(self, message: SnapshotFetched) -> None:
        self.polls += 1
        applying = time.perf_counter()
        with self.batch_update():
            self._history = message.frame.history
            self.error = None
            self.frame = message.frame
        done = time.perf_counter()
        self.last_apply_seconds = done - applying  # time the event loop was busy with it
        self.last_poll_seconds = done - message.started
        self.call_after_refresh(self._painted, message.started)

    def _painted(self, started: float) -> None:
        self.last_render_seconds = time.perf_counter() - started

    def _start_triage(self) -> None:
        frame = self.frame
        if frame is not None and self.triage_time != frame.snapshot.time:
            self._triage(frame)

    @work(thread=True, exclusive=True, group="triage", exit_on_error=False)
    def _triage(self, frame: Frame) -> None:
        # Triage walks nodes x jobs: computed only while its view is open, off the loop.
        problems = triage(frame.snapshot)
        self.post_message(TriageReady(problems, triage_rows(problems), frame.snapshot.time))

    def on_triage_ready(self, message: TriageReady) -> None:
        self.triage_problems = message.problems
        self.triage_time = message.snapshot_time
        self.query_one("#triage", VirtualTable).set_rows(message.rows)
        self._update_crumbs()

    def on_fetch_failed(self, message: FetchFailed) -> None:
        self.polls += 1
        self.error = message.error
        self.say(f"poll failed: {message.error}", "error")

    def watch_frame(self, frame: Frame | None) -> None:
        if frame is None:
            return
        self.query_one("#title", Static).update(header_text(frame.snapshot))
        self.query_one("#nodes", VirtualTable).set_rows(frame.nodes)
        self.query_one("#jobs", VirtualTable).set_rows(frame.jobs)
        self.query_one(OverviewView).show(frame)
        self._render_detail()
        if self.current_view == "triage":
            self._start_triage()
        self._update_chrome()

    def watch_error(self) -> None:
        self._update_status()

    def watch_paused(self) -> None:
        self._update_status()

    # -- chrome ---------------------------------------------------------------------------
    @property
    def current_view(self) -> str:
        return self.view_stack[-1][0]

    def current_table(self) -> VirtualTable | None:
        view = self.current_view
        return self.query_one(f"#{view}", VirtualTable) if view in TABLE_VIEWS else None

    def _update_chrome(self) -> None:
        self._update_crumbs()
        self._update_status()

    def _update_crumbs(self) -> None:
        text = Text()
        for i, (v, a) in enumerate(self.view_stack):
            if i:
                text.append(" › ", style="dim")
            label = f"{VIEW_TITLES[v]} {a}".strip()
            text.append(f"<{label}>", style="bold" if i == len(self.view_stack) - 1 else "dim")
        table = self.current_table()
        if table is not None:
            text.append(f"  {fmt.count(len(table.rows))}/{fmt.count(len(table.all_rows))} rows")
            if table.row_filter.text:
                text.append(f"  filter /{table.row_filter.text}/", style="yellow")
            if table.sort_label:
                text.append(f"  sort {table.sort_label}")
            if table.marks:
                text.append(f"  marked {len(table.marks)}", style="bold yellow")
            if table.id == "triage" and self.frame and self.triage_time != self.frame.snapshot.time:
                text.append("  triaging…", style="dim")
        if self.readonly:
            text.append("  READ-ONLY", style="bold cyan")
        self.query_one("#crumbs", Static).update(text)

    def _update_status(self) -> None:
        status = self.query_one("#status", Static)
        frame = self.frame
        status.set_class(self.error is not None, "stale")
        status.set_class(self.paused and self.error is None, "paused")
        if self.error is not None:
            if frame is None:
                status.update(f"NO DATA: {self.error}")
            else:
                age = fmt.age(self.clock() - frame.snapshot.time)
                status.update(f"STALE: data is {age} old; last poll failed: {self.error}")
        elif frame is None:
            status.update("connecting…")
        elif self.paused:
            status.update("PAUSED: press p to resume, r to poll once")
        else:
            every = f"every {self.refresh_seconds:g}s" if self.refresh_seconds else "on demand (r)"
            status.update(f"live: polling {every}")

    def say(self, message: str, severity: str = "information") -> None:
        """Tell the user something, and keep it where tests and bug reports can read it."""
        self.messages.append((severity, message))
        self.notify(message, severity=severity)  # type: ignore[arg-type]

    # -- navigation -----------------------------------------------------------------------
    def show_view(self, view: str, arg: str = "", *, push: bool = True) -> None:
        if push and self.view_stack[-1] != (view, arg):
            if view in ("overview", *TABLE_VIEWS):
                # Top-level views replace the trail, as k9s does with :nodes / :jobs.
                self.view_stack = (
                    [(view, arg)] if view == "overview" else [("overview", ""), (view, arg)]
                )
            else:
                self.view_stack.append((view, arg))
        self.query_one(ContentSwitcher).current = view
        self._render_detail()
        if view == "triage":
            self._start_triage()
        widget = self.query_one(f"#{view}")
        if widget.can_focus:
            widget.focus()
        self._update_chrome()

    def _render_detail(self) -> None:
        view, arg = self.view_stack[-1]
        if view == "node-detail":
            w = self.query_one("#node-detail", DetailView)
            w.set_body(node_detail(self.frame, arg, self.size.width))
        elif view == "job-detail":
            w = self.query_one("#job-detail", DetailView)
            w.set_body(job_detail(self.frame, arg, self.size.width))

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
    def action_heat_metric(self) -> None:
        metric = self.query_one(HeatMap).toggle_metric()
        self.say(f"heat map shows {metric}")

    def action_pause(self) -> None:
        self.paused = not self.paused

    def action_refresh(self) -> None:
        self.poll()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_text()))

    def help_text(self) -> Text:
        text = Text()
        text.append("factoryctl top: keys\n\n", style="bold")
        for key, binding in self._bindings_by_id():
            if binding.action.startswith("act(") and self.actions_backend is None:
                continue
            text.append(f"  {key:<14}", style="bold cyan")
            text.append(f"{binding.description}  [{binding.id}]\n")
        text.append("\nIn tables\n", style="bold")
        text.append("  up/down j/k    move   pgup/pgdn  page   home/end  jump\n")
        text.append("  enter          open the row   space  mark the row\n")
        text.append("  Shift+letter   sort by the column with that key (again: reverse)\n")
        text.append("    nodes: N name S state G GPUs U util P power T temp X XIDs R reason\n")
        text.append("    jobs:  J id U user S state G GPUs R runtime M util I idle E kWh F flag\n")
        text.append("    triage: V severity K kind N node G GPU U users S summary\n")
        text.append("\nCommands (:)\n", style="bold")
        text.append("  :overview :nodes :jobs :triage :node NAME :job ID\n")
        text.append("  :pause :refresh :help :quit\n")
        if self.actions_backend is not None:
            text.append("  :drain :resume :reboot :maint   act on marked nodes\n")
        text.append(
            "\nFilter (/): a case-insensitive regex; !regex keeps rows that do not match.\n"
        )
        text.append("Esc clears the filter, then goes back. ctrl+p opens the command palette.\n")
        text.append(f"\nKnown commands: {' '.join(KNOWN)}\n", style="dim")
        return text

    def _bindings_by_id(self) -> Iterable[tuple[str, Binding]]:
        keymap = getattr(self, "_keymap", {}) or {}
        for b in self.BINDINGS:
            if isinstance(b, Binding) and b.id:
                yield keymap.get(b.id, b.key), b

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
