"""``factoryctl top`` at gigafactory scale: 12,500 nodes x 8 GPUs = 100,000 GPUs.

    .venv/bin/python benchmarks/tui_bench.py [--nodes 12500] [--polls 5] [--keys 200]

Measures, with the app running headless (Textual's compositor renders every frame; the
headless driver only skips writing the bytes to a terminal):

* poll start -> rendered screen: the poller's thread takes a snapshot and builds the
  frame (rows, summary, heat-map values, history); the app sets it and the screen is
  re-rendered. Timed from the worker's start to the first refresh after the frame is set.
  Baselines in the same run: the source's bare ``snapshot()`` and ``build_frame``.
* key -> screen while scrolling the Nodes view (down and page-down), from posting the key
  to the first refresh after it was handled. Baseline in the same run: Textual's own
  ``DataTable`` holding the same 12,500 rows (time to load it, and its key latency).
* RSS after the run, and peak RSS (ru_maxrss).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import resource
import statistics
import time
from typing import Any

import psutil

from factoryctl.telemetry.demo import DemoSource
from factoryctl.tui import make_app
from factoryctl.tui.frame import build_frame
from factoryctl.tui.history import History
from factoryctl.tui.rows import NODE_COLUMNS

HOUR = 1_780_000_000.0 // 3600 * 3600
NOW = HOUR + 60  # with warmup 0 the sim starts on the hour, a minute before now


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def stats(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (
        f"median {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
        f"max {ordered[-1] * 1000:.1f} ms (n={len(ordered)})"
    )


async def after_refresh(app: Any) -> None:
    done = asyncio.Event()
    app.call_after_refresh(done.set)
    await done.wait()


async def key_latency(app: Any, table: Any, key: str, n: int) -> list[float]:
    """Post the key through the driver as a terminal would; stop the clock at the first
    screen refresh after the table's cursor moved. (Pilot.press adds idle-detection
    sleeps of its own, so it would measure the harness, not the app.)"""
    from textual import events

    samples = []
    for _ in range(n):
        before = table.cursor
        event = events.Key(key, None)
        event.set_sender(app)
        start = time.perf_counter()
        app._driver.send_message(event)
        while table.cursor == before:
            await asyncio.sleep(0)
        await after_refresh(app)
        samples.append(time.perf_counter() - start)
    return samples


async def bench_console(source: DemoSource, polls: int, keys: int) -> dict[str, Any]:
    app = make_app(source, refresh=None, clock=lambda: source.sim.now)
    out: dict[str, Any] = {}
    async with app.run_test(size=(160, 48)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        for view in ("nodes", "overview"):
            app.show_view(view)
            await after_refresh(app)
            samples, applied = [], []
            for _ in range(polls):
                t = time.perf_counter()
                source.advance_to(source.sim.now + 5, step_seconds=5)  # not in the poll figure
                out.setdefault("advance", []).append(time.perf_counter() - t)
                before = app.polls
                app.last_render_seconds = None
                app.poll()
                while app.polls == before or app.last_render_seconds is None:
                    await app.workers.wait_for_complete()
                    await pilot.pause()
                samples.append(app.last_render_seconds)
                applied.append(app.last_apply_seconds)
            out[f"poll_to_screen_{view}"] = samples
            out[f"apply_{view}"] = applied
        # The console's one full GC pass (every ``full_every`` polls, between polls, on
        # the event loop): timed here once, with what the polls above left frozen. (An
        # older console, run as a baseline, has no such policy.)
        policy = getattr(app, "gc_policy", None)
        if policy is not None:
            out["full_gc"] = [policy.collect()]
            out["full_gc_every"] = policy.full_every
        app.show_view("nodes")
        await after_refresh(app)
        table = app.query_one("#nodes")
        for key, n in (("down", keys), ("pagedown", max(10, keys // 10))):
            out[f"key_{key}"] = await key_latency(app, table, key, n)
    return out


async def bench_datatable(source: DemoSource, keys: int) -> dict[str, Any]:
    """The baseline: Textual's DataTable with the same rows (loaded once, not per poll)."""
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable

    rows = build_frame(source.snapshot(), History(), source.sim.now).nodes

    class Baseline(App[None]):
        def compose(self) -> ComposeResult:
            yield DataTable()

    app = Baseline()
    out: dict[str, Any] = {}
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one(DataTable)
        table.add_columns(*(c.name for c in NODE_COLUMNS))
        start = time.perf_counter()
        table.add_rows([r.cells for r in rows])
        await after_refresh(app)
        out["load"] = time.perf_counter() - start
        table.focus()
        await pilot.pause()

        class Cursor:  # DataTable's cursor, read the way key_latency reads ours
            @property
            def cursor(self) -> int:
                return table.cursor_row

        for key, n in (("down", keys), ("pagedown", max(10, keys // 10))):
            out[f"key_{key}"] = await key_latency(app, Cursor(), key, n)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=12_500)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--polls", type=int, default=5)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--no-baseline", action="store_true", help="Skip the DataTable run.")
    args = parser.parse_args()
    proc = psutil.Process()
    rss0 = proc.memory_info().rss

    t = time.perf_counter()
    source = DemoSource.create(
        nodes=args.nodes, gpus_per_node=args.gpus_per_node, seed=1, now=NOW, warmup=0
    )
    create = time.perf_counter() - t
    gc.collect()
    rss_sim = proc.memory_info().rss  # the simulator alone: no snapshot built yet
    gpus = args.nodes * args.gpus_per_node
    print(f"# {args.nodes} nodes x {args.gpus_per_node} = {gpus:,} GPUs")
    print(
        f"machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} cpus, "
        f"python {platform.python_version()}"
    )
    print(f"simulator built in {create:.1f} s (not part of any figure below)")

    snaps = []
    frames = []
    for _ in range(3):
        t = time.perf_counter()
        snap = source.snapshot()
        snaps.append(time.perf_counter() - t)
        t = time.perf_counter()
        build_frame(snap, History(), NOW)
        frames.append(time.perf_counter() - t)
    base_snapshot = statistics.median(snaps)
    print(f"baseline source.snapshot(): median {ms(base_snapshot)}")
    print(f"baseline build_frame():     median {ms(statistics.median(frames))}")

    gc.collect()
    rss_before_app = proc.memory_info().rss
    console = asyncio.run(bench_console(source, args.polls, args.keys))
    gc.collect()
    rss_after = proc.memory_info().rss
    peak_console = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for view in ("nodes", "overview"):
        samples = console[f"poll_to_screen_{view}"]
        med = statistics.median(samples)
        print(
            f"poll start -> rendered screen ({view} view): {stats(samples)}; "
            f"{med / base_snapshot:.2f}x the bare snapshot"
        )
    for view in ("nodes", "overview"):
        print(
            f"  of which on the event loop (apply frame, {view}): {stats(console[f'apply_{view}'])}"
        )
    print(f"(not in the figures above) simulator advance 5 s: {stats(console['advance'])}")
    if "full_gc" in console:
        print(
            f"(not in the figures above) full GC pass, every {console['full_gc_every']} "
            f"polls after the screen is painted: {ms(console['full_gc'][0])} on the event loop"
        )
    print(f"key -> screen, nodes view, down:     {stats(console['key_down'])}")
    print(f"key -> screen, nodes view, pagedown: {stats(console['key_pagedown'])}")

    if not args.no_baseline:
        base = asyncio.run(bench_datatable(source, args.keys))
        print(f"baseline DataTable: load {args.nodes:,} rows {ms(base['load'])}")
        for key in ("down", "pagedown"):
            ours = statistics.median(console[f"key_{key}"])
            theirs = statistics.median(base[f"key_{key}"])
            print(
                f"baseline DataTable key -> screen, {key}: {stats(base[f'key_{key}'])}; "
                f"ours is {theirs / ours:.2f}x faster"
            )

    # The console's own memory: the process minus Python + libraries at start and minus
    # the simulator (measured right after building it, before any snapshot existed). What
    # is left is what a console fed by Prometheus also holds: the current snapshot and
    # frame, the history, Textual and its widgets.
    console_rss = rss_after - rss_sim + rss0
    console_peak = peak_console - rss_sim + rss0
    print(
        f"RSS: {rss0 / 2**20:.0f} MiB at start (python + imports), {rss_sim / 2**20:.0f} MiB "
        f"with the simulator ({(rss_sim - rss0) / 2**20:.0f} MiB of it), "
        f"{rss_before_app / 2**20:.0f} MiB after the bare snapshots, "
        f"{rss_after / 2**20:.0f} MiB after the console run; peak during the console run "
        f"{peak_console / 2**20:.0f} MiB (whole process)"
    )
    print(
        f"RSS of the console without the simulator: {console_rss / 2**20:.0f} MiB after the "
        f"run, {console_peak / 2**20:.0f} MiB at peak (start-up included)"
    )


if __name__ == "__main__":
    main()
