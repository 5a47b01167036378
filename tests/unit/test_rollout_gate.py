"""The rollout's telemetry gate: the counter comparison, the bounded wait for GPUs, the
runner's use of it (baseline journaled at the drain, failures named by step), and the
Prometheus reader on canned replies (httpx.MockTransport). ~1 s in all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from factoryctl.actions.rollout_gate import Counters, TelemetryGate, new_errors
from factoryctl.actions.rollout_journal import Store, replay
from factoryctl.actions.rollout_phases import DONE, FAILED
from factoryctl.actions.rollout_plan import build_rollout_plan, create
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.gpu_health import PromGpuTelemetry
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions
from tests.unit.test_rollout import ENV, RADIUS, FakeSlurm, Harness, _spec

# -- the comparison ----------------------------------------------------------------------


def test_native_counters_report_new_xids_per_gpu_and_code() -> None:
    base = Counters(at=100.0, xid={"0:79": 1.0}, ecc={"0": 2.0, "1": 0.0})
    now = Counters(at=200.0, xid={"0:79": 1.0, "3:48": 2.0}, ecc={"0": 2.0, "1": 0.0})
    xids, ecc, unchecked = new_errors(base, now)
    assert xids == ["GPU 3: XID 48 x2"] and ecc == [] and unchecked == []


def test_a_reset_counter_counts_what_it_holds_now_and_the_last_xid_time_catches_the_rest() -> None:
    # A reboot restarted the exporter: the XID counter fell from 5 to 1 (1 is new), and
    # GPU 2's counter restarted at the same value as before, but its last XID is recent.
    base = Counters(at=100.0, xid={"0:13": 5.0, "2:31": 1.0}, xid_time={"2": 50.0})
    now = Counters(at=200.0, xid={"0:13": 1.0, "2:31": 1.0}, xid_time={"2": 150.0})
    xids, _, _ = new_errors(base, now)
    assert xids == ["GPU 0: XID 13 x1", "GPU 2: an XID at 150 (counters reset since)"]


def test_uncorrectable_ecc_growth_and_an_unexported_ecc_is_unchecked_not_clean() -> None:
    grown = new_errors(Counters(at=1.0, ecc={"1": 4.0}), Counters(at=2.0, ecc={"1": 6.0}))
    assert grown[1] == ["GPU 1: 2 new uncorrectable ECC error(s)"]
    none = new_errors(Counters(at=1.0), Counters(at=2.0, ecc_metric="DCGM_FI_DEV_ECC_DBE"))
    assert none == ([], [], ["ECC unchecked: no DCGM_FI_DEV_ECC_DBE series for this node"])


def test_dcgm_last_xid_gauge_is_a_code_not_a_count() -> None:
    base = Counters(at=1.0, xid={"0": 79.0, "1": 0.0}, xid_is_code=True)
    same = Counters(at=2.0, xid={"0": 79.0, "1": 0.0}, xid_is_code=True)
    assert new_errors(base, same)[0] == []
    changed = Counters(at=2.0, xid={"0": 79.0, "1": 94.0}, xid_is_code=True)
    assert new_errors(base, changed)[0] == ["GPU 1 last XID 94 (was 0)"]


# -- the wait -----------------------------------------------------------------------------


class FakeTelemetry:
    """GPUs reporting and counters per node, as a test sets them; ``reads`` logs the query
    times the gate used."""

    def __init__(self, gpus: int = 8) -> None:
        self.up: dict[str, set[str]] = {}
        self.gpus = gpus
        self.xid_after_drain: set[str] = set()  # these get an XID 79 on GPU 5 after it
        self.drained_at: dict[str, float] = {}
        self.broken: str | None = None
        self.reads: list[tuple[str, str, float]] = []
        self.since: list[float] = []

    def describe(self) -> str:
        return "fake telemetry"

    def reporting(self, node: str, at: float, since: float) -> frozenset[str]:
        self.since.append(since)
        if self.broken:
            raise FactoryctlError(self.broken)
        return frozenset(self.up.get(node, {str(i) for i in range(self.gpus)}))

    def counters(self, node: str, at: float) -> Counters:
        if self.broken:
            raise FactoryctlError(self.broken)
        self.reads.append(("counters", node, at))
        first = self.drained_at.setdefault(node, at)  # the first read is the baseline's
        new = node in self.xid_after_drain and at > first
        return Counters(at=at, xid={"5:79": 1.0 if new else 0.0}, ecc={"0": 0.0})


def test_gate_waits_for_gpus_then_fails_naming_how_many_report() -> None:
    tel = FakeTelemetry()
    tel.up["n01"] = {"0", "1", "2"}
    gate = TelemetryGate(tel, wait=60.0)
    args: dict[str, Any] = {
        "expected_gpus": 8,
        "started": 1000.0,
        "fresh_after": 0.0,
        "baseline": None,
        "work_start": 900.0,
    }
    assert gate.evaluate("n01", now=1030.0, **args).pending
    failed = gate.evaluate("n01", now=1061.0, **args)
    assert failed.step == "gpus" and "3 of the 8 GPU(s)" in failed.note
    tel.up["n01"] = {str(i) for i in range(8)}
    passed = gate.evaluate("n01", now=1061.0, **args)
    assert passed.passed and "8 GPU(s) reporting" in passed.note
    assert ("counters", "n01", 900.0) in tel.reads  # the baseline asked at the work's start
    # Only samples scraped after the gate began count (they follow the check's end), or
    # after the reboot if that came later.
    assert set(tel.since) == {1000.0}
    gate.evaluate("n01", now=1061.0, **{**args, "fresh_after": 1010.0})
    assert tel.since[-1] == 1010.0


def test_unreadable_telemetry_waits_then_fails_never_passes() -> None:
    tel = FakeTelemetry()
    tel.broken = "cannot reach Prometheus at http://prom:9090: Connection refused"
    gate = TelemetryGate(tel, wait=10.0)
    args: dict[str, Any] = {
        "expected_gpus": 8,
        "started": 0.0,
        "fresh_after": 0.0,
        "baseline": None,
        "work_start": 0.0,
    }
    assert gate.evaluate("n01", now=5.0, **args).pending
    late = gate.evaluate("n01", now=11.0, **args)
    assert late.step == "gpus" and "Connection refused" in late.note and not late.passed


# -- the runner ---------------------------------------------------------------------------


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(FakeSlurm(), Store(tmp_path / "rollouts"), tmp_path)


def _start(h: Harness, tel: FakeTelemetry, **kw: Any) -> tuple[ExitStatus, Any]:
    spec = _spec(telemetry=tel.describe(), gpu_wait=30.0, **kw)
    plan = build_rollout_plan(spec, h.slurm, RADIUS, ENV, "c0ffee01", {})
    assert "telemetry gate" in plan["steps"] and plan["telemetry_gate"]["on"]
    campaign = create(h.store, plan, ["test"], h.slurm.now)
    runner = h.runner(campaign)
    runner.gate = TelemetryGate(tel, 30.0)
    return runner.run(), runner


def test_campaign_fails_a_node_with_a_new_xid_and_one_whose_gpus_never_report(
    h: Harness,
) -> None:
    tel = FakeTelemetry()
    # n03 gets an XID 79 on GPU 5 during its reboot; n06's exporter shows 7 GPUs.
    tel.xid_after_drain.add("n03")
    tel.up["n06"] = {str(i) for i in range(7)}
    status, runner = _start(h, tel, max_unavailable="3", reboot=True)
    assert status is ExitStatus.PARTIAL
    c = runner.campaign
    assert c.nodes["n03"].phase == FAILED and c.nodes["n03"].step == "xid"
    assert "GPU 5: XID 79 x1" in c.nodes["n03"].note
    assert c.nodes["n06"].step == "gpus" and "7 of the 8" in c.nodes["n06"].note
    assert h.slurm.n["n03"].reason == "factoryctl rollout c0ffee01: xid failed: driver 550 (erin)"
    assert h.slurm.n["n06"].reason.startswith("factoryctl rollout c0ffee01: gpus failed: ")
    assert [n for n, r in c.nodes.items() if r.phase == DONE] == [
        "n01", "n02", "n04", "n05", "n07", "n08"
    ]  # fmt: skip
    passed = [e for e in h.events if e.get("phase") == "gate-passed"]
    assert len(passed) == 6 and "no new XID or uncorrectable ECC" in passed[0]["note"]
    # The baseline is journaled at the drain (its instant = the drained record's time).
    records = h.store.journal("c0ffee01").records()
    drained = {r["node"]: r["time"] for r in records if r.get("phase") == "drained"}
    baselines = {r["node"]: r["counters"] for r in records if r["event"] == "baseline"}
    assert set(baselines) == set(drained)
    assert all(baselines[n]["at"] == drained[n] for n in drained)


def test_a_resumed_campaign_compares_with_the_journaled_baseline(h: Harness) -> None:
    class Always(FakeTelemetry):
        """A second reader on which the XID counter reads 1 at every instant."""

        def counters(self, node: str, at: float) -> Counters:
            self.reads.append(("counters", node, at))
            return Counters(at=at, xid={"5:79": 1.0}, ecc={"0": 0.0})

    first = FakeTelemetry()
    first.up["n01"] = set()  # no GPU reports yet: the node waits in the gate
    plan = build_rollout_plan(
        _spec(hostlist="n01", telemetry="fake", gpu_wait=30.0), h.slurm, RADIUS, ENV, "c0ffee01", {}
    )
    runner = h.runner(create(h.store, plan, ["test"], h.slurm.now))
    runner.gate = TelemetryGate(first, 30.0)
    ticks = runner.sleep

    def cut(seconds: float) -> None:  # the runner is killed while the node is in the gate
        if runner.campaign.nodes["n01"].phase == "gate":
            raise KeyboardInterrupt
        ticks(seconds)

    runner.sleep = cut
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    # Resumed with another reader: against its own reading at the drain's instant the
    # counter did not move (1 == 1); against the journaled baseline (0) it did.
    h.slurm.tick(5.0)
    again = h.runner(replay(h.store.journal("c0ffee01").records()))
    again.gate = TelemetryGate(Always(), 30.0)
    assert again.run() is ExitStatus.PARTIAL
    rec = again.campaign.nodes["n01"]
    assert (rec.phase, rec.step) == (FAILED, "xid") and "XID 79 x1" in rec.note
    # One read, now; none at the drain's instant (the journal had it).
    assert again.gate.telemetry.reads == [("counters", "n01", rec.work_start + 5.0)]  # type: ignore[attr-defined]


def test_plan_says_the_gate_is_off_and_why(h: Harness) -> None:
    plan = build_rollout_plan(_spec(hostlist="n01"), h.slurm, RADIUS, ENV, "c0ffee01", {})
    assert plan["telemetry_gate"] == {"on": False, "why": "no Prometheus configured"}
    assert "telemetry gate" not in plan["steps"]


# -- the Prometheus reader ------------------------------------------------------------------


def _vector(*items: tuple[dict[str, str], float]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [1.0, str(v)]} for m, v in items],
        },
    }


def _prom(answers: dict[str, dict[str, Any]], seen: list[tuple[str, str]]) -> PromGpuTelemetry:
    def handler(request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        query = form.get("query", "")
        seen.append((query, form.get("time", "")))
        for needle, body in answers.items():
            if needle in query:
                return httpx.Response(200, json=body)
        return httpx.Response(200, json=_vector())

    client = PromClient(PromConfig("http://prom:9090"), transport=httpx.MockTransport(handler))
    opts = SourceOptions(schema="native", scrape_interval=1.0, search_delay=0.0)
    return PromGpuTelemetry(PrometheusSource(client, None, opts))


def test_prometheus_reader_native_counts_fresh_up_gpus_and_asks_at_the_given_time() -> None:
    seen: list[tuple[str, str]] = []
    gpu = {"node": "gpu01", "gpu": "0"}
    tel = _prom(
        {
            "timestamp(factoryctl_gpu_up": _vector(
                (gpu, 500.0), ({**gpu, "gpu": "1"}, 500.0), ({**gpu, "gpu": "2"}, 90.0)
            ),
            'factoryctl_gpu_up{node="gpu01"}': _vector(
                (gpu, 1.0), ({**gpu, "gpu": "1"}, 0.0), ({**gpu, "gpu": "2"}, 1.0)
            ),
            "factoryctl_gpu_xid_errors_total": _vector(({"gpu": "1", "xid": "79"}, 2.0)),
            "factoryctl_gpu_ecc_errors_total": _vector(({"gpu": "0"}, 3.0)),
        },
        seen,
    )
    # GPU 1 is lost (up 0), GPU 2's newest sample predates the reboot: only GPU 0 counts.
    assert tel.reporting("gpu01", 510.0, since=100.0) == frozenset({"0"})
    counters = tel.counters("gpu01", 400.0)
    assert counters.xid == {"1:79": 2.0} and counters.ecc == {"0": 3.0}
    assert all(t == "400.000" for q, t in seen if "errors_total" in q)
    assert any('type="uncorrected"' in q for q, _ in seen)


def test_prometheus_reader_dcgm_reads_the_last_xid_code_and_the_volatile_dbe_count() -> None:
    seen: list[tuple[str, str]] = []
    tel = _prom(
        {
            "DCGM_FI_DEV_XID_ERRORS": _vector(({"gpu": "0"}, 79.0)),
            "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": _vector(({"gpu": "0"}, 1.0)),
            "timestamp(DCGM_FI_DEV_GPU_UTIL": _vector(({"gpu": "0", "Hostname": "gpu01"}, 5.0)),
        },
        seen,
    )
    tel.source.options = SourceOptions(schema="dcgm", scrape_interval=1.0, search_delay=0.0)
    counters = tel.counters("gpu01", 10.0)
    assert counters.xid_is_code and counters.xid == {"0": 79.0} and counters.ecc == {"0": 1.0}
    assert tel.reporting("gpu01", 10.0, since=1.0) == frozenset({"0"})
    # (the schema probe, topk(1, ...), names no node)
    assert all('Hostname="gpu01"' in q for q, _ in seen if "DCGM" in q and "topk" not in q)


def test_journal_baseline_record_round_trips() -> None:
    c = Counters(at=5.0, xid={"0:79": 1.0}, xid_time={"0": 4.0}, ecc={"0": 2.0}, ecc_metric="m")
    assert Counters.from_record(json.loads(json.dumps(c.to_record()))) == c
