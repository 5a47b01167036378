"""``factoryctl top`` and ``nodes``/``jobs -o json`` on a real engine holding a big factory.

    .venv/bin/python benchmarks/console_engines.py --engine victoriametrics --gpus 100000 \\
        --baseline /tmp/consolebase/src

Backfills ``--minutes`` (default 30) of a simulated factory at 15 s into a fresh
VictoriaMetrics (JSON import) or Prometheus (TSDB blocks by promtool), one engine per run,
stopped by PID at the end (``factoryctl.lab.backfill``: the exporter's per-GPU series and
its node and job rollups). Then, for this checkout and for ``--baseline`` (another
checkout's ``src``, e.g. the branch point: ``git archive <sha> src | tar -x -C DIR``), each
in a new process:

* the console headless (Textual renders every frame): poll start -> rendered screen on
  the Overview and the Nodes view, key -> screen scrolling the Nodes view, peak RSS;
* the bare poll (``console_snapshot()`` with the Overview's detail where the source has
  one, else ``snapshot()``)
  and ``build_frame``; curl sending the very queries that poll sent, one after the other;
* ``factoryctl nodes -o json`` and ``jobs -o json`` as a user runs them, against curl
  sending the queries they send (this checkout's queries, recorded); ``--cli-only``
  measures only these. Each tree is byte-compiled first, as an installed factoryctl is
  (``compiled``).

Also the same console figures with the simulator as its source (``--sim``), for
comparison. Prints a Markdown table for docs/benchmarks.md with the 1-min load average
(the machine is shared: compare figures of one run only).

``--data-dir DIR`` keeps the engine's data (a 100,000-GPU backfill takes ~10 minutes): the
first run backfills into DIR and writes ``DIR/backfill.json`` (engine, GPUs, minutes, the
data's time range); a later run with the same DIR, engine and size starts the engine on it
and skips the backfill. Every process of such a run (this one, the console, the CLI) then
reads the factory as of 2 minutes before the data's end when that is past (their
``time.time`` is moved back by a ``sitecustomize`` on PYTHONPATH): the figures are those
of a live factory, at any later hour, as long as the engine keeps the data (2 days).
Prometheus is backfilled one promtool run per 5-minute chunk (``PromtoolBlocks``), each
killed past 8 GiB RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
SRC = HERE.parent.parent / "src"
STEP = 15.0
# Issue 13's goals for the CLI at 100,000 GPUs, in seconds.
GOALS = {"nodes": 1.0, "jobs": 1.5}
# The environment variable every process of a reused-data run reads its clock offset from.
OFFSET_ENV = "FACTORYCTL_BENCH_CLOCK_OFFSET"
SITECUSTOMIZE = f"""import os, time
_offset = float(os.environ.get("{OFFSET_ENV}") or 0)
if _offset:
    _real = time.time
    time.time = lambda: _real() - _offset
"""


# -- the child: one console, one source, figures as JSON on stdout ----------------------
def child(url: str | None, gpus: int, polls: int, keys: int) -> None:
    import asyncio
    from urllib.parse import parse_qsl

    import factoryctl
    from factoryctl.tui import make_app
    from factoryctl.tui.frame import build_frame
    from factoryctl.tui.history import History

    sys.path.insert(0, str(HERE.parent))
    from tui_bench import after_refresh, key_latency

    sent: list[dict[str, str]] = []
    source: Any
    if url is None:
        from factoryctl.telemetry.demo import DemoSource

        source = DemoSource.create(nodes=gpus // 8, gpus_per_node=8, seed=1, warmup=0)
        clock = lambda: source.sim.now  # noqa: E731
    else:
        import httpx

        from factoryctl.telemetry.client import PromClient, PromConfig
        from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions

        inner = httpx.HTTPTransport()

        class Recorder(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                form = dict(parse_qsl(request.content.decode()))
                sent.append({"path": request.url.path, **form})
                return inner.handle_request(request)

        client = PromClient(PromConfig(url, timeout=600), transport=Recorder())
        options = SourceOptions(schema="native", scrape_interval=STEP)
        source = PrometheusSource(client, None, options)
        clock = time.time
    poll = getattr(source, "console_snapshot", None) or source.snapshot
    try:  # the Overview's poll, where the checkout reads less for a view that shows less
        from factoryctl.telemetry.poll_detail import for_view
        from factoryctl.tui.backend import takes_detail
    except ImportError:  # a baseline from before poll_detail: one poll for every view
        pass
    else:
        if takes_detail(source):
            overview = for_view("overview")
            poll = lambda: source.console_snapshot(detail=overview)  # noqa: E731
    out: dict[str, Any] = {"factoryctl": factoryctl.__file__}
    bare, frames = [], []
    for i in range(polls):
        first = len(sent)
        t = time.perf_counter()
        snap = poll()
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        build_frame(snap, History(), clock())
        frames.append(time.perf_counter() - t)
        if i == polls - 1:  # a steady poll's: the first also reads the once-a-minute ones
            out["queries"] = sent[first:]
    out["bare_poll"], out["build_frame"] = bare, frames
    out["summarized"] = bool(getattr(snap, "node_summaries", None))
    out["gpu_objects"] = len(snap.gpus)

    async def console() -> None:
        app = make_app(source, refresh=None, clock=clock)
        async with app.run_test(size=(160, 48)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            for view in ("overview", "nodes"):
                app.show_view(view)
                await after_refresh(app)
                samples = []
                for _ in range(polls):
                    before = app.polls
                    app.last_render_seconds = None
                    app.poll()
                    while app.polls == before or app.last_render_seconds is None:
                        await app.workers.wait_for_complete()
                        await pilot.pause()
                    samples.append(app.last_render_seconds)
                out[f"poll_to_screen_{view}"] = samples
            table = app.query_one("#nodes")
            out["key_down"] = await key_latency(app, table, "down", keys)

    asyncio.run(console())
    # VmHWM: this process's own peak (ru_maxrss carries the parent's over fork + exec).
    with open("/proc/self/status", encoding="ascii") as status:
        hwm = next(ln for ln in status if ln.startswith("VmHWM:"))
    out["peak_rss"] = int(hwm.split()[1]) * 1024
    print(json.dumps(out))


# -- the parent: engine, backfill, children, curl, table --------------------------------
def run_child(src: Path, url: str | None, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, str(HERE), "--child", "--gpus", str(args.gpus)]
    argv += ["--polls", str(args.polls), "--keys", str(args.keys)]
    if url is not None:
        argv += ["--url", url]
    env = {**os.environ, "PYTHONPATH": python_path(src)}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        # Reported, not fatal: the other side's figures still count (the per-GPU console
        # of the branch point exceeds VictoriaMetrics' default 300,000-series search limit
        # at 100,000 GPUs). The last line of its stderr says why.
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
        print(f"console child failed ({src}): {last[:400]}", flush=True)
        return {"failed": last, "factoryctl": str(src), "peak_rss": 0, "gpu_objects": "-"}
    doc: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if not doc["factoryctl"].startswith(str(src)):
        raise SystemExit(f"child imported {doc['factoryctl']}, not {src}")
    return doc


def compiled(src: Path) -> None:
    """Byte-compile ``src`` as an install does (pip and Debian write every module's .pyc):
    where PYTHONDONTWRITEBYTECODE is set (this machine sets it), each CLI run would
    otherwise compile the ~60 factoryctl modules it imports from source: 50-60 ms of every
    ``nodes``/``jobs -o json`` figure that no installed factoryctl pays."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True)


def cli_run(src: Path, url: str, command: str, engine_pid: int) -> tuple[float, float, float]:
    """One run of ``factoryctl COMMAND -o json``: its wall time, its own CPU (user + sys)
    and the engine's CPU over the same span, in seconds. On this machine the engine and
    the command share the cores: the wall time is bounded below by their CPU together."""
    from factoryctl.lab.procs import proc_stat
    from factoryctl.lab.promql_timing import command_seconds, telemetry_only_env

    env = {**telemetry_only_env(url, STEP), "PYTHONPATH": python_path(src)}
    argv = [sys.executable, "-m", "factoryctl", command, "-o", "json"]
    before, engine = resource.getrusage(resource.RUSAGE_CHILDREN), proc_stat(engine_pid)[0]
    wall = command_seconds(argv, env)[0]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, own, proc_stat(engine_pid)[0] - engine


CLOCK_DIR: Path | None = None  # holds the sitecustomize of a reused-data run


def python_path(src: Path) -> str:
    return str(src) if CLOCK_DIR is None else f"{CLOCK_DIR}{os.pathsep}{src}"


def shift_clock(offset: float, tmp: Path) -> None:
    """Read the factory as of ``offset`` seconds ago here and in every child."""
    global CLOCK_DIR
    if offset <= 0:
        return
    CLOCK_DIR = tmp / "clock"
    CLOCK_DIR.mkdir()
    (CLOCK_DIR / "sitecustomize.py").write_text(SITECUSTOMIZE)
    os.environ[OFFSET_ENV] = f"{offset:.3f}"
    real = time.time
    time.time = lambda: real() - offset


def load(args: argparse.Namespace, tmp: Path) -> tuple[Any, str, str]:
    """Start the engine on data backfilled now, or kept by an earlier run in --data-dir.
    Returns the stack, its URL and a line saying what was loaded."""
    from factoryctl.lab.backfill import backfill
    from factoryctl.lab.backfill_sinks import (
        CREATE_BLOCKS_PEAKS,
        PromtoolBlocks,
        VictoriaImport,
        wait_served,
    )
    from factoryctl.lab.stack import Stack

    state = args.data_dir or tmp / "engine"
    meta_path = state / "backfill.json"
    want = {"engine": args.engine, "gpus": args.gpus, "minutes": args.minutes, "step": STEP}
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if meta is not None and {k: meta.get(k) for k in want} != want:
        raise SystemExit(f"{state} holds {meta}, not {want}: give another --data-dir")
    engine = "victoriametrics" if args.engine == "victoriametrics" else "prometheus"
    t0 = time.perf_counter()
    if meta is not None:
        stack = Stack(state, [], (engine,)).start(timeout=600)
        end = meta["end"]
        what = f"kept data in {state} (backfilled {meta['backfilled']})"
    else:
        if state.exists() and any(state.iterdir()):
            raise SystemExit(f"{state} is not empty and holds no backfill.json")
        end = time.time() + args.lead
        if engine == "victoriametrics":
            stack = Stack(state, [], (engine,)).start()
            try:
                sink: Any = VictoriaImport(stack.running[engine].url)
                truth = backfill([sink], args.gpus, args.minutes, end=end)
            except BaseException:
                stack.stop()
                raise
        else:
            (state / "work").mkdir(parents=True)
            sink = PromtoolBlocks(state / engine, state / "work")
            truth = backfill([sink], args.gpus, args.minutes, end=end)
            (state / "work").rmdir()
            stack = Stack(state, [], (engine,)).start(timeout=600)
        peaks = CREATE_BLOCKS_PEAKS
        peak = f", promtool peak RSS {max(peaks) / 2**30:.1f} GiB" if peaks else ""
        what = f"{truth.samples:,} samples loaded in {time.perf_counter() - t0:.0f} s{peak}"
        end = truth.end
        if args.data_dir is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            meta_path.write_text(
                json.dumps({**want, "start": truth.start, "end": end, "backfilled": stamp})
            )
    # 2 minutes before the data's end at the latest: every window the views read (the
    # 10-minute inventory included) lies inside the backfill.
    shift_clock(time.time() - (end - 120), tmp)
    try:
        url = stack.running[engine].url
        wait_served(url, args.gpus, timeout=600, victoria=engine == "victoriametrics")
    except BaseException:
        stack.stop()
        raise
    return stack, url, what


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url")
    p.add_argument("--engine", choices=("victoriametrics", "prometheus"))
    p.add_argument("--gpus", type=int, default=100_000)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--polls", type=int, default=3)
    p.add_argument("--keys", type=int, default=50)
    p.add_argument("--runs", type=int, default=3, help="timed runs of nodes/jobs -o json")
    p.add_argument("--baseline", type=Path, help="another checkout's src: the 'before'")
    p.add_argument("--sim", action="store_true", help="also the simulator as the source")
    # 0: the data ends now and every process reads it as of 2 minutes before its end (as
    # kept data). A lead past --minutes put the whole backfill in the future: nothing to
    # read at "now", and wait_served gave up after 600 s (3600 was the default).
    p.add_argument("--lead", type=float, default=0.0, help="seconds past now the backfill ends")
    p.add_argument(
        "--data-dir",
        type=Path,
        help="keep the engine's data here; a later run with the same size reuses it",
    )
    p.add_argument("--backfill-only", action="store_true", help="fill --data-dir, measure nothing")
    p.add_argument(
        "--cli-only", action="store_true", help="only nodes/jobs -o json and their curl, no console"
    )
    args = p.parse_args()
    if args.child:
        child(args.url, args.gpus, args.polls, args.keys)
        return 0
    if args.engine is None:
        p.error("--engine is required")

    sides = [("after", SRC)] + ([("before", args.baseline.resolve())] if args.baseline else [])
    with tempfile.TemporaryDirectory(prefix="factoryctl-console-") as tmp_name:
        tmp = Path(tmp_name)
        stack: Any = None
        try:
            stack, url, what = load(args, tmp)
            # Only now: PrometheusSource's default clock is time.time as of its import, and
            # load() may have moved this process's clock back to the kept data's time.
            from factoryctl.lab.promql_timing import (
                curl_parallel_seconds,
                curl_seconds,
                recorded_queries,
            )

            print(
                f"# {args.gpus:,} GPUs, {args.minutes:g} min at {STEP:g} s on {args.engine}: "
                f"{what}",
                flush=True,
            )
            if args.backfill_only:
                return 0
            figures: dict[str, dict[str, Any]] = {}
            for label, src in sides:
                compiled(src)
                doc = (
                    {"peak_rss": 0, "gpu_objects": "-"}
                    if args.cli_only
                    else run_child(src, url, args)
                )
                if "queries" in doc:
                    doc["curl"] = [curl_seconds(url, doc["queries"]) for _ in range(args.polls)]
                figures[label] = doc
                # As soon as each side is done: a later failure keeps these figures.
                print(f"{label}: {json.dumps({k: v for k, v in doc.items() if k != 'queries'})}")
                print(f"{label} queries: {json.dumps(doc.get('queries', []))}", flush=True)
            # The commands of both sides interleaved, run by run: the machine's speed drifts
            # by the minute, and a ratio is only as good as the minutes both sides shared.
            engine_pid = next(iter(stack.running.values())).process.pid
            # One untimed run of each command first: the engine's caches (index lookups,
            # blocks) warm for every side alike, not only for the one that goes first.
            for command in ("nodes", "jobs"):
                cli_run(SRC, url, command, engine_pid)
            for _ in range(args.runs):
                for label, src in sides:
                    for command in ("nodes", "jobs"):
                        wall, own, engine_cpu = cli_run(src, url, command, engine_pid)
                        figures[label].setdefault(command, []).append(wall)
                        figures[label].setdefault(f"{command}_cpu", []).append(own)
                        figures[label].setdefault(f"{command}_engine_cpu", []).append(engine_cpu)
            for label, doc in figures.items():
                for command in ("nodes", "jobs"):
                    print(
                        f"{label}: {command} {doc[command]} our CPU {doc[f'{command}_cpu']}"
                        f" engine CPU {doc[f'{command}_engine_cpu']}",
                        flush=True,
                    )
            curl_cli: dict[str, float] = {}
            for c in ("nodes", "jobs"):
                queries = recorded_queries(url, c, STEP)
                runs = range(args.runs)
                curl_cli[c] = med([curl_seconds(url, queries) for _ in runs])
                curl_cli[f"{c}_parallel"] = med([curl_parallel_seconds(url, queries) for _ in runs])
            sim = run_child(SRC, None, args) if args.sim else None
        finally:
            if stack is not None:
                stack.stop()
    report(args, figures, curl_cli, sim)
    return 0


def report(
    args: argparse.Namespace,
    figures: dict[str, dict[str, Any]],
    curl_cli: dict[str, float],
    sim: dict[str, Any] | None,
) -> None:
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cpus, python "
        f"{platform.python_version()}; 1-min load average {os.getloadavg()[0]:.2f}"
    )
    print("| measure | " + " | ".join(figures) + (" | simulator source |" if sim else " |"))
    print("|---|" + "---|" * (len(figures) + (1 if sim else 0)))
    rows = [
        ("console poll -> rendered screen, Overview", "poll_to_screen_overview", "s"),
        ("console poll -> rendered screen, Nodes", "poll_to_screen_nodes", "s"),
        ("bare poll (the source's snapshot)", "bare_poll", "s"),
        ("curl, the poll's queries one by one", "curl", "s"),
        ("build_frame", "build_frame", "s"),
        ("key -> screen, Nodes, down (median)", "key_down", "ms"),
        ("`factoryctl nodes -o json`", "nodes", "s"),
        ("its own CPU (user + sys)", "nodes_cpu", "s"),
        ("the engine's CPU meanwhile", "nodes_engine_cpu", "s"),
        ("`factoryctl jobs -o json`", "jobs", "s"),
        ("its own CPU (user + sys)", "jobs_cpu", "s"),
        ("the engine's CPU meanwhile", "jobs_engine_cpu", "s"),
    ]
    for title, key, unit in rows:
        cells = []
        for doc in [*figures.values(), *([sim] if sim else [])]:
            v = doc.get(key)
            if not v:
                cells.append("-")
            elif unit == "ms":
                cells.append(f"{med(v) * 1000:.1f} ms")
            else:
                cells.append(f"{med(v):.2f} s")
        print(f"| {title} | " + " | ".join(cells) + " |")
    peaks = [
        f"{d['peak_rss'] / 2**20:.0f} MiB" for d in [*figures.values(), *([sim] if sim else [])]
    ]
    print("| peak RSS of the console process | " + " | ".join(peaks) + " |")
    queries = [str(len(d.get("queries", []))) for d in [*figures.values(), *([sim] if sim else [])]]
    print("| queries per poll | " + " | ".join(queries) + " |")
    objs = [str(d["gpu_objects"]) for d in [*figures.values(), *([sim] if sim else [])]]
    print("| GPU objects per poll | " + " | ".join(objs) + " |")
    for label, doc in figures.items():
        if "failed" in doc:
            print(f"{label}: the console failed: {doc['failed']}")
    print(
        f"curl, the queries of `nodes -o json` {curl_cli['nodes']:.2f} s one by one,"
        f" {curl_cli['nodes_parallel']:.2f} s all at once; of `jobs -o json`"
        f" {curl_cli['jobs']:.2f} s, {curl_cli['jobs_parallel']:.2f} s (this checkout's queries)"
    )
    for label, doc in figures.items():
        for command in ("nodes", "jobs"):
            walls = doc[command]
            print(
                f"{label}: {command} -o json {min(walls):.2f}-{max(walls):.2f} s"
                f" over {len(walls)} runs, over the goal in"
                f" {sum(w > GOALS[command] for w in walls)}"
            )


if __name__ == "__main__":
    sys.exit(main())
