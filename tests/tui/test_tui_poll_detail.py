"""The console asks a source that can read less for what the shown view needs
(``telemetry.poll_detail``), and polls again at once when a view needs more than the last
poll read. Cost: a 24-node demo, a few polls, well under a second."""

from __future__ import annotations

from tui_fakes import NOW, FakeClock, settle

from factoryctl.model import FactorySnapshot
from factoryctl.summaries import summarized
from factoryctl.telemetry.demo import DemoSource
from factoryctl.telemetry.poll_detail import FULL, LEAN, VIEW_DETAIL, Detail
from factoryctl.tui import make_app


class Leaning:
    """A rollup-reading source over the demo that records what each poll was asked."""

    def __init__(self) -> None:
        self.src = DemoSource.create(nodes=24, gpus_per_node=8, seed=4, now=NOW, warmup=60)
        self.asked: list[Detail] = []

    def console_snapshot(self, detail: Detail = FULL) -> FactorySnapshot:
        self.asked.append(detail)
        return summarized(self.src.snapshot())

    def snapshot(self) -> FactorySnapshot:
        raise AssertionError("the console polls console_snapshot()")


async def test_each_view_polls_what_it_shows_and_a_fuller_view_polls_at_once() -> None:
    source = Leaning()
    app = make_app(source, refresh=None, clock=FakeClock())  # type: ignore[arg-type]
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert source.asked == [LEAN]  # the Overview: no job figures, no XID counts
        app.show_view("jobs")  # needs the jobs' utilization and power: polled at once
        await settle(pilot)
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert source.asked[1:] == [VIEW_DETAIL["jobs"]], source.asked
        app.show_view("overview")  # needs less than the last poll read: no extra poll
        await settle(pilot)
        assert len(source.asked) == 2
        app.poll()
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert source.asked[2:] == [LEAN]
        app.show_view("nodes")  # the nodes' XID counts
        await settle(pilot)
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert source.asked[3:] == [VIEW_DETAIL["nodes"]], source.asked
