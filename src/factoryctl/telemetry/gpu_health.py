"""A node's GPU health as Prometheus holds it, for the rollout's telemetry gate
(``actions.rollout_gate``): which GPUs report, and the XID and ECC counters at an explicit
instant. Both schemas: ours (native) and dcgm-exporter's.

Every query names its evaluation time, so "the counters when the work started" can be
asked again later (a resumed campaign) and gets the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping

from factoryctl.actions.rollout_gate import Counters
from factoryctl.errors import FactoryctlError
from factoryctl.telemetry import schema as native
from factoryctl.telemetry.client import label_matcher
from factoryctl.telemetry.metrics import DCGM_UTIL, DCGM_XID, MetricSchema
from factoryctl.telemetry.prometheus_source import PrometheusSource
from factoryctl.telemetry.results import QueryResult

DCGM_ECC = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"


class PromGpuTelemetry:
    """``rollout_gate.GpuTelemetry`` over a ``PrometheusSource`` (its client, detected
    schema and node label, scrape interval and search delay)."""

    def __init__(self, source: PrometheusSource) -> None:
        self.source = source

    def describe(self) -> str:
        return f"Prometheus at {self.source.client.url}"

    def _schema(self, at: float) -> MetricSchema:
        return self.source.schema(at)

    def _selector(self, schema: MetricSchema, node: str, extra: str = "") -> str:
        label = schema.node_label
        if label == "instance":  # host:port
            matcher = f'{label}=~"{label_matcher([node])}(:[0-9]+)?"'
        else:
            matcher = f'{label}="{_quote(node)}"'
        return "{" + matcher + (f",{extra}" if extra else "") + "}"

    def _query(self, promql: str, at: float) -> QueryResult:
        res = self.source.client.query(promql, at)
        if res.result_type != "vector":
            raise FactoryctlError(f"Prometheus answered {promql!r} with a {res.result_type}")
        return res

    def reporting(self, node: str, at: float, since: float) -> frozenset[str]:
        schema = self._schema(at)
        metric = native.GPU_UP if schema.name == "native" else DCGM_UTIL
        sel = metric + self._selector(schema, node)
        fresh = {
            _gpu(s.labels, schema)
            for s in self._query(f"timestamp({sel})", at).vector
            if s.value >= since
        }
        if schema.name != "native":
            return frozenset(g for g in fresh if g)  # dcgm: a fresh sample = the GPU answers
        up = {_gpu(s.labels, schema) for s in self._query(sel, at).vector if s.value == 1}
        return frozenset(g for g in fresh & up if g)

    def counters(self, node: str, at: float) -> Counters:
        schema = self._schema(at)
        if schema.name == "native":
            sel = self._selector(schema, node)
            xid = self._query(f"sum by (gpu, xid) ({native.GPU_XID_ERRORS}{sel})", at)
            when = self._query(f"max by (gpu) ({native.GPU_LAST_XID_TIME}{sel})", at)
            ecc_sel = self._selector(schema, node, 'type="uncorrected"')
            ecc = self._query(f"sum by (gpu) ({native.GPU_ECC_ERRORS}{ecc_sel})", at)
            return Counters(
                at=at,
                xid={
                    f"{s.labels.get('gpu', '')}:{s.labels.get('xid', '')}": s.value
                    for s in xid.vector
                },
                xid_time={s.labels.get("gpu", ""): s.value for s in when.vector},
                ecc={s.labels.get("gpu", ""): s.value for s in ecc.vector},
                ecc_metric=f'{native.GPU_ECC_ERRORS}{{type="uncorrected"}}',
            )
        sel = self._selector(schema, node)
        xid = self._query(f"max by (gpu) ({DCGM_XID}{sel})", at)
        ecc = self._query(f"sum by (gpu) ({DCGM_ECC}{sel})", at)
        return Counters(
            at=at,
            xid={s.labels.get("gpu", ""): s.value for s in xid.vector},
            xid_is_code=True,
            ecc={s.labels.get("gpu", ""): s.value for s in ecc.vector},
            ecc_metric=DCGM_ECC,
        )


def _gpu(labels: Mapping[str, str], schema: MetricSchema) -> str:
    return labels.get(schema.gpu_label, "")


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
