"""The pure rollup function: each definition of ``factoryctl.rollups`` on hand-made nodes."""

from __future__ import annotations

import pytest

from factoryctl.occupancy import ACTIVE_THRESHOLD
from factoryctl.rollups import (
    XID_RECENT_SECONDS,
    JobRollup,
    NodeGpus,
    is_throttled,
    rollup,
)

NOW = 1_000_000.0


def node(n: int, **columns: list[object]) -> NodeGpus:
    base: dict[str, list[object]] = {
        "up": [True] * n,
        "utilization": [0.0] * n,
        "power_watts": [100.0] * n,
        "temperature_celsius": [40.0] * n,
        "throttled": [False] * n,
        "last_xid_time": [None] * n,
        "xid_errors": [0.0] * n,
        "energy_joules": [1000.0] * n,
        "idle_seconds": [None] * n,
        "jobs": [()] * n,
        "memory_used_bytes": [2.0**30] * n,
    }
    base.update(columns)
    return NodeGpus(**base)  # type: ignore[arg-type]


def test_node_counts_means_and_maxima_are_over_up_gpus_only():
    gpus = node(
        4,
        up=[True, True, True, False],
        utilization=[1.0, ACTIVE_THRESHOLD, ACTIVE_THRESHOLD - 1e-9, 1.0],
        power_watts=[700.0, 300.0, None, 9999.0],
        temperature_celsius=[70.0, 50.0, 40.0, 99.0],
        throttled=[True, False, False, True],  # the lost GPU's stale flag does not count
        xid_errors=[0.0, 2.0, 0.0, 1.0],
        energy_joules=[10.0, 20.0, None, 30.0],  # a lost GPU's counter still counts
    )
    n, jobs = rollup(gpus, NOW)
    assert (n.gpus, n.gpus_up, n.gpus_active, n.gpus_throttled) == (4, 3, 2, 1)
    assert n.power_watts == 1000.0  # the unknown power is left out, not taken as 0
    assert n.utilization == pytest.approx((1.0 + ACTIVE_THRESHOLD + ACTIVE_THRESHOLD - 1e-9) / 3)
    assert n.temperature_max_celsius == 70.0
    assert n.xid_errors == 3.0
    assert n.energy_joules == 60.0
    assert n.gpus_allocated == 0 and jobs == ()


def test_a_node_with_no_gpu_up_has_counts_but_no_mean_sum_or_max():
    gpus = node(2, up=[False, False], jobs=[(("7", "ada"),), ()])
    n, jobs = rollup(gpus, NOW)
    assert (n.gpus, n.gpus_up, n.gpus_allocated, n.gpus_active) == (2, 0, 1, 0)
    assert n.power_watts is None
    assert n.utilization is None
    assert n.temperature_max_celsius is None
    # The job still holds its lost GPU, but nothing about it can be measured.
    assert jobs == (JobRollup("7", "ada", 1, 0, None, None, None, None, None),)


def test_xid_recent_is_an_xid_within_the_hour_up_or_lost():
    gpus = node(
        4,
        up=[True, True, False, True],
        last_xid_time=[NOW - XID_RECENT_SECONDS, NOW - XID_RECENT_SECONDS - 1, NOW - 5, 0.0],
    )
    assert rollup(gpus, NOW)[0].gpus_xid_recent == 2


def test_throttled_means_a_hardware_or_thermal_reason():
    assert is_throttled({"hw_slowdown": True})
    assert is_throttled({"sw_thermal_slowdown": True, "gpu_idle": False})
    assert is_throttled({"hw_power_brake_slowdown": True})
    assert is_throttled({"hw_thermal_slowdown": True})
    assert not is_throttled({"sw_power_cap": True, "gpu_idle": True, "hw_slowdown": False})
    assert not is_throttled(None)
    assert not is_throttled({})


def test_job_rollups_per_job_and_user_with_shared_gpus():
    a, b = ("11", "ada"), ("12", "ben")
    gpus = node(
        4,
        up=[True, True, True, False],
        utilization=[0.9, 0.01, 0.5, None],
        power_watts=[600.0, 80.0, 400.0, None],
        idle_seconds=[0.0, 120.0, 0.0, None],
        jobs=[(a,), (a,), (a, b), (b,)],
    )
    n, jobs = rollup(gpus, NOW)
    assert n.gpus_allocated == 4
    ja, jb = jobs
    assert (ja.job_id, ja.user, ja.gpus, ja.gpus_active) == ("11", "ada", 3, 2)
    assert ja.utilization_sum == pytest.approx(1.41)
    assert ja.power_watts == 1080.0
    assert ja.idle_seconds == 120.0  # the longest spell among its GPUs
    assert (jb.gpus, jb.gpus_active, jb.utilization_sum, jb.power_watts) == (2, 1, 0.5, 400.0)
    assert jb.idle_seconds == 0.0  # its up GPU is active: no idle spell


def test_a_job_that_held_every_gpu_matches_the_node():
    gpus = node(
        8,
        utilization=[i / 8 for i in range(8)],
        power_watts=[100.0 + i for i in range(8)],
        idle_seconds=[30.0, 0.0, 0, 0, 0, 0, 0, 0],
        jobs=[(("1", "u"),)] * 8,
    )
    n, (j,) = rollup(gpus, NOW)
    assert j.gpus == n.gpus_allocated == 8
    assert j.gpus_active == n.gpus_active
    assert j.utilization_sum == pytest.approx(n.utilization * 8)  # type: ignore[operator]
    assert j.power_watts == n.power_watts
    assert j.idle_seconds == 30.0
