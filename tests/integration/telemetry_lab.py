"""The real telemetry stack for integration tests: Prometheus + VictoriaMetrics scraping sim nodes.

Every engine of every Debian generation the lab runs (Prometheus 2.42/2.53/3.5 and
VictoriaMetrics 1.79/1.112/1.145) scrapes the same simulated nodes at once, so the
scenario's jobs run once for all six.

Fixtures (import them into a test module): ``lab`` (session), ``engine_url`` (one per
engine and release) and ``scenario`` (jobs run once while every engine scrapes)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from factoryctl.lab.debian import RELEASES
from factoryctl.lab.procs import wait_until
from factoryctl.lab.stack import Stack, engine_available
from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.prom_detect import detect_search_delay
from tests.integration.simexpo import SimTargets

# "prometheus@bookworm", "victoriametrics@bookworm", "prometheus@trixie", ...
ENGINES = tuple(f"{e}@{r}" for r in RELEASES for e in ("prometheus", "victoriametrics"))


@dataclass
class Lab:
    sim: SimFactory
    native: SimTargets
    dcgm: SimTargets
    stack: Stack
    started: float


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    engines = [e for e in ENGINES if engine_available(e)]
    if not engines:
        pytest.skip("needs prometheus and victoria-metrics (on PATH or in a lab release)")
    started = time.time()
    sim = SimFactory(SimConfig(nodes=2, gpus_per_node=4, jobs=False, start_time=started))
    native = SimTargets(sim, "native").start()
    # The dcgm view of the same GPUs: its own servers, sharing the simulator and its lock.
    dcgm = SimTargets(sim, "dcgm", lock=native.lock).start()
    targets = [*native.addresses.values(), *dcgm.addresses.values()]
    stack = Stack(tmp_path_factory.mktemp("lab"), targets, engines, scrape_interval="1s")
    try:
        stack.start()
        stack.wait_scraped(timeout=60)
        yield Lab(sim, native, dcgm, stack, started)
    finally:
        stack.stop()
        native.stop()
        dcgm.stop()


@pytest.fixture(params=ENGINES)
def engine_url(request: pytest.FixtureRequest, lab: Lab) -> str:
    if request.param not in lab.stack.running:
        pytest.skip(f"{request.param} is not available here (build it: ./dev test does)")
    return lab.stack.running[request.param].url


@dataclass
class Scenario:
    finished: dict[str, float]  # job id -> true joules
    running: str
    end: float


def _newest_sample(url: str, metric: str) -> float:
    client = PromClient(PromConfig(url))
    res = client.query(f"max(timestamp({metric}))", time.time())
    return res.vector[0].value if res.vector else 0.0


@pytest.fixture(scope="session")
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
    # stretch to seconds: the jobs run long enough (as real ones do, hours) that a few
    # seconds at an edge stay well inside the 0.5% bound.
    now(lambda: sim.assign("501", "ada", n0, [0, 1], Workload.TRAINING))
    now(lambda: sim.assign("502", "ben", n1, [0, 1], Workload.TRAINING))
    time.sleep(12)
    now(lambda: sim.reset_energy_counter(n1, 0))  # a driver reload inside job 502
    time.sleep(12)
    # Job change on the same GPUs: 501 hands GPUs 0-1 of n0 to 503 at once.
    now(lambda: (sim.release("501"), sim.assign("503", "chen", n0, [0, 1], Workload.INFERENCE)))
    now(lambda: sim.assign("504", "dana", n1, [2, 3], Workload.IDLE))
    time.sleep(60)  # 503 is bursty inference: its power swings within a scrape gap
    now(lambda: (sim.release("502"), sim.release("503")))
    end = time.time()
    # Both engines must have scraped past the last end (VictoriaMetrics lags ~1-2 s).
    for engine in lab.stack.running.values():
        for metric in ("factoryctl_gpu_up", "DCGM_FI_DEV_GPU_UTIL"):
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
        truth = {j: sim.true_energy(j) for j in ("501", "502", "503")}
    return Scenario(truth, "504", end)
