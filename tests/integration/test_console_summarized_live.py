"""The console's summarized poll on real engines (Prometheus and VictoriaMetrics of every
generation the lab runs): its sparkline samples and heat-map layers carry the same figures
as the per-GPU poll of the same instant, from the native exporters' rollups.

Reuses the session's telemetry lab (2 nodes x 4 GPUs, scraped every second); two polls
per engine at one instant, a few tens of milliseconds each.
"""

from __future__ import annotations

import time

import pytest

from factoryctl.lab.procs import wait_until
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.poll_detail import LEAN
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions
from factoryctl.tui.frame import build_frame, with_rows
from factoryctl.tui.history import History

pytestmark = pytest.mark.integration

# The instant polled, seconds ago: past VictoriaMetrics' 5-s flush (1.112 and later) and a
# scrape, so the two reads compared see the same samples. At a recent instant a flush
# between them gave the second the newer scrape (power 3 % apart, once in CI on 1.145).
LAG = 8.0


def test_summarized_poll_feeds_sparklines_and_layers(lab, engine_url: str) -> None:
    def source() -> PrometheusSource:
        options = SourceOptions(schema="native")
        return PrometheusSource(PromClient(PromConfig(engine_url, timeout=10)), None, options)

    # Run first, this test may find an engine that has not stored a scrape yet; a source
    # probes for the rollups once, so each try asks a new one.
    wait_until(
        lambda: len(source().console_snapshot(at=time.time() - LAG).node_summaries) == 2,
        30 + LAG,
        "the engine to hold both nodes' rollups",
        interval=0.25,
    )
    src = source()
    t = time.time() - LAG
    small, full = src.console_snapshot(at=t), src.snapshot(at=t)
    assert small.node_summaries, "the lab's engines hold the exporters' rollups"
    a, b = build_frame(full, History(), t), build_frame(small, History(), t)
    names = [n.name for n in full.nodes]
    assert names and [n.name for n in small.nodes] == names
    # Sparkline samples: the factory's and each node's, the same from rollups.
    for metric in ("utilization", "power"):
        want = a.history.factory_series(metric)
        assert want[0] is not None
        assert b.history.factory_series(metric) == pytest.approx(want, rel=1e-5)
        for name in names:
            want = a.history.node_series(name, metric)
            assert want and want[0] is not None
            assert b.history.node_series(name, metric) == pytest.approx(want, rel=1e-5)
    # Utilization layer: each node's mean. Power layer: the rollups carry no power limit,
    # so W per up GPU scaled to the top node, and a note that says so; never blank.
    per_gpu_w = []
    for name, util in zip(names, b.gpu_utilization, strict=True):
        up = [g for g in full.gpus_of_node(name) if g.up]
        utils = [g.utilization for g in up if g.utilization is not None]
        assert util == pytest.approx(sum(utils) / len(utils), rel=1e-5)
        per_gpu_w.append(sum(g.power_watts or 0.0 for g in up) / len(up))
    assert "no power limit in the rollups" in b.power_note
    top = max(per_gpu_w)
    assert b.gpu_power == pytest.approx([w / top for w in per_gpu_w], rel=1e-5)
    # The Overview's lean poll (poll_detail.LEAN) of the same instant: the hottest GPUs
    # and throttled counts filtered on the engine, the idle spells by a job-ID matcher
    # each engine must accept: the same Overview, no XID counts or job figures read.
    lean = src.console_snapshot(at=t, detail=LEAN)
    c = build_frame(lean, History(), t)
    assert c.summary.occupancy == b.summary.occupancy
    assert c.summary.problems == b.summary.problems
    assert {"job_utilization", "job_power", "xid_total"} <= lean.unavailable
    # The Overview's frame builds no table rows, and gives those rows when asked: the
    # same Overview, the same rows as the frame built with them.
    d = build_frame(lean, History(), t, rows=False)
    assert (d.nodes, d.jobs, d.summary) == ((), (), c.summary)
    assert (with_rows(d).nodes, with_rows(d).jobs) == (c.nodes, c.jobs)
    assert [r.key for r in c.nodes] == names
