"""``telemetry.prom_detect``: the schema and the rollups found from the index's metric
names, where the engine lists them, and by counting series where it does not. Cost:
milliseconds."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import pytest

from factoryctl.telemetry import schema as native
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.console_rules import HEARTBEAT
from factoryctl.telemetry.metrics import DCGM, NATIVE, SchemaUndetected
from factoryctl.telemetry.prom_detect import (
    LOOKBACK,
    detect_console_rules,
    detect_rollups,
    detect_schema,
    metric_names,
)

T = 1_767_225_600.0


class Engine:
    """Lists ``names`` (None: answers 404, as a proxy passing queries only) and answers
    the counting queries with ``counts`` (metric name -> series)."""

    def __init__(self, names: list[str] | None, counts: dict[str, float]) -> None:
        self.names, self.counts = names, counts
        self.asked: list[str] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        if req.url.path == "/api/v1/label/__name__/values":
            self.asked.append(f"names {req.url.params['start']}..{req.url.params['end']}")
            if self.names is None:
                return httpx.Response(404, text="404 page not found")
            return httpx.Response(200, json={"status": "success", "data": self.names})
        q = parse_qs(req.content.decode())["query"][0]
        self.asked.append(q)
        if q.startswith("count by (__name__)"):
            result = [
                {"metric": {"__name__": n}, "value": [T, str(c)]} for n, c in self.counts.items()
            ]
        else:  # count(last_over_time(factoryctl_node_gpus[...])), or of the heartbeat
            n = self.counts.get(HEARTBEAT if HEARTBEAT in q else native.NODE_GPUS, 0)
            result = [{"metric": {}, "value": [T, str(n)]}] if n else []
        data = {"resultType": "vector", "result": result}
        return httpx.Response(200, json={"status": "success", "data": data})


def _client(engine: Engine) -> PromClient:
    return PromClient(PromConfig("http://prom:9090"), transport=httpx.MockTransport(engine))


def _rollups(engine: Engine) -> bool:
    client = _client(engine)
    return detect_rollups(client, T, 600.0, metric_names(client, T, 600.0))


def test_the_index_names_decide_without_counting_any_series() -> None:
    engine = Engine([native.GPU_UP, native.NODE_GPUS, "up"], {})
    assert detect_schema(_client(engine), T) is NATIVE
    assert _rollups(engine)
    # Only the names, over the lookback and over the inventory window: no query at all.
    assert engine.asked == [f"names {T - LOOKBACK:.3f}..{T:.3f}", f"names {T - 600:.3f}..{T:.3f}"]
    without = Engine([DCGM.marker, "up"], {native.NODE_GPUS: 12.0})
    assert not _rollups(without)
    assert without.asked == [f"names {T - 600:.3f}..{T:.3f}"]


def test_both_schemas_listed_are_told_apart_by_counting() -> None:
    # A site moving from dcgm-exporter to ours: both names in the index; which has
    # series now is what the count says.
    engine = Engine([native.GPU_UP, DCGM.marker], {DCGM.marker: 4.0})
    assert detect_schema(_client(engine), T).name == DCGM.name
    assert any(q.startswith("count by (__name__)") for q in engine.asked)


def test_no_gpu_metric_in_the_index_is_an_error_not_a_guess() -> None:
    engine = Engine(["up", "node_load1"], {})
    with pytest.raises(SchemaUndetected, match="no GPU metrics found"):
        detect_schema(_client(engine), T)


def test_names_in_a_shape_not_understood_are_not_taken_for_none() -> None:
    # A proxy answering the names with a query's shape: counted, not "no GPU metrics".
    engine = Engine([], {native.GPU_UP: 8.0})
    engine.names = {"resultType": "vector"}  # type: ignore[assignment]
    assert detect_schema(_client(engine), T) is NATIVE
    assert engine.asked[-1].startswith("count by (__name__)")


def test_an_engine_that_does_not_list_names_is_asked_to_count() -> None:
    engine = Engine(None, {native.GPU_UP: 8.0, native.NODE_GPUS: 1.0})
    assert detect_schema(_client(engine), T) is NATIVE
    assert _rollups(engine)
    assert [q.split(" ")[0] for q in engine.asked] == [
        "names",
        "count",
        "names",
        "count(last_over_time(factoryctl_node_gpus[600000ms]))",
    ]


def test_the_console_rules_are_found_by_their_heartbeats_name() -> None:
    listed = Engine([native.NODE_GPUS, HEARTBEAT], {})
    client = _client(listed)
    names = metric_names(client, T, 600.0)
    assert detect_console_rules(client, T, 600.0, names)
    assert detect_rollups(client, T, 600.0, names)
    assert listed.asked == [f"names {T - 600:.3f}..{T:.3f}"]  # one request for both
    assert not detect_console_rules(client, T, 600.0, frozenset({native.NODE_GPUS}))
    # No index: one count of the heartbeat's series.
    unlisted = Engine(None, {HEARTBEAT: 1.0})
    assert detect_console_rules(_client(unlisted), T, 600.0, None)
    assert unlisted.asked == [f"count(last_over_time({HEARTBEAT}[600000ms]))"]
    assert not detect_console_rules(_client(Engine(None, {})), T, 600.0, None)
