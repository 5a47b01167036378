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
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily

from factoryctl.exporter.attribution import Attributor, ProcResolver
from factoryctl.exporter.collection import Exporter
from factoryctl.exporter.metrics import SnapshotCollector
from factoryctl.exporter.server import MetricsServer
from factoryctl.exporter.simulated import SimBackend
from factoryctl.lab.procs import free_port, port_open, stop_pid, wait_until
from factoryctl.sim import SimConfig, SimFactory, Workload


def build_case() -> tuple[Exporter, CollectorRegistry]:
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
    registry.register(SnapshotCollector(lambda: exporter.snapshot))
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


def scrape_cost(scrapes: int) -> None:
    exporter, ours = build_case()
    bare = bare_copy(ours)
    a, b = generate_latest(ours), generate_latest(bare)
    n_ours = sum(1 for line in a.splitlines() if line and not line.startswith(b"#"))
    n_bare = sum(1 for line in b.splitlines() if line and not line.startswith(b"#"))
    procs = sum(len(r.processes or ()) for r in exporter.snapshot.readings)
    print(f"case: 8 GPUs, {procs} processes, {n_ours} samples (bare copy: {n_bare})")
    assert n_ours == n_bare, "the baseline must hold the same samples"
    t_ours, t_bare = interleaved(
        lambda: generate_latest(ours), lambda: generate_latest(bare), scrapes
    )
    print("| exposition | median per scrape | × bare |\n|---|---|---|")
    print(f"| bare prometheus_client registry | {t_bare:.0f} µs | 1.00× |")
    print(f"| factoryctl snapshot Collector | {t_ours:.0f} µs | {t_ours / t_bare:.2f}× |")
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
    print(f"| bare start_http_server, GET /metrics | {h_bare:.0f} µs | 1.00× |")
    print(
        f"| factoryctl-exporter server, GET /metrics | {h_ours:.0f} µs | {h_ours / h_bare:.2f}× |"
    )


def proc_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS bytes) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def run_process(
    name: str, argv: list[str], port: int, seconds: float
) -> tuple[float, float, bytes]:
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
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


def footprint(seconds: float, nvml: bool) -> None:
    port_bare, port_ours = free_port(), free_port()
    bare_code = (
        "import time, prometheus_client as p; "
        f"p.start_http_server({port_bare}, '127.0.0.1'); time.sleep(1e9)"
    )
    bare_cpu, bare_rss, _ = run_process(
        "bare", [sys.executable, "-c", bare_code], port_bare, seconds
    )
    # Seed 6 starts with all 8 GPUs busy with jobs of 10,292 s or longer: 64 processes.
    backend = [] if nvml else ["--simulate", "8", "--sim-processes-per-gpu", "8", "--sim-seed", "6"]
    argv = [
        sys.executable, "-m", "factoryctl.exporter.main", "--listen", f"127.0.0.1:{port_ours}",
        "--collect-interval", "1", *backend,
    ]  # fmt: skip
    cpu, rss, body = run_process("exporter", argv, port_ours, seconds)
    procs = sum(
        float(line.rsplit(b" ", 1)[1])
        for line in body.splitlines()
        if line.startswith(b"factoryctl_gpu_processes{")
    )
    gpus = body.count(b"factoryctl_gpu_up{")
    label = f"{'NVML' if nvml else '--simulate 8'}: {gpus} GPUs, {procs:.0f} processes at the end"
    print(f"\nsteady state over {seconds:.0f} s, 1 s collection, a scrape every 15 s")
    print("| process | RSS | CPU (% of one core) |\n|---|---|---|")
    print(
        f"| bare prometheus_client start_http_server | {bare_rss / 2**20:.1f} MiB | {bare_cpu * 100:.2f}% |"
    )
    print(f"| factoryctl-exporter {label} | {rss / 2**20:.1f} MiB | {cpu * 100:.2f}% |")


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
    args = parser.parse_args()
    if args.nvml:
        nvml_calls()
    else:
        scrape_cost(args.scrapes)
    footprint(args.seconds, args.nvml)


if __name__ == "__main__":
    main()
