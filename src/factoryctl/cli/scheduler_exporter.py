"""``factoryctl scheduler-exporter``: the scheduler's view of the nodes for Prometheus.

factoryctl-exporter runs on GPU nodes and knows nothing of Slurm's node states, reasons,
partitions or configured GPUs; the rules need them ("drained for more than 24 h", "GPU
missing versus expected", power per partition). One instance of this command, next to
Prometheus, serves them from the configured scheduler. Prometheus scrapes it under the job
name ``factoryctl-scheduler`` (the rules tell its ``up`` apart from the node exporters').

It also serves Slurm's allocation of the running jobs, one series per (node, GPU index,
job) with user and account: on dcgm-exporter sites without a job mapping that is the
attribution history the console reads a finished job's GPUs from (Slurm forgets them when
the job ends). Jobs whose GPU indices Slurm does not give are counted, never invented.

A scrape never calls the scheduler: a background thread re-reads the nodes every
``--interval`` and a scrape serves the latest successful read (sinfo at 10k nodes takes
seconds; a scrape must not). A failed read keeps the previous view and is logged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import click
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from factoryctl.cli.common import get_env
from factoryctl.cli.env import Environment
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Job, Node
from factoryctl.telemetry.scheduler_collector import (
    JobAttributionCollector,
    SchedulerCollector,
)

DEFAULT_PORT = 9836  # factoryctl-exporter's 9835 plus one
JOB_NAME = "factoryctl-scheduler"


class NodeCache:
    """The latest successful ``scheduler.nodes()`` (and ``jobs()``), refreshed by
    ``refresh()``. Both are read or neither is kept: a view is one instant's."""

    def __init__(self, env: Environment, with_jobs: bool = True) -> None:
        self.env = env
        self.with_jobs = with_jobs
        self.nodes: Sequence[Node] = ()
        self.jobs: Sequence[Job] = ()
        self.last_success: float | None = None
        self.failures = 0

    def read(self) -> None:
        """One read; the scheduler's one-line error propagates (``--once``)."""
        scheduler = self.env.scheduler()
        nodes = tuple(scheduler.nodes())
        jobs = tuple(scheduler.jobs()) if self.with_jobs else ()
        self.nodes, self.jobs, self.last_success = nodes, jobs, self.env.clock()

    def refresh(self) -> bool:
        try:
            self.read()
        except FactoryctlError as exc:
            self.failures += 1
            self.env.warn(f"scheduler-exporter: reading Slurm failed, keeping the last view: {exc}")
            return False
        return True


class HealthCollector(Collector):
    """Is the view fresh? For an alert on a scheduler that stopped answering."""

    def __init__(self, cache: NodeCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        if self.cache.last_success is not None:
            yield GaugeMetricFamily(
                "factoryctl_scheduler_view_last_success_timestamp_seconds",
                "Unix time of the latest successful read of the scheduler's nodes and jobs.",
                value=self.cache.last_success,
            )
        yield CounterMetricFamily(
            "factoryctl_scheduler_view_failures",
            "Reads of the scheduler's nodes and jobs that failed.",
            value=self.cache.failures,
        )


def make_registry(cache: NodeCache) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SchedulerCollector(lambda: cache.nodes))
    if cache.with_jobs:
        registry.register(JobAttributionCollector(lambda: cache.jobs))
    registry.register(HealthCollector(cache))
    return registry


@click.command("scheduler-exporter")
@click.option(
    "--listen",
    metavar="[HOST]:PORT",
    default=f":{DEFAULT_PORT}",
    show_default=True,
    help="Address to serve /metrics on.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds between reads of the scheduler's nodes and jobs.",
)
@click.option(
    "--web-config",
    "web_config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Prometheus web-config file (TLS, basic auth).",
)
@click.option(
    "--jobs/--no-jobs",
    "with_jobs",
    default=True,
    show_default=True,
    help="Also serve the running jobs' GPUs (factoryctl_slurm_gpu_job_info): the "
    "attribution history of dcgm-exporter sites without a job mapping.",
)
@click.option("--once", is_flag=True, help="Print the metrics once to stdout and exit.")
def scheduler_exporter(
    listen: str, interval: float, web_config_path: Path | None, with_jobs: bool, once: bool
) -> int:
    """Serve the scheduler's node states, GPU counts and running jobs' GPUs to Prometheus.

    Node states, reasons, partitions and configured GPUs per node; and which job holds
    which GPU (node, GPU index, job, user, account) while it runs. On a dcgm-exporter site without HPC job mapping, that series is how the console knows
    a finished job's GPUs (Slurm forgets them when the job ends). Running jobs whose GPU
    indices Slurm does not give are counted in
    factoryctl_slurm_jobs_gpu_indices_unknown, never guessed."""
    from factoryctl.exporter.server import MetricsServer, stop_on_signals
    from factoryctl.exporter.webconfig import WebConfig, load_web_config

    env = get_env()
    cache = NodeCache(env, with_jobs)
    registry = make_registry(cache)
    if once:  # errors are the scheduler's own one-line messages
        cache.read()
        env.stdout.write(generate_latest(registry).decode())
        return int(ExitStatus.OK)
    web = load_web_config(web_config_path) if web_config_path is not None else WebConfig()
    server = MetricsServer(registry, listen, web)  # bind first: a taken port fails fast
    stop = stop_on_signals()
    env.scheduler()  # a scheduler that is not configured fails now, not at every read
    cache.refresh()
    server.start()
    env.stderr.write(
        f"factoryctl scheduler-exporter: serving {len(cache.nodes)} nodes"
        f"{f' and {len(cache.jobs)} jobs' if with_jobs else ''} on "
        f"{server.scheme}://{listen.rpartition(':')[0] or '*'}:{server.port}/metrics\n"
    )
    env.stderr.flush()
    try:
        next_read = time.monotonic() + interval
        while not stop.wait(max(0.0, next_read - time.monotonic())):
            cache.refresh()
            next_read = time.monotonic() + interval
    finally:
        server.stop()
    return int(ExitStatus.OK)
