"""The scheduler's view of the nodes as Prometheus series, for rules and dashboards.

factoryctl-exporter runs on GPU nodes and knows nothing of Slurm's node states, reasons or
partitions. Alerts such as "drained for more than 24 h" and power per partition need them,
so whoever holds the scheduler's view (the console's scheduler backend, the lab) registers
this collector: one small set of series per node, built from ``model.Node`` values.

``JobAttributionCollector`` adds Slurm's allocation of the running jobs, one series per
(node, GPU index, job): attribution history for dcgm-exporter sites without a job mapping.

Like the exporter's, a scrape never calls the scheduler: ``nodes`` and ``jobs`` return the
last snapshot's, refreshed elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from factoryctl.model import Job, JobState, Node
from factoryctl.telemetry import schema


class SchedulerCollector(Collector):
    def __init__(self, nodes: Callable[[], Iterable[Node]]) -> None:
        self._nodes = nodes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            schema.NODE_STATE_INFO,
            "The scheduler's state of the node and its reason; always 1.",
            labels=["node", "state", "reason"],
        )
        since = GaugeMetricFamily(
            schema.NODE_STATE_SINCE,
            "When the node's current state or reason was set, Unix seconds (where known).",
            labels=["node"],
        )
        partition = GaugeMetricFamily(
            schema.NODE_PARTITION_INFO,
            "One series per partition the node belongs to; always 1.",
            labels=["node", "partition"],
        )
        expected = GaugeMetricFamily(
            schema.NODE_GPUS_EXPECTED,
            "GPUs the scheduler has configured on the node (Slurm Gres).",
            labels=["node"],
        )
        for node in self._nodes():
            state.add_metric([node.name, node.state.value, node.reason], 1.0)
            if node.reason_time is not None:
                since.add_metric([node.name], node.reason_time)
            for name in node.partitions:
                partition.add_metric([node.name, name], 1.0)
            expected.add_metric([node.name], float(node.gpu_count))
        yield from (state, since, partition, expected)


def indices_unknown(job: Job) -> bool:
    """A running job holding GPUs on a node whose indices Slurm does not give (no GRES
    detail for that node): its count is known, which GPUs are not."""
    return any(not a.gpu_indices and (a.gpus or 0) > 0 for a in job.allocations)


class JobAttributionCollector(Collector):
    """Who holds which GPU now, as Slurm allocated it. Prometheus keeps the history."""

    def __init__(self, jobs: Callable[[], Iterable[Job]]) -> None:
        self._jobs = jobs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        held = GaugeMetricFamily(
            schema.SLURM_GPU_JOB_INFO,
            "A running job holds this GPU (Slurm's GRES index); always 1.",
            labels=["node", "gpu", "job_id", "user", "account"],
        )
        unknown = 0
        for job in self._jobs():
            # COMPLETING reads as running: the job still holds its GPUs until it is done.
            if job.state is not JobState.RUNNING:
                continue
            if indices_unknown(job):
                unknown += 1  # the nodes Slurm does give are still exported
            for alloc in job.allocations:
                for index in alloc.gpu_indices:
                    held.add_metric([alloc.node, str(index), job.job_id, job.user, job.account], 1)
        yield held
        yield GaugeMetricFamily(
            schema.SLURM_JOBS_GPU_INDICES_UNKNOWN,
            "Running jobs holding GPUs whose indices Slurm does not give (not exported).",
            value=unknown,
        )
