"""Where a snapshot comes from: the demo simulator or Prometheus (plus the scheduler)."""

from __future__ import annotations

from typing import Any, Protocol

from factoryctl.errors import ConfigError
from factoryctl.model import FactorySnapshot


class FactorySource(Protocol):
    def snapshot(self) -> FactorySnapshot: ...


def open_source(settings: dict[str, dict[str, Any]], demo: bool) -> FactorySource:
    """The configured source. Imports lazily: the demo never loads httpx."""
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
        from factoryctl.telemetry import prometheus_source

        source: FactorySource = prometheus_source.open_prometheus_source(settings)
        return source
    raise ConfigError(
        "no data source: pass --prometheus URL (or set [prometheus] url in the config), or --demo"
    )
