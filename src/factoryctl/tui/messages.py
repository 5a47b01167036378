"""Messages the workers post to the app (the only way data enters the event loop)."""

from __future__ import annotations

from textual.message import Message

from factoryctl.model import GPU
from factoryctl.processes import ProcessTable
from factoryctl.triage import Problem
from factoryctl.tui.backend import ActionPlan, ActionResult
from factoryctl.tui.frame import Frame
from factoryctl.tui.rows import Row


class SnapshotFetched(Message):
    def __init__(self, frame: Frame, started: float) -> None:
        super().__init__()
        self.frame = frame
        self.started = started  # perf_counter() when the poll began


class FetchFailed(Message):
    def __init__(self, error: str, started: float) -> None:
        super().__init__()
        self.error = error
        self.started = started


class PlanReady(Message):
    def __init__(self, plan: ActionPlan) -> None:
        super().__init__()
        self.plan = plan


class ActionDone(Message):
    def __init__(self, result: ActionResult | None, error: str = "") -> None:
        super().__init__()
        self.result = result
        self.error = error


class TriageReady(Message):
    def __init__(self, problems: list[Problem], rows: list[Row], snapshot_time: float) -> None:
        super().__init__()
        self.problems = problems
        self.rows = rows
        self.snapshot_time = snapshot_time


class ProcessesFetched(Message):
    """One node's GPU processes, fetched for the Node detail being shown."""

    def __init__(self, table: ProcessTable) -> None:
        super().__init__()
        self.table = table


class RolloutsFetched(Message):
    """The journals read and the ``:rollouts`` rows built, in the rollouts worker."""

    def __init__(
        self, summary: str, campaigns: list[Row], title: str, nodes: list[Row], shown: str
    ) -> None:
        super().__init__()
        self.summary = summary
        self.campaigns = campaigns
        self.title = title
        self.nodes = nodes
        self.shown = shown  # the campaign whose nodes these are ("" none)


class DetailGpusFetched(Message):
    """The GPUs of the node or job a detail view shows, fetched for it alone (a
    summarized snapshot holds only the problem GPUs). ``key``: "node:NAME" or "job:ID"."""

    def __init__(self, key: str, gpus: tuple[GPU, ...], error: str = "") -> None:
        super().__init__()
        self.key = key
        self.gpus = gpus
        self.error = error
