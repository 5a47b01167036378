"""One node's GPU processes from Prometheus: the exporter's per-process series.

Fetched only for the node someone is looking at (``factoryctl node``, the console's Node
detail), never as part of the factory snapshot. One instant query, filtered by node, for
``last_over_time`` over two scrape intervals like every other "latest value" here (so
backfilled data without staleness markers reads the same as live data; a process that
ended within those two intervals can still be listed). When that comes back empty, a
second small query tells "nothing runs here" from "the exporter does not export
processes" (``--no-process-metrics``, or NVML cannot say their memory).

dcgm-exporter publishes no per-process series: its sites get an unavailable table with a
note, never an empty one that would read as "no processes".
"""

from __future__ import annotations

from factoryctl.processes import GpuProcessRow, ProcessTable, sort_rows, unavailable
from factoryctl.telemetry import schema as native
from factoryctl.telemetry.client import label_matcher
from factoryctl.telemetry.job_energy import dur
from factoryctl.telemetry.metrics import NATIVE
from factoryctl.telemetry.prom_context import PromContext

DCGM_NOTE = (
    "dcgm-exporter exports no per-process series: run factoryctl-exporter on the node"
    " for its processes"
)


def node_processes(source: PromContext, node: str, t: float) -> ProcessTable:
    schema = source.schema(t)
    if schema is not NATIVE:
        return unavailable(node, DCGM_NOTE)
    w = dur(source.window(t))
    sel = f'{{{schema.node_label}=~"{label_matcher([node])}"}}'
    res = source.client.query(f"last_over_time({native.GPU_PROCESS_USED_MEMORY}{sel}[{w}])", t)
    rows: list[GpuProcessRow] = []
    for s in res.vector:
        labels = s.labels
        try:
            gpu, pid = int(labels.get(schema.gpu_label, "")), int(labels.get("pid", ""))
        except ValueError:
            continue  # not our exporter's series: nothing sensible to show
        rows.append(
            GpuProcessRow(
                node=node,
                gpu=gpu,
                pid=pid,
                name=labels.get("name", ""),
                user=labels.get("user", ""),
                job_id=labels.get("job_id", ""),
                memory_bytes=s.value,
                uuid=labels.get(schema.uuid_label, ""),
            )
        )
    if rows:
        return ProcessTable(node=node, rows=sort_rows(rows))
    counted = source.client.query(
        f"sum(last_over_time({native.GPU_PROCESSES}{sel}[{w}]))", t
    ).scalar()
    if counted is None:
        return unavailable(node, f"no process telemetry from {node} in the last {w}")
    if counted > 0:
        return unavailable(
            node,
            f"the exporter counts {int(counted)} process(es) but exports none by PID"
            " (an older exporter, --no-process-metrics, or NVML cannot say their memory)",
        )
    return ProcessTable(node=node)
