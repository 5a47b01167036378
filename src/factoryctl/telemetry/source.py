"""Where a snapshot comes from: the demo simulator, Prometheus (joined with the scheduler
when there is one), or the scheduler alone when no Prometheus is configured."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from factoryctl.errors import ConfigError
from factoryctl.model import FactorySnapshot
from factoryctl.telemetry.scheduler_view import SchedulerView


class FactorySource(Protocol):
    def snapshot(self) -> FactorySnapshot: ...


def open_source(
    settings: dict[str, dict[str, Any]],
    demo: bool,
    scheduler: SchedulerView | None = None,
    clock: Callable[[], float] = time.time,
) -> FactorySource:
    """The configured source. ``scheduler``: the one the caller opened (None: none is
    configured). Imports lazily: the demo never loads httpx."""
    if demo:
        from factoryctl.telemetry.demo import DemoSource

        d = settings["demo"]
        return DemoSource.create(
            nodes=d["nodes"],
            gpus_per_node=d["gpus_per_node"],
            seed=d["seed"],
            faults_per_node_day=d["faults_per_node_day"],
        )
    if settings["prometheus"]["url"]:
        from factoryctl.telemetry.prom_open import open_prometheus_source

        source: FactorySource = open_prometheus_source(settings, scheduler)
        return source
    if scheduler is not None:
        from factoryctl.telemetry.scheduler_source import SchedulerSource

        return SchedulerSource(scheduler, clock=clock)
    raise ConfigError(
        "no data source: pass --prometheus URL (or set [prometheus] url in the config),"
        " --scheduler slurm|slurmrestd, or --demo"
    )
