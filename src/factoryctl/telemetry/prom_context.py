"""What the per-view readers need from a Prometheus source, as one small protocol.

``node_summary``, ``job_summary`` and ``node_processes`` take a ``PromContext``, never
``PrometheusSource`` itself: the source imports them (to answer ``nodes``, ``jobs`` and a
node's processes) and they only read through this slice of it, so the data path reads
top-down (source -> readers -> client) without an import cycle. ``SourceOptions`` lives
here for the same reason: the readers need its windows, the source and ``prom_open``
construct it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from factoryctl.model import Job, Node
from factoryctl.telemetry.client import PromClient, TelemetryError
from factoryctl.telemetry.job_energy import PARALLEL_QUERIES
from factoryctl.telemetry.metrics import MetricSchema
from factoryctl.telemetry.results import QueryResult, Sample


@dataclass(frozen=True, slots=True)
class SourceOptions:
    schema: str = "auto"  # auto | native | dcgm
    scrape_interval: float | None = None  # None: ask the targets API, then the data
    search_delay: float | None = None  # None: ask the engine (VictoriaMetrics >= 1.112: 5 s)
    inventory_window: float = 600.0  # a GPU silent for longer than this is forgotten
    finished_lookback: float = 6 * 3600.0  # finished jobs shown by the scheduler join
    rollups: str = "auto"  # auto | on | off: read the factoryctl_node_*/job_* rollups


class PromContext(Protocol):
    """The source as the readers see it: a client, a clock, and what was detected."""

    client: PromClient
    options: SourceOptions

    @property
    def clock(self) -> Callable[[], float]: ...

    def schema(self, at: float) -> MetricSchema: ...

    def window(self, at: float) -> float: ...

    def rollups(self, at: float) -> bool: ...

    def scheduler_view(
        self, t: float, warnings: list[str], failures: list[str] | None = None
    ) -> tuple[list[Node], list[Job]] | None: ...


def run_queries(client: PromClient, plan: Mapping[str, str], t: float) -> dict[str, QueryResult]:
    """Every query of ``plan`` at ``t``, concurrently: the engine works on all of them
    while we wait once, not once per query."""
    if not plan:
        return {}
    with ThreadPoolExecutor(max_workers=min(PARALLEL_QUERIES, len(plan))) as pool:
        futures = {name: pool.submit(client.query, q, t) for name, q in plan.items()}
        return {name: f.result() for name, f in futures.items()}


def merged(metrics: Mapping[str, str], window: str) -> str:
    """The latest sample of every series of ``metrics`` in one query, names kept:
    ``last_over_time`` is the one range function that keeps the metric name on Prometheus
    (and VictoriaMetrics keeps it too), so several rollups cost one round trip, one index
    search and one parse instead of one each."""
    return f'last_over_time({{__name__=~"{"|".join(sorted(metrics.values()))}"}}[{window}])'


def split(result: QueryResult, metrics: Mapping[str, str]) -> dict[str, list[Sample]]:
    """A merged result by key; a series of another name (or none) is an answer we do not
    understand: an error, never a rollup silently missing."""
    keys = {m: k for k, m in metrics.items()}
    out: dict[str, list[Sample]] = {k: [] for k in metrics}
    for s in result.vector:
        key = keys.get(s.labels.get("__name__", ""))
        if key is None:
            raise TelemetryError(
                f"a merged rollup query returned a series named {s.labels.get('__name__')!r}"
                f" (expected one of {', '.join(sorted(keys))})"
            )
        out[key].append(s)
    return out
