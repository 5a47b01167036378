"""The scheduler's view of the nodes as Prometheus series, for rules and dashboards.

factoryctl-exporter runs on GPU nodes and knows nothing of Slurm's node states, reasons or
partitions. Alerts such as "drained for more than 24 h" and power per partition need them,
so whoever holds the scheduler's view (the console's scheduler backend, the lab) registers
this collector: one small set of series per node, built from ``model.Node`` values.

Like the exporter's, a scrape never calls the scheduler: ``nodes`` returns the last
snapshot's nodes, refreshed elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from factoryctl.model import Node
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
