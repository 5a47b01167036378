"""A real Slurm cluster (munged, slurmctld, one slurmd per node) for integration tests,
of every generation the lab runs: each test that takes ``slurm`` or ``make_slurm_cluster``
runs once per release (``slurm_release``: 22.05, 24.11, 26.05).

One cluster per release (bring-up is about half a second, but tests reuse it): the
``slurm`` fixture resets it between tests (no jobs, no reservations, every node idle).
``make_slurm_cluster`` starts extra clusters with other settings (e.g. Prolog/Epilog for
the exporter's job-attribution tests); they are stopped when the release's tests end.
"""

from __future__ import annotations

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
