"""What a Prometheus holds, found out once per source: the GPU metric schema (and, for
dcgm-exporter, which label names the node), the scrape interval and how long a scraped
sample takes to become searchable."""

from __future__ import annotations

import itertools
import re
import statistics
from collections.abc import Mapping

from factoryctl.durations import parse_duration
from factoryctl.errors import FactoryctlError
from factoryctl.telemetry import console_rules
from factoryctl.telemetry import schema as native
from factoryctl.telemetry.client import PromClient, TelemetryError
from factoryctl.telemetry.metrics import (
    NATIVE,
    SCHEMAS,
    MetricSchema,
    choose,
    detection_query,
    node_label_of,
    node_name,
    scheduler_attribution_query,
)

GpuKey = tuple[str, int]
DEFAULT_INTERVAL = 15.0
SCHEDULER_LOOKBACK = "1d"


# Prometheus' default lookback: an instant query's samples are at most this old.
LOOKBACK = 300.0


def metric_names(client: PromClient, at: float, window: float) -> frozenset[str] | None:
    """The metric names the engine's index holds over the ``window`` seconds before ``at``;
    None where it does not serve them (a proxy that passes queries only).

    An index lookup, under 1 ms on both engines at 100,000 GPUs, where counting the
    series of a name reads every one of them (0.1-0.2 s for the 12,500 node rollups; more
    for the 100,000 series of a per-GPU marker), and every CLI run detects once. The
    index answers per block (Prometheus: 2 hours) or per day (VictoriaMetrics): a name
    listed may have no sample within the window. A name not listed has none."""
    try:
        return frozenset(client.label_values("__name__", start=at - window, end=at))
    except TelemetryError:
        return None


def detect_schema(client: PromClient, at: float, forced: str = "auto") -> MetricSchema:
    counts: dict[str, float] = {}
    if forced == "auto":
        names = metric_names(client, at, LOOKBACK)
        markers = [s.marker for s in SCHEMAS.values() if names is not None and s.marker in names]
        if names is not None and len(markers) <= 1:
            # One schema's marker in the index, or none: the index alone decides.
            counts = dict.fromkeys(markers, 1.0)
        else:  # both (a site moving from one exporter to the other), or no index: count
            res = client.query(detection_query(), at)
            counts = {s.labels.get("__name__", ""): s.value for s in res.vector}
    schema = choose(counts, forced)
    if schema is not NATIVE:
        # dcgm-exporter names the node Hostname, hostname, or not at all (instance).
        probe = client.query(f"topk(1, {schema.marker})", at)
        if probe.vector:
            schema = schema.with_node_label(node_label_of(probe.vector[0].labels))
        # A scheduler-exporter writing Slurm's allocation: the attribution history there.
        # Looked for over a day, so a site where no job ran for hours still counts.
        recorded = client.query(scheduler_attribution_query(SCHEDULER_LOOKBACK), at)
        if recorded.vector and recorded.vector[0].value > 0:
            schema = schema.with_scheduler_attribution()
    return schema


def detect_interval(client: PromClient, schema: MetricSchema, at: float) -> float:
    """Prometheus reports it per target; VictoriaMetrics 1.79 does not, so measure it."""
    found = [
        parse_duration(str(t["scrapeInterval"]), "scrape interval")
        for t in client.targets()
        if t.get("scrapeInterval")
    ]
    if found:
        return max(found)
    probe = client.query(f"topk(1, {schema.marker})", at)
    if probe.vector:
        labels = probe.vector[0].labels
        sel = ",".join(f'{k}="{v}"' for k, v in labels.items() if k != "__name__")
        raw = client.query(f"{schema.marker}{{{sel}}}[10m]", at)
        if raw.matrix and len(raw.matrix[0].points) >= 3:
            times = [t for t, _ in raw.matrix[0].points]
            return float(statistics.median(b - a for a, b in itertools.pairwise(times)))
    return DEFAULT_INTERVAL


def detect_rollups(
    client: PromClient, at: float, inventory_window: float, names: frozenset[str] | None
) -> bool:
    """Whether the engine holds the node rollups (issue 13): written by factoryctl-exporter
    or recorded by the shipped rules from dcgm-exporter's series. The index's metric
    names say (``metric_names``); an engine that does not list them is asked for one
    count over ~1 series per node, answered as one number. A name listed with no sample
    in the window (rollups that stopped within the index's block or day) reads as found:
    the views then read the rollups and show what they hold, as for a console that found
    them before they stopped. ``names``: ``metric_names`` over ``inventory_window`` (one
    index request serves this and ``detect_console_rules``)."""
    if names is not None:
        return native.NODE_GPUS in names
    ms = max(1, round(inventory_window * 1000))
    found = client.query(f"count(last_over_time({native.NODE_GPUS}[{ms}ms]))", at).scalar()
    return bool(found)


def detect_console_rules(
    client: PromClient, at: float, inventory_window: float, names: frozenset[str] | None
) -> bool:
    """Whether the engine holds the console's recording rules (``console_rules``): their
    heartbeat's name is in the index (``names``, as for ``detect_rollups``); an engine
    that does not list names is asked for a count of the heartbeat (one series). Rules
    listed but stopped are the poll's to tell, from the heartbeat's age."""
    if names is not None:
        return console_rules.HEARTBEAT in names
    ms = max(1, round(inventory_window * 1000))
    heartbeat = f"count(last_over_time({console_rules.HEARTBEAT}[{ms}ms]))"
    return bool(client.query(heartbeat, at).scalar())


NO_ROLLUPS = (
    "no GPU rollups (factoryctl_node_gpus) in the engine: reading every GPU's series, slow at"
    " scale; install dashboards/prometheus/rollups.rules.yml (Prometheus or vmalert) or"
    " upgrade factoryctl-exporter"
)


_FLUSH = re.compile(r'^flag\{name="inmemoryDataFlushInterval", value="([^"]+)"', re.M)


def detect_search_delay(client: PromClient) -> float:
    """Seconds between a scrape and its sample answering queries, as the engine says.

    VictoriaMetrics 1.112 and later buffer new samples for ``-inmemoryDataFlushInterval``
    (5 s by default) before a search sees them, and say so in their own /metrics as
    ``flag{name="inmemoryDataFlushInterval", value="5s"}``. Prometheus and older
    VictoriaMetrics answer with a sample as soon as it is scraped: 0. An engine that does
    not show its /metrics is taken at 0, as before."""
    text = client.self_metrics()
    m = _FLUSH.search(text or "")
    if not m:
        return 0.0
    try:
        return parse_duration(m.group(1), "inmemoryDataFlushInterval")
    except FactoryctlError:
        return 0.0


def gpu_key(schema: MetricSchema, labels: Mapping[str, str]) -> GpuKey | None:
    try:
        node = (
            labels[schema.node_label]
            if schema.node_label != "instance"
            else node_name(labels, schema.node_label)
        )
        return (node, int(labels[schema.gpu_label]))
    except (KeyError, ValueError):
        return None
