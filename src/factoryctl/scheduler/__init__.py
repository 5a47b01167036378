"""Schedulers: the protocol, the Slurm backends and the demo scheduler.

``open_scheduler`` imports the chosen backend only when asked, so ``factoryctl --help``
never pays for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from factoryctl.errors import ConfigError
from factoryctl.scheduler.base import NextState, Reservation, ReservationRequest, Scheduler

__all__ = ["NextState", "Reservation", "ReservationRequest", "Scheduler", "open_scheduler"]


def open_scheduler(
    settings: Mapping[str, Mapping[str, Any]], demo: bool, environ: Mapping[str, str]
) -> Scheduler:
    if demo:
        from factoryctl.scheduler.demo import DemoScheduler
        from factoryctl.telemetry.demo import DemoSource

        d = settings["demo"]
        source = DemoSource.create(
            nodes=d["nodes"],
            gpus_per_node=d["gpus_per_node"],
            seed=d["seed"],
            faults_per_node_day=d.get("faults_per_node_day", 0.0),
        )
        return DemoScheduler(source.sim)
    kind = settings["scheduler"]["type"]
    if kind == "slurm":
        from factoryctl.scheduler.slurm_cli import SlurmCLI

        return SlurmCLI(env=dict(environ))
    if kind == "slurmrestd":
        from factoryctl.scheduler.slurmrestd import open_slurmrestd

        return open_slurmrestd(settings["scheduler"], environ)
    raise ConfigError(
        f"no scheduler configured (scheduler type {kind!r}): actions need slurm or slurmrestd"
    )
