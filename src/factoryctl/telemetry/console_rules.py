"""The Overview's three factory-wide lists (the Nodes view's two), read from the console's
recording rules.

``dashboards/prometheus/console.rules.yml`` records, once per evaluation, the (node, job)
pairs holding idle GPUs and the nodes with a throttled or hot GPU, and a heartbeat. At
100,000 GPUs reading each list from the rollups made the engine read the whole rollup
(~15,000 pairs, 12,500 nodes) to return a few dozen series: the engine reads series at a
fixed cost each, however the query filters. Read recorded, each list costs what it holds.

The lists are candidates, read with plain selectors, never ``last_over_time``: Prometheus
writes a stale marker for a rule's vanished series, so a recovered node drops off at the
next evaluation, where a window would keep it (and miss a list evaluated less often than
the window). The poll checks them against its own reads (``prom_summary.read``):

* an idle pair counts only where the poll reads the pair as held now, capped at the GPUs
  it holds now (a finished job's recorded pair is ignored); its idle count is up to one
  evaluation old;
* a throttled or hot node only picks the nodes whose per-GPU series round 2 reads,
  filtered by value on the poll's own samples: a GPU is listed only if it is so now.

A heartbeat missing or older than ``MAX_AGE`` (rules unloaded, vmalert down) reads as
rules that stopped: the poll reads the rollups as without the rules and says so, since
empty lists from stopped rules would otherwise show "no problems".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from factoryctl.telemetry.metrics import node_name
from factoryctl.telemetry.poll_detail import PairKey
from factoryctl.telemetry.results import QueryResult

RULES_FILE = "dashboards/prometheus/console.rules.yml"
HEARTBEAT = "factoryctl:console_rules:timestamp_seconds"
IDLE_PAIRS = "node_job:factoryctl_job_gpus:idle"
THROTTLED_NODES = "node:factoryctl_node_gpus_throttled:nonzero"
HOT_NODES = "node:factoryctl_node_temperature_max_celsius:hot"
# Seconds past which the heartbeat reads as rules that stopped: a few evaluations at any
# usual interval (15 s to 1 min), well inside Prometheus' 5-minute lookback.
MAX_AGE = 120.0

# Round 1's queries, by result key: each recorded series as it stands at the poll's time.
QUERIES = {
    "rules:heartbeat": HEARTBEAT,
    "rules:idle": IDLE_PAIRS,
    "rules:throttled": THROTTLED_NODES,
    "rules:hot": HOT_NODES,
}


@dataclass
class Recorded:
    """What the rules recorded, as of their last evaluation (``age`` seconds before the
    poll; None: no heartbeat)."""

    age: float | None
    idle: dict[PairKey, float] = field(default_factory=dict)
    throttled: dict[str, float] = field(default_factory=dict)
    hot: dict[str, float] = field(default_factory=dict)

    @property
    def fresh(self) -> bool:
        return self.age is not None and self.age <= MAX_AGE

    def warning(self) -> str:
        """Why the poll read the rollups instead (only where not ``fresh``)."""
        when = "not evaluated lately (no heartbeat)"
        if self.age is not None:
            when = f"last evaluated {self.age:.0f} s ago"
        return f"console rules ({RULES_FILE}) {when}: reading the rollups"

    def idle_held(self, held: Mapping[PairKey, float]) -> dict[PairKey, float]:
        """The recorded idle pairs the poll reads as held now, capped at the GPUs held:
        ``poll_detail.idle_held``'s answer, up to one evaluation old."""
        out = {}
        for pair, n in self.idle.items():
            now = held.get(pair)
            if now is not None and now > 0 and n > 0:
                out[pair] = min(n, now)
        return out


def recorded(results: Mapping[str, QueryResult], t: float) -> Recorded:
    """The rules' lists from round 1's ``results`` (``QUERIES``' keys) at poll time ``t``."""
    beat = results["rules:heartbeat"].vector
    # Several heartbeats (two rule engines, or external labels): the latest counts.
    age = max(0.0, t - max(s.value for s in beat)) if beat else None
    # Not asked for by the Nodes view's poll, which reads every node's hottest GPU.
    hot = results.get("rules:hot", QueryResult("vector")).vector
    return Recorded(
        age=age,
        idle={
            (s.labels.get("node", ""), s.labels.get("job_id", "")): s.value
            for s in results["rules:idle"].vector
        },
        throttled={node_name(s.labels, "node"): s.value for s in results["rules:throttled"].vector},
        hot={node_name(s.labels, "node"): s.value for s in hot},
    )
