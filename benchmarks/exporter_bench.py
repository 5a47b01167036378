"""factoryctl-exporter: scrape cost, RSS and CPU, against baselines measured in the same run.

    .venv/bin/python benchmarks/exporter_bench.py [--scrapes 2000] [--seconds 60]
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

What the rollups (issue 13: one series per node, five per (node, job)) cost, before and
after in the same run: the scrape with and without their families (each against its own
bare copy), the collection with and without computing them, and, with ``--before-src
DIR`` (a checkout's ``src`` from before them), the RSS and CPU of that exporter process
beside the current one.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

from factoryctl.exporter import collection
from factoryctl.exporter.attribution import Attributor, ProcResolver
from factoryctl.exporter.collection import Exporter, Snapshot
from factoryctl.exporter.metrics import SnapshotCollector
from factoryctl.exporter.server import MetricsServer
from factoryctl.exporter.simulated import SimBackend
from factoryctl.lab.procs import free_port, port_open, stop_pid, wait_until
from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.telemetry import schema


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


def scrape_cost(scrapes: int) -> None:
    exporter, ours = build_case()
    _, before = build_case(WithoutRollups)
    bare, bare_before = bare_copy(ours), bare_copy(before)
    n_ours, n_before = samples(ours), samples(before)
    procs = sum(len(r.processes or ()) for r in exporter.snapshot.readings)
    print(
        f"case: 8 GPUs, {procs} processes, {n_ours} samples with the rollups,"
        f" {n_before} without (+{n_ours - n_before})"
    )
    assert n_ours == samples(bare), "the baseline must hold the same samples"
    assert n_before == samples(bare_before), "the baseline must hold the same samples"
    t_ours, t_bare = interleaved(
        lambda: generate_latest(ours), lambda: generate_latest(bare), scrapes
    )
    t_before, t_bare_before = interleaved(
        lambda: generate_latest(before), lambda: generate_latest(bare_before), scrapes
    )
    print("| exposition | median per scrape | × bare |\n|---|---|---|")
    print(f"| bare prometheus_client registry, without rollups | {t_bare_before:.0f} µs | 1.00× |")
    print(
        f"| factoryctl snapshot Collector, without rollups | {t_before:.0f} µs"
        f" | {t_before / t_bare_before:.2f}× |"
    )
    print(f"| bare prometheus_client registry, with rollups | {t_bare:.0f} µs | 1.00× |")
    print(
        f"| factoryctl snapshot Collector, with rollups | {t_ours:.0f} µs | {t_ours / t_bare:.2f}× |"
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
    print(f"| bare start_http_server, GET /metrics (with rollups) | {h_bare:.0f} µs | 1.00× |")
    print(
        f"| factoryctl-exporter server, GET /metrics (with rollups) | {h_ours:.0f} µs"
        f" | {h_ours / h_bare:.2f}× |"
    )
    collection_cost(exporter, scrapes)


def collection_cost(exporter: Exporter, runs: int) -> None:
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
    print("\n| collection (8 GPUs, 64 processes) | median | CPU at 1 s collection |")
    print("|---|---|---|")
    print(f"| without rollups | {t_without:.0f} µs | {t_without / 1e4:.3f}% |")
    print(f"| with rollups | {t_with:.0f} µs | {t_with / 1e4:.3f}% |")
    print(f"| `_rollups` alone | {alone:.0f} µs | {alone / 1e4:.3f}% |")


def proc_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS bytes) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def run_process(
    name: str, argv: list[str], port: int, seconds: float, src: str | None = None
) -> tuple[float, float, bytes]:
    env = None if src is None else {**os.environ, "PYTHONPATH": src}
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


def footprint(seconds: float, nvml: bool, before_src: str | None = None) -> None:
    port_bare = free_port()
    bare_code = (
        "import time, prometheus_client as p; "
        f"p.start_http_server({port_bare}, '127.0.0.1'); time.sleep(1e9)"
    )
    bare_cpu, bare_rss, _ = run_process(
        "bare", [sys.executable, "-c", bare_code], port_bare, seconds
    )
    # Seed 6 starts with all 8 GPUs busy with jobs of 10,292 s or longer: 64 processes.
    backend = [] if nvml else ["--simulate", "8", "--sim-processes-per-gpu", "8", "--sim-seed", "6"]
    print(f"\nsteady state over {seconds:.0f} s, 1 s collection, a scrape every 15 s")
    print("| process | RSS | CPU (% of one core) |\n|---|---|---|")
    print(
        f"| bare prometheus_client start_http_server | {bare_rss / 2**20:.1f} MiB | {bare_cpu * 100:.2f}% |"
    )
    runs = [("before rollups", before_src)] if before_src else []
    for what, src in [*runs, ("current", None)]:
        port_ours = free_port()
        argv = [
            sys.executable, "-m", "factoryctl.exporter.main", "--listen", f"127.0.0.1:{port_ours}",
            "--collect-interval", "1", *backend,
        ]  # fmt: skip
        cpu, rss, body = run_process("exporter", argv, port_ours, seconds, src)
        procs = sum(
            float(line.rsplit(b" ", 1)[1])
            for line in body.splitlines()
            if line.startswith(b"factoryctl_gpu_processes{")
        )
        gpus = body.count(b"factoryctl_gpu_up{")
        nodes = body.count(b"factoryctl_node_gpus{")
        label = f"{'NVML' if nvml else '--simulate 8'}: {gpus} GPUs, {procs:.0f} processes"
        print(
            f"| factoryctl-exporter ({what}) {label}, {nodes} node rollup"
            f" | {rss / 2**20:.1f} MiB | {cpu * 100:.2f}% |"
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
    parser.add_argument("--nvml", action="store_true", help="measure the real NVML backend")
    parser.add_argument(
        "--before-src", help="also run the exporter from this src tree (PYTHONPATH), e.g. main's"
    )
    args = parser.parse_args()
    if args.nvml:
        nvml_calls()
    else:
        scrape_cost(args.scrapes)
    footprint(args.seconds, args.nvml, args.before_src)


if __name__ == "__main__":
    main()
