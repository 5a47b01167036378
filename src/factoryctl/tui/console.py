"""The console's data side: polling, the one reactive frame, chrome, and the views it feeds.

Data flow: a thread worker polls the source and builds a ``Frame`` off the event loop,
posts ``SnapshotFetched``; the handler sets the one ``frame`` reactive inside
``batch_update`` and the watcher hands the frame to the widgets. A failed poll keeps
the last frame and marks it stale with its age. ``FactoryApp`` (app.py) adds the
navigation, commands, marks and actions on top.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.reactive import reactive
from textual.timer import Timer
from textual.widgets import ContentSwitcher, Footer, Input, Static
from textual.worker import Worker

from factoryctl.errors import FactoryctlError
from factoryctl.model import GPU
from factoryctl.processes import ProcessTable, processes_of, unavailable
from factoryctl.telemetry.poll_detail import FULL, Detail, for_view
from factoryctl.triage import Problem, triage
from factoryctl.tui import fmt
from factoryctl.tui.backend import ActionBackend, SnapshotSource, poll_snapshot, takes_detail
from factoryctl.tui.frame import Frame, build_frame, with_rows
from factoryctl.tui.gcpolicy import PollGc
from factoryctl.tui.history import History
from factoryctl.tui.messages import (
    DetailGpusFetched,
    FetchFailed,
    ProcessesFetched,
    RolloutsFetched,
    SnapshotFetched,
    TriageReady,
)
from factoryctl.tui.rollout_rows import Loader
from factoryctl.tui.rollouts_view import RolloutsView
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
# The views that read a frame's rows (``Frame.nodes``, ``Frame.jobs``): the two tables and
# a job's detail (its row's figures). Triage builds its own rows from its problems.
ROW_VIEWS = frozenset({"nodes", "jobs", "job-detail"})
VIEW_TITLES = {
    "overview": "overview",
    "nodes": "nodes",
    "jobs": "jobs",
    "triage": "triage",
    "node-detail": "node",
    "job-detail": "job",
    "rollouts": "rollouts",
}


def describe(err: BaseException) -> str:
    if isinstance(err, FactoryctlError):
        return err.message
    return f"{type(err).__name__}: {err}"


class ConsoleBase(App[None]):
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
        rollouts: Loader | None = None,
    ) -> None:
        super().__init__()
        # Reads the campaign journals (``factoryctl rollout list``'s); None: no state dir.
        self.rollouts_loader = rollouts
        self.rollout_shown: str | None = None  # the campaign whose nodes :rollouts shows
        self._rollouts_worker: Worker[None] | None = None
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
        self._poll_started: float | None = None  # clock time the running poll began
        # What the last poll read (``poll_detail``); a source that cannot read less for
        # less reads everything, so no view ever waits for a fuller poll.
        self._reads_less = takes_detail(source)
        self._polled: Detail = FULL
        self.triage_problems: list[Problem] = []
        self.triage_time: float | None = None  # snapshot time the triage list is for
        self._triage_worker: Worker[None] | None = None
        # The shown node's GPU processes: fetched for that one node only, off the loop.
        self.node_processes: ProcessTable | None = None
        self._processes_worker: Worker[None] | None = None
        # A summarized snapshot's detail views: the shown node's or job's GPUs, fetched
        # for it alone (key "node:NAME" / "job:ID", the GPUs, an error).
        self.detail_gpus: tuple[str, tuple[GPU, ...], str] | None = None
        self._detail_worker: Worker[None] | None = None
        self._timer: Timer | None = None
        self.gc_policy = PollGc()
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
            yield RolloutsView(id="rollouts")
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
            self._start_rollouts()
        self._update_status()

    # -- :rollouts ------------------------------------------------------------------------
    def _start_rollouts(self) -> None:
        """Read the journals while the view is open, one read at a time (as triage)."""
        w = self._rollouts_worker
        if self.current_view != "rollouts" or (w is not None and not w.is_finished):
            return
        self._rollouts_worker = self._fetch_rollouts(self.rollout_shown)

    @work(thread=True, exclusive=True, group="rollouts", exit_on_error=False)
    def _fetch_rollouts(self, wanted: str | None) -> None:
        from factoryctl.tui import rollout_rows as rr

        loader = self.rollouts_loader
        if loader is None:
            msg = "rollouts: no state directory known to this console (factoryctl top has one)"
            self.post_message(RolloutsFetched(msg, [], "", [], ""))
            return
        try:
            read = rr.RolloutsRead(tuple(loader()), self.clock())
        except Exception as err:  # a journal we cannot read: say so, keep the console
            self.post_message(RolloutsFetched(f"rollouts: {describe(err)}", [], "", [], ""))
            return
        chosen = rr.pick(read, wanted)
        if chosen is None:
            self.post_message(
                RolloutsFetched("No campaigns (factoryctl rollout start).", [], "", [], "")
            )
            return
        campaign, status = chosen
        frame = self.frame  # Slurm's state of each node, as of the last poll
        states = {n.name: n.state.value for n in frame.snapshot.nodes} if frame else {}
        self.post_message(
            RolloutsFetched(
                f"{len(read.campaigns)} campaign(s); Enter shows one's nodes",
                rr.campaign_rows(read),
                rr.summary(campaign, status),
                rr.node_rows(campaign, states, read.at),
                campaign.id,
            )
        )

    def on_rollouts_fetched(self, message: RolloutsFetched) -> None:
        self.rollout_shown = message.shown or None
        self.query_one(RolloutsView).show(
            message.summary, message.campaigns, message.title, message.nodes
        )

    def poll(self) -> None:
        """Start a poll unless one is still running: polls never overlap or queue up."""
        w = self._poll_worker
        if w is not None and not w.is_finished:
            return
        self._poll_started = self.clock()
        self._poll_worker = self._fetch()

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def _fetch(self) -> None:
        started = time.perf_counter()
        try:
            # No cyclic GC while ~100,000 objects are made; frozen once built (gcpolicy).
            detail = for_view(self.current_view) if self._reads_less else None
            with self.gc_policy.building():
                snapshot = poll_snapshot(self.source, detail)
                self._polled = detail or FULL
                # No table rows for a view without them (a source that reads everything
                # anyway, the simulator's, always gets them: nothing changes there).
                rows = not self._reads_less or self.current_view in ROW_VIEWS
                frame = build_frame(snapshot, self._history, self.clock(), rows=rows)
        except Exception as err:  # any source failure: keep the old data, say why
            self.post_message(FetchFailed(describe(err), started))
            return
        self.post_message(SnapshotFetched(frame, started))

    def on_snapshot_fetched(self, message: SnapshotFetched) -> None:
        self.polls += 1
        applying = time.perf_counter()
        with self.batch_update():
            self._history = message.frame.history
            self.error = None
            # The view changed to one with rows while a poll built a frame without them.
            self.frame = self._rows_if_shown(message.frame)
            self._poll_started = None  # this poll is over, whatever its worker's state
            self._update_status()  # a late poll's "SLOW" goes with the data it waited for
        done = time.perf_counter()
        self.last_apply_seconds = done - applying  # time the event loop was busy with it
        self.last_poll_seconds = done - message.started
        self.call_after_refresh(self._painted, message.started)
        self.poll_if_short()

    def _rows_if_shown(self, frame: Frame) -> Frame:
        """The frame, with its rows where the view shown reads them: built here, on the
        event loop, only where the poll left them out (~0.1 s at 100,000 GPUs, once: the
        next poll, which ``poll_if_short`` starts for such a view, builds them itself)."""
        return with_rows(frame) if self.current_view in ROW_VIEWS else frame

    def show_rows(self) -> None:
        """Give a view just shown the rows the last poll left out."""
        frame = self.frame
        if frame is not None and (shown := self._rows_if_shown(frame)) is not frame:
            self.frame = shown  # the watcher sets the tables

    def poll_if_short(self) -> None:
        """Poll again at once where the view shown needs figures the last poll did not
        read (a lean Overview poll, then the Jobs view): one lean poll's wait, not a
        refresh interval's."""
        if self._reads_less and not self._polled.covers(for_view(self.current_view)):
            self.poll()

    def _painted(self, started: float) -> None:
        self.last_render_seconds = time.perf_counter() - started
        self.gc_policy.painted()  # a full collection, when due, lands between polls

    def on_unmount(self) -> None:
        self.gc_policy.release()

    def _start_triage(self) -> None:
        # One triage at a time: a thread worker cannot be stopped midway, so starting a
        # new one per poll would pile up threads on a factory where triage is slow. The
        # handler starts the next one if the data moved on meanwhile.
        frame = self.frame
        w = self._triage_worker
        if w is not None and not w.is_finished:
            return
        if frame is not None and self.triage_time != frame.snapshot.time:
            self._triage_worker = self._triage(frame)

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

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # A triage finished: catch up if the data moved on while it ran.
        w = event.worker
        if w is self._poll_worker and w.is_finished:
            self.poll_if_short()  # the view changed while a leaner poll ran
        if w is self._triage_worker and w.is_finished and self.current_view == "triage":
            self._start_triage()
        if w is self._detail_worker and w.is_finished:
            target = self._detail_target()
            if target is not None and (self.detail_gpus or ("",))[0] != target[0]:
                self._start_detail_gpus()
        # A process fetch finished while the user moved to another node: fetch that one.
        if w is self._processes_worker and w.is_finished:
            shown = self._shown_node()
            if shown is not None and (
                self.node_processes is None or self.node_processes.node != shown
            ):
                self._start_processes()

    def _shown_node(self) -> str | None:
        view, arg = self.view_stack[-1]
        return arg if view == "node-detail" else None

    def _start_processes(self) -> None:
        """Fetch the shown node's processes, one fetch at a time (as triage does)."""
        node = self._shown_node()
        w = self._processes_worker
        if node is None or (w is not None and not w.is_finished):
            return
        self._processes_worker = self._fetch_processes(node)

    @work(thread=True, exclusive=True, group="processes", exit_on_error=False)
    def _fetch_processes(self, node: str) -> None:
        try:
            table = processes_of(self.source, node)
        except Exception as err:  # a failed fetch says why in the detail, never crashes
            table = unavailable(node, f"fetch failed: {describe(err)}")
        self.post_message(ProcessesFetched(table))

    def _detail_target(self) -> tuple[str, tuple[str, ...]] | None:
        """(key, nodes) whose GPUs the shown detail needs, on a summarized snapshot."""
        frame = self.frame
        if frame is None or not frame.snapshot.node_summaries:
            return None
        view, arg = self.view_stack[-1]
        if view == "node-detail":
            return (f"node:{arg}", (arg,))
        job = frame.snapshot.job(arg) if view == "job-detail" else None
        return None if job is None else (f"job:{arg}", job.nodes)

    def _start_detail_gpus(self) -> None:
        """Fetch the shown detail's GPUs, one fetch at a time (as processes are)."""
        target = self._detail_target()
        fetch = getattr(self.source, "gpus_of_nodes", None)
        w = self._detail_worker
        if target is None or not callable(fetch) or (w is not None and not w.is_finished):
            return
        self._detail_worker = self._fetch_detail_gpus(target[0], target[1], fetch)

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def _fetch_detail_gpus(
        self, key: str, nodes: tuple[str, ...], fetch: Callable[[tuple[str, ...]], Any]
    ) -> None:
        try:
            self.post_message(DetailGpusFetched(key, tuple(fetch(nodes))))
        except Exception as err:  # said in the detail, never a crash
            self.post_message(DetailGpusFetched(key, (), f"fetch failed: {describe(err)}"))

    def on_detail_gpus_fetched(self, message: DetailGpusFetched) -> None:
        self.detail_gpus = (message.key, message.gpus, message.error)
        if message.error:
            self.say(f"GPUs of {message.key}: {message.error}", "error")
        self._render_detail()

    def _shown_gpus(self, key: str) -> tuple[GPU, ...] | None:
        got = self.detail_gpus
        return got[1] if got is not None and got[0] == key else None

    def on_processes_fetched(self, message: ProcessesFetched) -> None:
        if message.table.node == self._shown_node():
            self.node_processes = message.table
            self._render_detail()

    def on_fetch_failed(self, message: FetchFailed) -> None:
        self.polls += 1
        self.error = message.error
        self._poll_started = None
        self.say(f"poll failed: {message.error}", "error")

    def watch_frame(self, frame: Frame | None) -> None:
        if frame is None:
            return
        self.query_one("#title", Static).update(header_text(frame.snapshot))
        if frame.rows_built:  # else the hidden tables keep their rows (and cursors)
            self.query_one("#nodes", VirtualTable).set_rows(frame.nodes)
            self.query_one("#jobs", VirtualTable).set_rows(frame.jobs)
        self.query_one(OverviewView).show(frame)
        self._render_detail()
        self._start_detail_gpus()
        if self.current_view == "triage":
            self._start_triage()
        self._start_processes()
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
        late = self._late_poll()
        status.set_class(self.error is not None or late is not None, "stale")
        status.set_class(self.paused and self.error is None, "paused")
        if late is not None and frame is not None and self.error is None:
            # A slow engine: the screen keeps the last data and says how old it is.
            age = fmt.age(self.clock() - frame.snapshot.time)
            status.update(f"SLOW: data is {age} old; a poll has been running for {late}")
        elif self.error is not None:
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

    def _late_poll(self) -> str | None:
        """How long the running poll has taken, once it is late: past two refresh
        periods (or 5 s, polling on demand). None when no poll is running or it is not."""
        w, started = self._poll_worker, self._poll_started
        if w is None or w.is_finished or started is None:
            return None
        running = self.clock() - started
        return fmt.age(running) if running > max(2 * (self.refresh_seconds or 0), 5.0) else None

    def say(self, message: str, severity: str = "information") -> None:
        """Tell the user something, and keep it where tests and bug reports can read it."""
        self.messages.append((severity, message))
        self.notify(message, severity=severity)  # type: ignore[arg-type]

    # -- navigation -----------------------------------------------------------------------
    def _render_detail(self) -> None:
        view, arg = self.view_stack[-1]
        if view == "node-detail":
            w = self.query_one("#node-detail", DetailView)
            procs = self.node_processes
            procs = procs if procs is not None and procs.node == arg else None
            gpus = self._shown_gpus(f"node:{arg}")
            w.set_body(node_detail(self.frame, arg, self.size.width, procs, gpus))
        elif view == "job-detail":
            w = self.query_one("#job-detail", DetailView)
            gpus = self._shown_gpus(f"job:{arg}")
            w.set_body(job_detail(self.frame, arg, self.size.width, gpus))

    def action_heat_metric(self) -> None:
        metric = self.query_one(HeatMap).toggle_metric()
        self.say(f"heat map shows {metric}")

    def action_pause(self) -> None:
        self.paused = not self.paused

    def action_refresh(self) -> None:
        self.poll()
        self._start_rollouts()
