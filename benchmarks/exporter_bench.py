"""factoryctl-exporter: scrape cost, RSS and CPU, against baselines measured in the same run.

    .venv/bin/python benchmarks/exporter_bench.py [--scrapes 2000] [--seconds 60] \\
        [--rounds 3] [--baseline DIR/src]
    python3 benchmarks/exporter_bench.py --nvml [--seconds 60]     # on a GPU node

Case (issue 3): 8 simulated GPUs, 64 GPU processes (8 jobs, 8 processes each).

1. Server time per scrape: ``generate_latest`` over our snapshot Collector, against a bare
   prometheus_client registry (ordinary Gauge/Counter objects, ``_created`` disabled)
   holding exactly the same samples; then the same two over HTTP (our server vs
   prometheus_client's ``start_http_server``). Medians, interleaved runs.
2. RSS and CPU of a real ``factoryctl-exporter --simulate 8`` process at 1 s collection,
   scraped every 15 s (Prometheus's default), against a bare ``start_http_server`` process.
3. ``--nvml``: the same RSS/CPU figures for the real NVML backend (default flags, so the
   energy counter is read every 10 s), plus the cost of each NVML call.

Each side (this checkout's ``src``, and ``--baseline``: another checkout's, e.g. the commit
before a change, ``git archive <sha> src | tar -x -C DIR``) is measured in new processes
importing ``factoryctl`` from its tree: 1. in a child interpreter, 2. as the exporter
process. ``--rounds`` repeats both sides, one process at a time, the order alternating
between rounds; each measurement prints its figures and the 1-min load average before and
after it to stderr as it ends, and the end prints the medians per side and their ratios
(the machine is shared: compare sides of one run only).

What the rollups (issue 13) cost, inside one side: the scrape with and without their
families (``WithoutRollups``: the collector before issue 13, each against its own bare
copy) and the collection with and without computing them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

from factoryctl.exporter import collection
from factoryctl.exporter.attribution import Attributor, ProcResolver
from factoryctl.exporter.collection import Exporter, Snapshot
from factoryctl.exporter.metrics import SnapshotCollector
from factoryctl.exporter.server import MetricsServer
from factoryctl.exporter.simulated import SimBackend
from factoryctl.lab.procs import free_port, port_open, proc_stat, stop_pid, wait_until
from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.telemetry import schema

SRC = Path(__file__).resolve().parents[1] / "src"


class WithoutRollups(SnapshotCollector):
    """The collector as it was before the rollups: no node families, and of the (node,
    job) ones only ``factoryctl_job_gpus``."""

    def _node_rollup_families(self, snap: Snapshot) -> Iterator[Metric]:
        return iter(())

    def _job_rollup_families(self, snap: Snapshot) -> Iterator[Metric]:
        return (f for f in super()._job_rollup_families(snap) if f.name == schema.JOB_GPUS)


def build_case(
    collector: type[SnapshotCollector] = SnapshotCollector,
) -> tuple[Exporter, CollectorRegistry]:
    sim = SimFactory(SimConfig(nodes=1, node_names=("gpu001",), gpus_per_node=8, jobs=False))
    for g in range(8):
        sim.assign(str(5000 + g), f"user{g}", "gpu001", [g], Workload.TRAINING)
    backend = SimBackend(sim, "gpu001", follow_clock=False, processes_per_gpu=8)
    exporter = Exporter(backend, "gpu001", Attributor(None, ProcResolver()))
    for _ in range(3):
        sim.advance(1.0)
        exporter.collect_once(sim.now)
    sim.inject_xid("gpu001", 3, 13)
    exporter.collect_once(sim.now)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector(lambda: exporter.snapshot))
    return exporter, registry


def bare_copy(registry: CollectorRegistry) -> CollectorRegistry:
    """The same samples held in ordinary prometheus_client metric objects."""
    import prometheus_client

    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    bare = CollectorRegistry(auto_describe=False)
    for fam in registry.collect():
        if not fam.samples:
            continue  # an unlabelled bare metric would invent a 0 sample
        labelnames = sorted({k for s in fam.samples for k in s.labels}) if fam.samples else []
        if isinstance(fam, CounterMetricFamily) or fam.type == "counter":
            metric: Counter | Gauge = Counter(
                fam.name, fam.documentation, labelnames, registry=bare
            )
            for s in fam.samples:
                child = metric.labels(**s.labels) if labelnames else metric
                child.inc(s.value)
        else:
            metric = Gauge(fam.name, fam.documentation, labelnames, registry=bare)
            for s in fam.samples:
                child = metric.labels(**s.labels) if labelnames else metric
                child.set(s.value)
    return bare


def median_us(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


def interleaved(a: Callable[[], object], b: Callable[[], object], runs: int) -> tuple[float, float]:
    ta, tb = [], []
    for _ in range(10):
        ta.append(median_us(a, runs // 10))
        tb.append(median_us(b, runs // 10))
    return statistics.median(ta), statistics.median(tb)


def http_get(port: int) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read()
    conn.close()
    return body


def samples(registry: CollectorRegistry) -> int:
    text = generate_latest(registry)
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def scrape_cost(scrapes: int) -> dict[str, float]:
    """The in-process figures of this interpreter's ``factoryctl`` (whichever src it got)."""
    exporter, ours = build_case()
    _, before = build_case(WithoutRollups)
    bare, bare_before = bare_copy(ours), bare_copy(before)
    n_ours, n_before = samples(ours), samples(before)
    assert n_ours == samples(bare), "the baseline must hold the same samples"
    assert n_before == samples(bare_before), "the baseline must hold the same samples"
    t_ours, t_bare = interleaved(
        lambda: generate_latest(ours), lambda: generate_latest(bare), scrapes
    )
    t_before, t_bare_before = interleaved(
        lambda: generate_latest(before), lambda: generate_latest(bare_before), scrapes
    )
    from prometheus_client import start_http_server

    server = MetricsServer(ours, f"127.0.0.1:{free_port()}").start()
    bare_port = free_port()
    bare_server, _thread = start_http_server(bare_port, "127.0.0.1", registry=bare)
    try:
        h_ours, h_bare = interleaved(
            lambda: http_get(server.port), lambda: http_get(bare_port), max(100, scrapes // 10)
        )
    finally:
        server.stop()
        bare_server.shutdown()
    return {
        "processes": sum(len(r.processes or ()) for r in exporter.snapshot.readings),
        "samples": n_ours,
        "samples_without_rollups": n_before,
        "bytes": len(generate_latest(ours)),
        "scrape_us": t_ours,
        "bare_us": t_bare,
        "scrape_without_rollups_us": t_before,
        "bare_without_rollups_us": t_bare_before,
        "http_us": h_ours,
        "http_bare_us": h_bare,
        **collection_cost(exporter, scrapes),
    }


def collection_cost(exporter: Exporter, runs: int) -> dict[str, float]:
    """One collection of the case with and without computing the rollups."""
    sim = exporter.backend.sim  # type: ignore[attr-defined]
    real = collection._rollups

    def collect() -> None:
        sim.advance(1.0)
        exporter.collect_once(sim.now)

    def without() -> None:
        collection._rollups = lambda *_: (None, ())  # type: ignore[assignment]
        try:
            collect()
        finally:
            collection._rollups = real

    snap = exporter.snapshot
    args = (snap.time, snap.readings, snap.attribution, snap.gpu_energy, snap.idle_seconds)
    alone = median_us(lambda: real(*args, snap.xids), runs)  # type: ignore[arg-type]
    t_with, t_without = interleaved(collect, without, max(100, runs // 4))
    return {"collect_us": t_with, "collect_without_rollups_us": t_without, "rollups_us": alone}


def run_process(
    name: str, argv: list[str], port: int, seconds: float, src: str | None = None
) -> tuple[float, float, bytes]:
    env = {**os.environ, "PYTHONPATH": src or str(SRC)}
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env=env,
    )  # fmt: skip
    try:
        wait_until(lambda: port_open(port), 30, name)
        http_get(port)
        time.sleep(3)  # past start-up work: measure the steady state only
        cpu0, _ = proc_stat(proc.pid)
        t0 = time.monotonic()
        next_scrape = t0
        while time.monotonic() - t0 < seconds:
            if time.monotonic() >= next_scrape:
                http_get(port)
                next_scrape += 15
            time.sleep(0.2)
        cpu1, rss = proc_stat(proc.pid)
        return (cpu1 - cpu0) / (time.monotonic() - t0), rss, http_get(port)
    finally:
        stop_pid(proc.pid)


def bare_footprint(seconds: float) -> dict[str, float]:
    port = free_port()
    code = (
        "import time, prometheus_client as p; "
        f"p.start_http_server({port}, '127.0.0.1'); time.sleep(1e9)"
    )
    cpu, rss, _ = run_process("bare", [sys.executable, "-c", code], port, seconds)
    return {"cpu": cpu, "rss": rss}


def footprint(seconds: float, nvml: bool, src: str) -> dict[str, float]:
    """RSS, CPU share and the last scrape of a real exporter process run from ``src``."""
    # Seed 6 starts with all 8 GPUs busy with jobs of 10,292 s or longer: 64 processes.
    backend = [] if nvml else ["--simulate", "8", "--sim-processes-per-gpu", "8", "--sim-seed", "6"]
    port = free_port()
    argv = [
        sys.executable, "-m", "factoryctl.exporter.main", "--listen", f"127.0.0.1:{port}",
        "--collect-interval", "1", *backend,
    ]  # fmt: skip
    cpu, rss, body = run_process("exporter", argv, port, seconds, src)
    lines = [line for line in body.splitlines() if line and not line.startswith(b"#")]
    return {
        "cpu": cpu,
        "rss": rss,
        "body_bytes": len(body),
        "body_samples": len(lines),
        "gpus": sum(1 for line in lines if line.startswith(b"factoryctl_gpu_up{")),
        "processes": sum(
            float(line.rsplit(b" ", 1)[1])
            for line in lines
            if line.startswith(b"factoryctl_gpu_processes{")
        ),
    }


def load1() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def in_child(src: str, scrapes: int) -> dict[str, float]:
    """``scrape_cost`` in a new interpreter importing ``factoryctl`` from ``src``."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", "--scrapes", str(scrapes)],
        env={**os.environ, "PYTHONPATH": src},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"exporter_bench: the child for {src} failed: {tail}")
    doc: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    imported = Path(doc.pop("factoryctl")).resolve()
    if not imported.is_relative_to(Path(src).resolve()):
        raise SystemExit(f"exporter_bench: the child for {src} imported {imported}")
    return doc


def measured(label: str, fn: Callable[[], dict[str, float]]) -> dict[str, float]:
    """``fn``'s figures with the 1-min load average before and after it, printed at once."""
    before = load1()
    doc = {**fn(), "load_before": before, "load_after": load1()}
    print(f"{label}: {json.dumps(doc)}", file=sys.stderr, flush=True)
    return doc


def run_rounds(
    args: argparse.Namespace, sides: list[tuple[str, str]]
) -> dict[str, list[dict[str, float]]]:
    """Each round measures every side once, one process at a time, the order alternating
    between rounds so that neither side always runs first (the machine is shared)."""
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in [*sides, ("bare", "")]}
    for n in range(args.rounds):
        order = sides if n % 2 == 0 else sides[::-1]
        if not args.nvml:
            for label, src in order:
                doc = measured(
                    f"round {n + 1} {label} in-process", partial(in_child, src, args.scrapes)
                )
                runs[label].append(doc)
        runs["bare"].append(
            measured(f"round {n + 1} bare process", lambda: bare_footprint(args.seconds))
        )
        for label, src in order:
            doc = measured(
                f"round {n + 1} {label} process",
                partial(footprint, args.seconds, args.nvml, src),
            )
            # Same round, same side: one row (the in-process figures came first).
            if args.nvml:
                runs[label].append(doc)
            else:
                runs[label][-1].update({f"proc_{k}": v for k, v in doc.items()})
    return runs


def med(docs: list[dict[str, float]], key: str) -> float:
    return statistics.median(d[key] for d in docs)


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, float]]]) -> None:
    sides = [label for label in runs if label != "bare"]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, python"
        f" {platform.python_version()}; {args.rounds} rounds; 1-min load average"
        f" {min(d['load_before'] for r in runs.values() for d in r):.2f}"
        f"-{max(d['load_after'] for r in runs.values() for d in r):.2f}"
    )
    proc = "" if args.nvml else "proc_"
    rows: list[tuple[str, str, Callable[[list[dict[str, float]]], float]]] = [
        ("RSS, MiB", ".1f", lambda d: med(d, f"{proc}rss") / 2**20),
        ("CPU, % of one core", ".3f", lambda d: med(d, f"{proc}cpu") * 100),
        ("bytes per scrape (the process's last)", ",.0f", lambda d: med(d, f"{proc}body_bytes")),
        ("samples per scrape (the process's)", ",.0f", lambda d: med(d, f"{proc}body_samples")),
    ]
    if not args.nvml:
        rows = [
            ("samples, the case", ",.0f", lambda d: med(d, "samples")),
            ("bytes, the case", ",.0f", lambda d: med(d, "bytes")),
            ("`generate_latest`, µs", ",.0f", lambda d: med(d, "scrape_us")),
            ("the same samples, bare registry, µs", ",.0f", lambda d: med(d, "bare_us")),
            ("× bare (median of the rounds' ratios)", ".2f",
             lambda d: statistics.median(x["scrape_us"] / x["bare_us"] for x in d)),
            ("`GET /metrics`, µs", ",.0f", lambda d: med(d, "http_us")),
            ("bare `start_http_server`, µs", ",.0f", lambda d: med(d, "http_bare_us")),
            ("× bare over HTTP (median of ratios)", ".2f",
             lambda d: statistics.median(x["http_us"] / x["http_bare_us"] for x in d)),
            ("collection, µs", ",.0f", lambda d: med(d, "collect_us")),
            ("collection without the rollups, µs", ",.0f",
             lambda d: med(d, "collect_without_rollups_us")),
            ("`collection._rollups` alone, µs", ",.1f", lambda d: med(d, "rollups_us")),
            *rows,
        ]  # fmt: skip
    head = " | ".join(sides)
    ratio = len(sides) == 2
    print(
        f"| median of {args.rounds} rounds | {head} |"
        + (f" {sides[0]} / {sides[1]} |" if ratio else "")
    )
    print("|---" * (len(sides) + 1 + ratio) + "|")
    for name, fmt, fn in rows:
        values = [fn(runs[s]) for s in sides]
        cells = " | ".join(format(v, fmt) for v in values)
        extra = (
            f" {values[0] / values[1]:.3f}× |" if ratio and values[1] else (" |" if ratio else "")
        )
        print(f"| {name} | {cells} |{extra}")
    bare = runs["bare"]
    print(
        f"| bare prometheus_client process: RSS {med(bare, 'rss') / 2**20:.1f} MiB,"
        f" CPU {med(bare, 'cpu') * 100:.3f}% |"
    )
    rounds = range(args.rounds)
    if not args.nvml:
        print("\n| round | side, in-process | load before → after | × bare | × bare HTTP |")
        print("|---|---|---|---|---|")
        for n in rounds:
            for s in sides:
                d = runs[s][n]
                print(
                    f"| {n + 1} | {s} | {d['load_before']:.2f} → {d['load_after']:.2f}"
                    f" | {d['scrape_us'] / d['bare_us']:.2f} | {d['http_us'] / d['http_bare_us']:.2f} |"
                )
    print("\n| round | process | load before → after | CPU, % of one core | RSS, MiB |")
    print("|---|---|---|---|---|")
    for n in rounds:
        for s in ["bare", *sides]:
            d = runs[s][n]
            p = "" if args.nvml or s == "bare" else "proc_"
            print(
                f"| {n + 1} | {s} | {d[p + 'load_before']:.2f} → {d[p + 'load_after']:.2f}"
                f" | {d[p + 'cpu'] * 100:.3f} | {d[p + 'rss'] / 2**20:.1f} |"
            )


def nvml_calls() -> None:
    from factoryctl.exporter.nvml import Nvml, NvmlBackend

    nvml = Nvml()
    cost: dict[str, list[float]] = {}
    real_call = nvml.call

    def timed(fn: str, *args: object) -> object:
        t = time.perf_counter()
        try:
            return real_call(fn, *args)
        finally:
            cost.setdefault(fn, []).append(time.perf_counter() - t)

    nvml.call = timed  # type: ignore[method-assign]
    backend = NvmlBackend(nvml, watch_xids=False)
    cost.clear()
    indices = list(range(backend.count))
    t = time.perf_counter()
    for _ in range(20):
        backend.read(time.time())
    per = (time.perf_counter() - t) / 20
    t = time.perf_counter()
    for _ in range(20):
        backend.read_energy(indices)
    per_energy = (time.perf_counter() - t) / 20
    print(f"\nNvmlBackend.read: {per * 1e3:.2f} ms per collection over {backend.count} GPU(s)")
    print(f"NvmlBackend.read_energy: {per_energy * 1e3:.2f} ms for all GPUs")
    print("| NVML call | median | calls per collection |\n|---|---|---|")
    for fn, samples in sorted(cost.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"| {fn} | {statistics.median(samples) * 1e6:.0f} µs | {len(samples) / 20:g} |")
    backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3, help="each side this many times")
    parser.add_argument("--nvml", action="store_true", help="measure the real NVML backend")
    parser.add_argument(
        "--baseline",
        "--before-src",
        dest="baseline",
        help="another checkout's src (git archive <sha> src | tar -x -C DIR): the 'before'",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import factoryctl

        print(json.dumps({"factoryctl": factoryctl.__file__, **scrape_cost(args.scrapes)}))
        return
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.baseline and not (Path(args.baseline) / "factoryctl" / "__init__.py").is_file():
        parser.error(f"--baseline {args.baseline}: no factoryctl package there")
    if args.nvml:
        nvml_calls()
    sides = [("current", str(SRC))]
    if args.baseline:
        sides.append(("baseline", args.baseline))
    report(args, run_rounds(args, sides))


if __name__ == "__main__":
    main()
