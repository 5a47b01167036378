"""The exporter scraped by a real Prometheus (Debian's /usr/bin/prometheus on 127.0.0.1),
and the same checks against VictoriaMetrics, the second engine behind the same API."""

from __future__ import annotations

import contextlib
import sys
import urllib.request

import pytest
from exporter_prom import ENGINES, HOST_ENGINES, Prometheus, available, engine
from prometheus_client import CollectorRegistry

from factoryctl.exporter.attribution import Attributor, JobMapDir, ProcResolver
from factoryctl.exporter.collection import Exporter
from factoryctl.exporter.main import register_collectors
from factoryctl.exporter.server import MetricsServer
from factoryctl.exporter.simulated import SimBackend
from factoryctl.lab.procs import ManagedProcess, free_port, port_open, wait_until
from factoryctl.sim import SimConfig, SimFactory, Workload

pytestmark = [pytest.mark.integration]


def _engines(request, tmp_path):
    spec = request.param
    if not available(spec):
        pytest.skip(f"{spec} is not here (./dev test builds every release)")
    started: list[Prometheus] = []

    def start(targets: list[str]) -> Prometheus:
        prom = engine(spec, tmp_path / f"tsdb{len(started)}", targets).start()
        started.append(prom)
        return prom

    yield start
    for prom in started:
        prom.stop()


@pytest.fixture(params=ENGINES)
def prometheus(request, tmp_path):
    """Every engine of every Debian generation."""
    yield from _engines(request, tmp_path)


@pytest.fixture(params=HOST_ENGINES)
def host_prometheus(request, tmp_path):
    """The host's two engines: for what measures the exporter, not the engine."""
    yield from _engines(request, tmp_path)


def test_every_simulated_gpu_appears(tmp_path, prometheus):
    exporters, targets = [], []
    sizes = {"node-a": 2, "node-b": 4, "node-c": 8}
    try:
        for node, gpus in sizes.items():
            port = free_port()
            proc = ManagedProcess(
                node,
                [
                    sys.executable, "-m", "factoryctl.exporter.main",
                    "--simulate", str(gpus), "--node-name", node,
                    "--listen", f"127.0.0.1:{port}", "--sim-seed", str(gpus),
                    "--energy-interval", "2",
                ],
                tmp_path / f"{node}.log",
            ).start()  # fmt: skip
            exporters.append(proc)
            targets.append(f"127.0.0.1:{port}")
            wait_until(lambda p=port: port_open(p), 20, f"exporter {node}")
        prom = prometheus(targets)
        prom.wait_all_up(len(targets))
        wait_until(
            lambda: prom.scalar("count(factoryctl_gpu_up == 1)") == sum(sizes.values()),
            30,
            "every GPU in Prometheus",
            interval=0.2,
        )
        for node, gpus in sizes.items():
            up = prom.query(f'factoryctl_gpu_up{{node="{node}"}}')
            assert sorted(int(r["metric"]["gpu"]) for r in up) == list(range(gpus))
            target = targets[list(sizes).index(node)]
            with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as resp:
                body = resp.read().decode()
            uuids = {r["metric"]["uuid"] for r in up}
            assert all(u in body for u in uuids) and len(uuids) == gpus
        # Simulated jobs hold GPUs, so some attribution and per-job energy is visible too.
        assert prom.scalar("count(factoryctl_gpu_job_info)") >= 1
        wait_until(
            lambda: prom.scalar("sum(factoryctl_job_energy_joules_total)") > 0,
            30,
            "per-job energy after the first energy-interval",
            interval=0.2,
        )
    finally:
        for proc in exporters:
            proc.stop()


class DrivenNode:
    """An in-process exporter over a node of a factory the test drives, served over HTTP."""

    def __init__(self, sim: SimFactory, node: str, grace: float, proc_root, map_dir=None) -> None:
        backend = SimBackend(sim, node, follow_clock=False)
        maps = JobMapDir(map_dir) if map_dir is not None else None
        self.exporter = Exporter(
            backend, node, Attributor(maps, ProcResolver(proc_root)), grace_seconds=grace
        )
        self.registry = register_collectors(CollectorRegistry(auto_describe=False), self.exporter)
        self.server = MetricsServer(self.registry, f"127.0.0.1:{free_port()}").start()
        self.target = f"127.0.0.1:{self.server.port}"

    def collect(self, now: float) -> None:
        self.exporter.collect_once(now)


def synced(prom: Prometheus, nodes: list[DrivenNode]) -> None:
    """Wait until Prometheus has scraped every node's latest collection."""
    want = {n.target: float(n.exporter.snapshot.collections) for n in nodes}
    wait_until(
        lambda: prom.vector("factoryctl_exporter_collections_total", "instance") == want,
        30,
        "Prometheus to scrape the latest collections",
        interval=0.1,
    )


def eventually(check, what: str, timeout: float = 20) -> None:
    """Poll until ``check`` stops raising AssertionError/KeyError (a new series can take a
    moment to become searchable in VictoriaMetrics); then run it once more for the report."""

    def passes() -> bool:
        try:
            check()
        except (AssertionError, KeyError):
            return False
        return True

    with contextlib.suppress(TimeoutError):
        wait_until(passes, timeout, what, interval=0.2)
    check()


def _none(value: float | None) -> None:
    assert value is None, value


def check_energy(prom: Prometheus, sim: SimFactory, jobs: list[str]) -> None:
    def check() -> None:
        measured = prom.vector("sum by (job_id) (factoryctl_job_energy_joules_total)", "job_id")
        for job in jobs:
            truth = sim.true_energy(job)
            assert truth > 0
            assert measured[job] == pytest.approx(truth, rel=0.005), job

    eventually(check, f"energy of {jobs} in the TSDB")


def check_spanning(prom: Prometheus, sim: SimFactory) -> None:
    def check() -> None:
        per_node = prom.vector('factoryctl_job_energy_joules_total{job_id="1002"}', "node")
        assert set(per_node) == {"n1", "n2"}
        truth = sim.true_energy("1002") + sim.true_energy("1002.n2")
        assert sum(per_node.values()) == pytest.approx(truth, rel=0.005)
        assert per_node["n2"] == pytest.approx(sim.true_energy("1002.n2"), rel=0.005)

    eventually(check, "energy of the spanning job 1002")


def test_job_energy_in_prometheus_matches_the_simulators_truth(tmp_path, prometheus):
    sim = SimFactory(SimConfig(nodes=2, node_names=("n1", "n2"), gpus_per_node=4, jobs=False))
    # n2 learns its jobs from a job-map directory, as a Slurm prolog would write it.
    maps = tmp_path / "jobmap-n2"
    maps.mkdir()
    nodes = [
        DrivenNode(sim, "n1", 600.0, tmp_path / "proc"),
        DrivenNode(sim, "n2", 600.0, tmp_path / "proc", map_dir=maps),
    ]
    try:
        prom = prometheus([n.target for n in nodes])

        def run(seconds: int) -> None:
            for _ in range(seconds):
                sim.advance(1.0)
                for n in nodes:
                    n.collect(sim.now)

        run(1)
        # A 2-GPU job on n1 and job 1002 spanning both nodes (the simulator keeps the n2
        # part's truth under "1002.n2"; n2's exporter sees "1002" in its job map).
        sim.assign("1001", "ada", "n1", [0, 1], Workload.TRAINING)
        sim.assign("1002", "ben", "n1", [2, 3], Workload.INFERENCE)
        sim.assign("1002.n2", "ben", "n2", [0, 1], Workload.INFERENCE)
        for gpu in (0, 1):
            (maps / str(gpu)).write_text("1002\n")
        for n in nodes:
            n.collect(sim.now)
        run(40)
        prom.wait_all_up(2)
        synced(prom, nodes)
        check_energy(prom, sim, ["1001"])
        check_spanning(prom, sim)
        # Job 1001 ends, 1003 starts on its GPUs, and n2's GPU 1 driver reloads.
        sim.release("1001")
        sim.assign("1003", "cy", "n1", [0], Workload.IDLE)
        for n in nodes:
            n.collect(sim.now)
        sim.reset_energy_counter("n2", 1)
        run(45)
        synced(prom, nodes)
        check_energy(prom, sim, ["1001", "1003"])
        check_spanning(prom, sim)
        gpu_energy = prom.vector(
            'factoryctl_gpu_energy_joules_total{node="n2"}', "gpu"
        )  # never backwards across the reset
        assert gpu_energy["1"] > 0
        sim.release("1002")
        sim.release("1002.n2")
        for gpu in (0, 1):
            (maps / str(gpu)).unlink()
        sim.release("1003")
        for n in nodes:
            n.collect(sim.now)
        run(10)
        synced(prom, nodes)
        check_spanning(prom, sim)
        check_energy(prom, sim, ["1001", "1003"])
        # Nothing holds a GPU. A series' end (its staleness marker) becomes searchable
        # within the engine's search delay, like a new sample (5 s on VictoriaMetrics 1.112+).
        eventually(
            lambda: _none(prom.scalar("count(factoryctl_gpu_job_info)")), "job_info series to end"
        )
    finally:
        for n in nodes:
            n.server.stop()


@pytest.mark.slow
def test_series_stay_bounded_after_1000_jobs(tmp_path, host_prometheus):
    prometheus = host_prometheus
    gpus, grace, duration = 8, 30.0, 12.0
    sim = SimFactory(SimConfig(nodes=1, node_names=("n1",), gpus_per_node=gpus, jobs=False))
    node = DrivenNode(sim, "n1", grace, tmp_path / "proc")
    try:
        prom = prometheus([node.target])
        node.collect(sim.now)
        prom.wait_all_up(1)
        synced(prom, [node])
        samples = f'scrape_samples_scraped{{instance="{node.target}"}}'
        baseline = prom.scalar(samples)
        ends: dict[int, float] = {}
        started = 0
        peak_jobs = 0
        while started < 1000 or ends:
            for g in range(gpus):
                if g in ends and ends[g] <= sim.now:
                    sim.release(f"job{g}-{ends.pop(g)}")
                if g not in ends and started < 1000:
                    end = sim.now + duration + (started % 5)
                    sim.assign(f"job{g}-{end}", "ada", "n1", [g], Workload.TRAINING)
                    ends[g] = end
                    started += 1
            sim.advance(1.0)
            node.collect(sim.now)
            peak_jobs = max(peak_jobs, len(node.exporter.snapshot.jobs))
            if int(sim.now) % 200 == 0:
                synced(prom, [node])  # let Prometheus see the churn as it happens
        sim.advance(grace + 1)
        node.collect(sim.now)
        synced(prom, [node])
        # Live jobs plus those finished within the grace period, never all 1,000.
        bound = gpus * (1 + int(grace / duration) + 1)
        assert peak_jobs <= bound
        eventually(
            lambda: _none(prom.scalar("count(factoryctl_job_energy_joules_total)")),
            "every job counter to end",
        )
        peak = prom.scalar(f"max_over_time({samples}[1h])")
        assert baseline is not None and peak is not None
        # 3 job counters per job counted; per live job (at most one a GPU) its job_info
        # and its 7 (node, job) gauges: factoryctl_job_gpus and the 6 rollups.
        assert peak <= baseline + 3 * bound + gpus + 7 * gpus
        final = prom.scalar(samples)
        assert final is not None and final <= baseline + gpus
    finally:
        node.server.stop()
