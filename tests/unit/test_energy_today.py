"""Factory energy since local midnight: the demo counts it step by step, Prometheus reads
each GPU counter now and at midnight."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import pytest

from factoryctl.energy import DayEnergy, local_midnight
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.demo import DemoSource
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions
from tests.conftest import FROZEN_NOW

MIDNIGHT = 1_767_225_600.0  # 2026-01-01T00:00:00Z (tests run in UTC)


def test_local_midnight_in_utc() -> None:
    assert local_midnight(FROZEN_NOW) == MIDNIGHT
    assert local_midnight(MIDNIGHT) == MIDNIGHT
    assert local_midnight(MIDNIGHT - 1) == MIDNIGHT - 86400


def test_day_energy_sums_gains_counts_a_reset_and_restarts_at_midnight() -> None:
    day = DayEnergy()
    day.observe(MIDNIGHT + 3600, [100.0, 200.0])
    assert (day.joules, day.since) == (0.0, MIDNIGHT + 3600)  # nothing known before
    day.observe(MIDNIGHT + 3660, [160.0, 230.0])
    assert day.joules == 90.0
    day.observe(MIDNIGHT + 3720, [220.0, 10.0])  # GPU 1's counter reset: it gained 10
    assert day.joules == 160.0
    day.observe(MIDNIGHT + 86400 + 30, [250.0, 20.0])  # the next day
    assert day.since == MIDNIGHT + 86400
    assert day.joules == 40.0  # the step that crossed midnight goes to the new day


def test_demo_energy_today_is_every_gpu_counter_since_the_factory_started() -> None:
    src = DemoSource.create(nodes=8, seed=5, now=FROZEN_NOW, warmup=3 * 3600)
    snap = src.snapshot()
    # Counters start at 0 and, with no faults, never reset: today = their sum.
    assert snap.energy_today_joules == pytest.approx(sum(src.sim.energy), rel=1e-12)
    assert snap.energy_today_since == FROZEN_NOW - 3 * 3600  # after midnight: data begins
    assert snap.energy_today_joules > 8 * 8 * 50 * 3 * 3600  # > 50 W per GPU for 3 h


def test_prometheus_energy_today_reads_counters_now_and_at_midnight() -> None:
    seen: list[str] = []

    def engine(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/metrics":  # the engine's own metrics: not served here
            return httpx.Response(404)
        q = parse_qs(req.content.decode())["query"][0]
        seen.append(q)
        if q.startswith("count by (__name__)"):
            result = [{"metric": {"__name__": "factoryctl_gpu_up"}, "value": [FROZEN_NOW, "1"]}]
        elif q.startswith("sum(clamp_min("):
            result = [{"metric": {}, "value": [FROZEN_NOW, "7200000"]}]
        else:
            result = []
        data = {"resultType": "vector", "result": result}
        return httpx.Response(200, json={"status": "success", "data": data})

    client = PromClient(PromConfig("http://prom:9090"), transport=httpx.MockTransport(engine))
    src = PrometheusSource(client, None, SourceOptions(schema="native", scrape_interval=15.0))
    snap = src.snapshot(at=FROZEN_NOW)
    assert snap.energy_today_joules == 7_200_000.0
    assert snap.energy_today_since == MIDNIGHT
    (query,) = [q for q in seen if q.startswith("sum(clamp_min(")]
    assert "factoryctl_gpu_energy_joules_total[30000ms] offset 14400000ms" in query
    # The CLI's views fetch only what they show: no day total for `factoryctl nodes`.
    seen.clear()
    src.snapshot(at=FROZEN_NOW, view="nodes")
    assert not [q for q in seen if "offset" in q]
