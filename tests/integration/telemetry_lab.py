"""The real telemetry stack for integration tests: Prometheus + VictoriaMetrics scraping sim nodes.

Every engine of every Debian generation the lab runs (Prometheus 2.42/2.53/3.5 and
VictoriaMetrics 1.79/1.112/1.145) scrapes the same simulated nodes at once, so the
scenario's jobs run once for all six.

A third, one-engine stack (the newest Prometheus) scrapes the plain dcgm view and a
``factoryctl scheduler-exporter`` serving the simulator's jobs as Slurm's allocation
(``factoryctl_slurm_gpu_job_info``): a dcgm-exporter site without a job mapping whose
attribution history comes from the scheduler. Cost: one more Prometheus for the session,
scraping three targets at 1 s: 0.2 s to start, its first scrape (~6 s alone, measured at
load 7 on 2 cores) waited for alongside the other stacks', ~1 s to stop.

Fixtures (import them into a test module): ``lab`` (package scope: stopped after the last
integration test, so no engine scrapes, and so steps, the simulator while tests/tui and
tests/unit run), ``engine_url`` (one per engine and release), ``hpc_engine_url``,
``slurm_engine_url`` and ``scenario`` (jobs run once while every engine scrapes)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from factoryctl.lab.debian import RELEASES
from factoryctl.lab.procs import wait_until
from factoryctl.lab.stack import Stack, engine_available
from factoryctl.model import JobState
from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.sim.jobs import SimJob
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.prom_detect import detect_search_delay
from tests.integration.simexpo import SimScheduler, SimTargets

# "prometheus@bookworm", "victoriametrics@bookworm", "prometheus@trixie", ...
ENGINES = tuple(f"{e}@{r}" for r in RELEASES for e in ("prometheus", "victoriametrics"))


@dataclass
class Lab:
    sim: SimFactory
    native: SimTargets
    dcgm: SimTargets
    stack: Stack
    started: float
    # dcgm-exporter with HPC job mapping (``hpc_job`` on every series of an allocated
    # GPU), scraped by engines of their own: its series would double the dcgm GPUs above.
    dcgm_hpc: SimTargets | None = None
    hpc_stack: Stack | None = None
    # dcgm-exporter without a mapping, plus a scheduler-exporter: one Prometheus.
    slurm_stack: Stack | None = None


class SchedulerExporterThread:
    """``factoryctl scheduler-exporter``'s cache, registry and server in this process,
    over ``scheduler`` (a real ``SlurmCLI``, or the simulator's), re-read every
    ``interval`` in a thread that ``stop`` joins."""

    def __init__(self, scheduler: object, interval: float = 0.25) -> None:
        import io

        from factoryctl.cli.env import Environment
        from factoryctl.cli.scheduler_exporter import NodeCache, make_registry
        from factoryctl.exporter.server import MetricsServer

        self.stderr = io.StringIO()  # the cache's warnings (a failed read)
        env = Environment(stdout=io.StringIO(), stderr=self.stderr, environ={})
        env.scheduler_factory = lambda _env: scheduler  # type: ignore[assignment,return-value]
        self.cache = NodeCache(env)
        self.server = MetricsServer(make_registry(self.cache), "127.0.0.1:0")
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scheduler-exporter")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def start(self) -> SchedulerExporterThread:
        self.cache.read()
        self.server.start()
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.cache.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.server.stop()


class SimSchedulerExporter(SchedulerExporterThread):
    """The scheduler-exporter over the simulator's scheduler (what Slurm would say)."""

    def __init__(self, targets: SimTargets, interval: float = 0.25) -> None:
        super().__init__(SimScheduler(targets), interval)


@pytest.fixture(scope="package")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    engines = [e for e in ENGINES if engine_available(e)]
    if not engines:
        pytest.skip("needs prometheus and victoria-metrics (on PATH or in a lab release)")
    started = time.time()
    sim = SimFactory(SimConfig(nodes=2, gpus_per_node=4, jobs=False, start_time=started))
    native = SimTargets(sim, "native").start()
    # The dcgm view of the same GPUs: its own servers, sharing the simulator and its lock.
    dcgm = SimTargets(sim, "dcgm", lock=native.lock).start()
    hpc = SimTargets(sim, "dcgm", lock=native.lock, hpc_jobs=True).start()
    targets = [*native.addresses.values(), *dcgm.addresses.values()]
    stack = Stack(tmp_path_factory.mktemp("lab"), targets, engines, scrape_interval="1s")
    # The newest Prometheus and VictoriaMetrics available scrape the hpc_job view.
    hpc_engines = [
        next(e for e in reversed(engines) if e.startswith(kind))
        for kind in ("prometheus", "victoriametrics")
        if any(e.startswith(kind) for e in engines)
    ]
    hpc_stack = Stack(
        tmp_path_factory.mktemp("lab-hpc"),
        list(hpc.addresses.values()),
        hpc_engines,
        scrape_interval="1s",
    )
    sched = SimSchedulerExporter(dcgm).start()
    slurm_stack = Stack(
        tmp_path_factory.mktemp("lab-slurm-attribution"),
        list(dcgm.addresses.values()),
        hpc_engines[:1],
        scrape_interval="1s",
        scheduler_targets=[sched.address],
    )
    try:
        stack.start()
        hpc_stack.start()
        slurm_stack.start()
        stack.wait_scraped(timeout=60)
        hpc_stack.wait_scraped(timeout=60)
        slurm_stack.wait_scraped(timeout=60)
        yield Lab(sim, native, dcgm, stack, started, hpc, hpc_stack, slurm_stack)
    finally:
        slurm_stack.stop()
        sched.stop()
        hpc_stack.stop()
        stack.stop()
        native.stop()
        dcgm.stop()
        hpc.stop()


@pytest.fixture(params=("prometheus", "victoriametrics"))
def hpc_engine_url(request: pytest.FixtureRequest, lab: Lab) -> str:
    """An engine scraping dcgm-exporter with HPC job mapping (``hpc_job``)."""
    assert lab.hpc_stack is not None
    for name, engine in lab.hpc_stack.running.items():
        if name.startswith(request.param):
            return engine.url
    pytest.skip(f"no {request.param} available here")


@pytest.fixture
def slurm_engine_url(lab: Lab) -> str:
    """The engine scraping dcgm-exporter without a mapping and a scheduler-exporter."""
    if lab.slurm_stack is None or not lab.slurm_stack.running:
        pytest.skip("no engine for the scheduler-exporter's attribution here")
    return next(iter(lab.slurm_stack.running.values())).url


@pytest.fixture(params=ENGINES)
def engine_url(request: pytest.FixtureRequest, lab: Lab) -> str:
    if request.param not in lab.stack.running:
        pytest.skip(f"{request.param} is not available here (build it: ./dev test does)")
    return lab.stack.running[request.param].url


# The scenario's phases, in seconds: jobs 501, 502 and 505 run two of them, 502 and 503
# the last one too, and 504 has held its GPUs idle for the last one when the scenario ends.
# The measured errors scale as the inverse of a job's length: at PHASE = 6 s the dcgm
# method read job 501 (two phases, then handed at once to bursty 503) 0.55 % low on two
# engines of one CI run, over the 0.5 % bound; 10 s phases keep a margin at 1 s scrapes.
PHASE = 10.0
LAST_PHASE = 24.0


@dataclass
class Scenario:
    finished: dict[str, float]  # job id -> true joules
    running: str
    end: float


def _newest_sample(url: str, metric: str) -> float:
    client = PromClient(PromConfig(url))
    res = client.query(f"max(timestamp({metric}))", time.time())
    return res.vector[0].value if res.vector else 0.0


# Every series the energy tests read is waited for, not one stand-in: VictoriaMetrics
# >= 1.112 makes a scrape searchable up to 5 s later (seen once right after the scenario:
# job 502's counter 0.54 % low on 1.112 while factoryctl_gpu_up was already past the end;
# the likely cause is that flush, not proven).
NATIVE_SERIES = ("factoryctl_gpu_up", "factoryctl_job_energy_joules_total")
DCGM_SERIES = ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")


@pytest.fixture(scope="package")
def scenario(lab) -> Scenario:
    sim, lock = lab.sim, lab.native.lock
    n0, n1 = sim.node_names

    def now(action) -> None:
        with lock:
            lab.native.sync()
            action()
            # What the exporter does on a job change: attribute from this instant on.
            lab.native.observe(sim)

    # The dcgm-exporter method sees a job's start and end only at scrape resolution, so its
    # error is bounded by the scrape gaps at the two edges. Under a loaded suite those gaps
    # stretch to seconds: the edges are split by power x time (edges.py), so a gap costs
    # only the power that changed inside it, and the jobs run long enough (PHASE) that
    # this stays well inside the bound.
    def multi_node() -> None:
        # 505: one job on both nodes (GPUs 2-3 of each), cancelled half-way.
        job = SimJob("505", "eve", "", 4, float("inf"), Workload.TRAINING)
        sim.jobs["505"] = job
        sim.start_job(job, [(0, [2, 3]), (1, [2, 3])])

    now(lambda: sim.assign("501", "ada", n0, [0, 1], Workload.TRAINING))
    now(lambda: sim.assign("502", "ben", n1, [0, 1], Workload.TRAINING))
    now(multi_node)
    time.sleep(PHASE)
    now(lambda: sim.reset_energy_counter(n1, 0))  # a driver reload inside job 502
    time.sleep(PHASE)
    # Job change on the same GPUs: 501 hands GPUs 0-1 of n0 to 503 at once.
    now(lambda: (sim.release("501"), sim.assign("503", "chen", n0, [0, 1], Workload.INFERENCE)))
    # 505 is cancelled and 504 takes its GPUs on the second node at once.
    now(
        lambda: (
            sim.release("505", JobState.CANCELLED),
            sim.assign("504", "dana", n1, [2, 3], Workload.IDLE),
        )
    )
    time.sleep(LAST_PHASE)  # 503 is bursty inference: its power swings within a scrape gap
    now(lambda: (sim.release("502"), sim.release("503")))
    end = time.time()
    # Both engines must have scraped past the last end (VictoriaMetrics lags ~1-2 s).
    hpc_engines = [
        *(lab.hpc_stack.running.values() if lab.hpc_stack is not None else ()),
        *(lab.slurm_stack.running.values() if lab.slurm_stack is not None else ()),
    ]
    for engine, metrics in [
        *((e, (*NATIVE_SERIES, *DCGM_SERIES)) for e in lab.stack.running.values()),
        *((e, DCGM_SERIES) for e in hpc_engines),
    ]:
        for metric in metrics:
            wait_until(
                lambda u=engine.url, m=metric: _newest_sample(u, m) > end + 1.5,
                30,
                f"{engine.name} to scrape past the jobs' end",
                interval=0.25,
            )
    # And until the jobs' end has left every engine's freshness window (2 scrapes plus its
    # search delay: 5 s on VictoriaMetrics >= 1.112), so "now" no longer shows them held.
    delay = max(
        detect_search_delay(PromClient(PromConfig(e.url))) for e in lab.stack.running.values()
    )
    time.sleep(max(0.0, end + 2 * 1.0 + delay + 0.5 - time.time()))
    with lock:
        truth = {j: sim.true_energy(j) for j in ("501", "502", "503", "505")}
    return Scenario(truth, "504", end)
