"""The real stack for integration tests: Prometheus + VictoriaMetrics scraping sim nodes."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from factoryctl.lab.stack import PROMETHEUS_BIN, VICTORIA_BIN, Stack
from factoryctl.sim import SimConfig, SimFactory
from tests.integration.simexpo import SimTargets

ENGINES = ("prometheus", "victoriametrics")


@dataclass
class Lab:
    sim: SimFactory
    native: SimTargets
    dcgm: SimTargets
    stack: Stack
    started: float


def _have(path: str) -> bool:
    return shutil.which(path) is not None


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not (_have(PROMETHEUS_BIN) and _have(VICTORIA_BIN)):
        pytest.skip("needs /usr/bin/prometheus and /usr/bin/victoria-metrics")
    started = time.time()
    sim = SimFactory(SimConfig(nodes=2, gpus_per_node=4, jobs=False, start_time=started))
    native = SimTargets(sim, "native").start()
    # The dcgm view of the same GPUs: its own servers, sharing the simulator and its lock.
    dcgm = SimTargets(sim, "dcgm", lock=native.lock).start()
    targets = [*native.addresses.values(), *dcgm.addresses.values()]
    stack = Stack(tmp_path_factory.mktemp("lab"), targets, ENGINES, scrape_interval="1s")
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
    return lab.stack.running[request.param].url
