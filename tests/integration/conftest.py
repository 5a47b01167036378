"""A real Slurm cluster (munged, slurmctld, one slurmd per node) for integration tests,
of every generation the lab runs: each test that takes ``slurm`` or ``make_slurm_cluster``
runs once per release (``slurm_release``: 22.05, 24.11, 26.05).

One cluster per release (bring-up is about half a second, but tests reuse it): the
``slurm`` fixture resets it between tests (no jobs, no reservations, every node idle).
``make_slurm_cluster`` starts extra clusters with other settings (e.g. Prolog/Epilog for
the exporter's job-attribution tests); they are stopped when the release's tests end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from factoryctl.lab.debian import DebianRelease
from factoryctl.lab.slurm import SlurmCluster, slurm_available
from tests.integration.telemetry_lab import (  # noqa: F401 (fixtures)
    engine_url,
    hpc_engine_url,
    lab,
    scenario,
    slurm_engine_url,
)

needs_slurm = pytest.mark.skipif(
    not slurm_available(),
    reason="needs slurm-wlm + munge installed and root (mknod, SlurmUser=root)",
)


# The threads there were before any test ran (pytest imports this file while collecting).
_THREADS_BEFORE_TESTS = frozenset(threading.enumerate())


@pytest.fixture(scope="package", autouse=True)
def no_thread_outlives_the_integration_tests() -> Iterator[None]:
    """Every thread a test or fixture started (tests/exporter's too, which run first) is
    stopped when the integration tests end, before tests/tui and tests/unit run.

    The lab was session-scoped once: its engines kept scraping the simulated exporters,
    whose handler threads step the simulator on every scrape, until the session ended,
    and a unit test counting ``SimFactory._step_to`` calls on the class counted theirs.
    Torn down after every fixture of this package (autouse, so set up first), but before
    the session's: those start daemons, never threads. Cost: two thread listings."""
    yield
    deadline = time.monotonic() + 5  # a handler answering a last scrape may still finish
    left = [t for t in threading.enumerate() if t not in _THREADS_BEFORE_TESTS]
    for thread in left:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in left if t.is_alive()]
    assert not alive, f"threads still running after the integration tests: {alive}"


@pytest.fixture(scope="session")
def make_slurm_cluster(
    slurm_release: DebianRelease,
) -> Iterator[Callable[..., SlurmCluster]]:
    started: list[SlurmCluster] = []

    def make(**kwargs: Any) -> SlurmCluster:
        kwargs.setdefault("release", slurm_release)
        cluster = SlurmCluster(**kwargs).start()
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.stop()


@pytest.fixture(scope="session")
def slurm_cluster(make_slurm_cluster: Callable[..., SlurmCluster]) -> SlurmCluster:
    return make_slurm_cluster(nodes=4, gpus_per_node=8)


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    slurm_cluster.reset()
    yield slurm_cluster


@pytest.fixture(scope="session")
def slurm_accounting_cluster(make_slurm_cluster: Callable[..., SlurmCluster]) -> SlurmCluster:
    """A small cluster with slurmdbd and its MariaDB (sacct answers), one per release,
    for the accounting tests only: about 10 s to start (MariaDB's datadir and slurmdbd's
    schema), which the plain ``slurm_cluster`` does not pay. Jobs leave squeue after 2 s."""
    return make_slurm_cluster(
        nodes=2, gpus_per_node=4, cpus_per_node=8, accounting=True, extra_conf=["MinJobAge=2"]
    )
