"""PrometheusSource on recorded dcgm-exporter / factoryctl replies (httpx.MockTransport)."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import pytest

from factoryctl.errors import ExitStatus
from factoryctl.model import Allocation, Job
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.metrics import DCGM, NATIVE, SchemaUndetected, choose
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions

T = 1_767_225_600.0


def dcgm_labels(host: str, gpu: int, hostname_label: str = "Hostname") -> dict[str, str]:
    return {
        "gpu": str(gpu),
        "UUID": f"GPU-{host}-{gpu}",
        "modelName": "NVIDIA H100 80GB HBM3",
        "pci_bus_id": f"00000000:{gpu + 0x18:02X}:00.0",
        hostname_label: host,
        "instance": f"{host}:9400",
        "job": "dcgm",
    }


def vector(items: list[tuple[dict[str, str], float]]) -> dict[str, object]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [T, str(v)]} for m, v in items],
        },
    }


class FakeDcgmProm:
    """Answers the queries a snapshot makes, for two dcgm nodes with 2 GPUs each."""

    def __init__(self, hostname_label: str = "Hostname") -> None:
        self.gpus = [(h, g) for h in ("dgx01", "dgx02") for g in range(2)]
        self.label = hostname_label
        self.queries: list[str] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        # The engine's own metrics and its index's names: not served here (a proxy).
        if req.url.path == "/metrics" or req.url.path.startswith("/api/v1/label/"):
            return httpx.Response(404)
        if req.url.path == "/api/v1/targets":
            return httpx.Response(
                200,
                json={"status": "success", "data": {"activeTargets": [{"scrapeInterval": "15s"}]}},
            )
        form = parse_qs(req.content.decode())
        q = form["query"][0]
        self.queries.append(q)
        assert form["time"] == [f"{T:.3f}"]
        lab = [dcgm_labels(h, g, self.label) for h, g in self.gpus]
        if q.startswith("count by (__name__)"):
            return httpx.Response(200, json=vector([({"__name__": "DCGM_FI_DEV_GPU_UTIL"}, 4)]))
        if q.startswith("topk(1,"):
            return httpx.Response(200, json=vector([(lab[0], 50)]))
        if q.startswith("last_over_time(DCGM_FI_DEV_GPU_UTIL"):
            # dgx02 GPU 1 has not reported within 2 intervals: only in the inventory.
            window_30s = "[30000ms]" in q
            return httpx.Response(
                200, json=vector([(m, 50) for m in (lab[:3] if window_30s else lab)])
            )
        if q.startswith('{__name__=~"'):
            values = {
                "DCGM_FI_DEV_GPU_UTIL": 87,
                "DCGM_FI_DEV_POWER_USAGE": 612.5,
                "DCGM_FI_DEV_FB_USED": 40960,
                "DCGM_FI_DEV_FB_FREE": 40960,
                "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": 123456789,
                "DCGM_FI_DEV_GPU_TEMP": 64,
                "DCGM_FI_DEV_SM_CLOCK": 1980,
                "DCGM_FI_DEV_XID_ERRORS": 0,
            }
            items = []
            for i, m in enumerate(lab):
                for name, v in values.items():
                    if name == "DCGM_FI_DEV_XID_ERRORS" and i == 1:
                        v = 79
                    items.append(({**m, "__name__": name}, v))
            return httpx.Response(200, json=vector(items))
        return httpx.Response(200, json=vector([]))


def make_source(handler, schema: str = "auto") -> PrometheusSource:
    client = PromClient(PromConfig("http://prom:9090"), transport=httpx.MockTransport(handler))
    return PrometheusSource(client, None, SourceOptions(schema=schema), clock=lambda: T)


@pytest.mark.parametrize("label", ["Hostname", "hostname"])
def test_dcgm_snapshot_converts_units_and_marks_what_it_cannot_say(label: str) -> None:
    fake = FakeDcgmProm(label)
    snap = make_source(fake).snapshot()
    assert snap.source == "prometheus:dcgm"
    assert [g.key for g in snap.gpus] == [("dgx01", 0), ("dgx01", 1), ("dgx02", 0), ("dgx02", 1)]
    g = snap.gpu("dgx01", 0)
    assert g is not None and g.up
    assert g.utilization == pytest.approx(0.87)
    assert g.memory_used_bytes == 40960 * 2**20
    assert g.memory_total_bytes == 2 * 40960 * 2**20
    assert g.energy_joules == pytest.approx(123456.789)
    assert g.sm_clock_hz == pytest.approx(1.98e9)
    assert g.uuid == "GPU-dgx01-0" and g.model == "NVIDIA H100 80GB HBM3"
    assert g.xid_total is None and "xid_total" in snap.unavailable
    assert snap.gpu("dgx01", 1).last_xid == 79  # the gauge holds the last XID code
    lost = snap.gpu("dgx02", 1)
    assert lost is not None and not lost.up and lost.power_watts is None
    assert "memory_utilization" in snap.unavailable  # not in the default dcgm counters
    assert "power_limit_watts" in snap.unavailable
    # Aggregation stays on the server: one selector for all gauges, no per-GPU queries
    # (two more ask for dcgm-exporter's job mapping, which this site does not have, and
    # one, at detection, whether a scheduler-exporter records Slurm's allocation).
    assert len(fake.queries) <= 9
    # Without a scheduler or a job mapping, who holds a GPU is unknown: never "idle".
    assert {"state", "gpus_allocated", "jobs"} <= snap.unavailable
    assert {n.state.value for n in snap.nodes} == {"unknown"}


def test_forced_schema_skips_detection() -> None:
    fake = FakeDcgmProm()
    make_source(fake, schema="dcgm").snapshot()
    assert not any(q.startswith("count by (__name__)") for q in fake.queries)


def test_no_gpu_metrics_is_schema_undetected() -> None:
    def empty(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/metrics":  # the engine's own metrics: not served here
            return httpx.Response(404)
        return httpx.Response(200, json=vector([]))

    with pytest.raises(SchemaUndetected) as err:
        make_source(empty).snapshot()
    assert err.value.status is ExitStatus.SCHEMA_UNDETECTED
    assert "--schema" in err.value.message


def test_choose_prefers_native_and_rejects_unknown() -> None:
    assert choose({"factoryctl_gpu_up": 8, "DCGM_FI_DEV_GPU_UTIL": 8}) is NATIVE
    assert choose({"DCGM_FI_DEV_GPU_UTIL": 8}) is DCGM
    assert choose({}, "dcgm") is DCGM
    with pytest.raises(SchemaUndetected, match="unknown metric schema"):
        choose({}, "nvitop")


class BrokenScheduler:
    def __init__(self, status: ExitStatus) -> None:
        self.status = status

    def nodes(self):
        from factoryctl.errors import FactoryctlError

        raise FactoryctlError("sinfo --json: cannot contact slurmctld", self.status)

    def jobs(self):
        return []


@pytest.mark.parametrize("status", [ExitStatus.SCHEDULER_UNREACHABLE, ExitStatus.SCHEDULER_ERROR])
def test_failing_scheduler_read_degrades_to_telemetry_with_a_warning(status) -> None:
    client = PromClient(
        PromConfig("http://prom:9090"), transport=httpx.MockTransport(FakeDcgmProm())
    )
    src = PrometheusSource(client, BrokenScheduler(status), SourceOptions(), clock=lambda: T)
    snap = src.snapshot()
    assert len(snap.gpus) == 4
    what = {
        ExitStatus.SCHEDULER_UNREACHABLE: "scheduler unreachable",
        ExitStatus.SCHEDULER_ERROR: "scheduler could not be read",
    }[status]
    assert any(what in w and "slurmctld" in w for w in snap.warnings), snap.warnings
    assert snap.scheduler_error.startswith(what) and "slurmctld" in snap.scheduler_error


def test_usage_errors_from_the_scheduler_still_raise() -> None:
    client = PromClient(
        PromConfig("http://prom:9090"), transport=httpx.MockTransport(FakeDcgmProm())
    )
    src = PrometheusSource(
        client, BrokenScheduler(ExitStatus.USAGE), SourceOptions(), clock=lambda: T
    )
    with pytest.raises(Exception, match="slurmctld"):
        src.snapshot()


def test_job_counter_energy_over_a_window_starts_at_since() -> None:
    """A window cutting through a job counts its counter's increase over exactly
    (since, until]: read 2 scrape intervals early, 10 minutes of a job gained 5 %."""
    started = T - 3600.0  # the job's counter grows 10 J/s from here
    seen: list[tuple[str, float]] = []

    def prom(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/metrics":  # the engine's own metrics: not served here
            return httpx.Response(404)
        form = parse_qs(req.content.decode())
        q, at = form["query"][0], float(form["time"][0])
        seen.append((q, at))
        if "(resets(" in q:  # no counter reset
            return httpx.Response(200, json=vector([]))
        return httpx.Response(200, json=vector([({"job_id": "7"}, 10.0 * (at - started))]))

    src = PrometheusSource(
        PromClient(PromConfig("http://prom:9090"), transport=httpx.MockTransport(prom)),
        None,
        SourceOptions(schema="native", scrape_interval=15.0),
        clock=lambda: T,
    )
    job = Job("7", "ada", start_time=started, allocations=(Allocation("n1", (0, 1)),))
    energy = src.job_energy([job], now=T, since=T - 600.0, until=T)["7"]
    assert energy.method == "job-counter"
    assert energy.joules == pytest.approx(6000.0)
    base = [at for q, at in seen if q.startswith("sum by (job_id) (last_over_time(")]
    assert base == [pytest.approx(T - 600.0)]


@pytest.mark.parametrize(
    ("metrics", "window"),
    [
        # VictoriaMetrics 1.112+ (recorded from Debian 13's 1.112.0): 5 s to searchable.
        ('flag{name="inmemoryDataFlushInterval", value="5s", is_set="false"} 1\n', 35.0),
        # VictoriaMetrics 1.79 and Prometheus: no such flag, the window stays 2 scrapes.
        ('flag{name="search.latencyOffset", value="30s", is_set="false"} 1\n', 30.0),
        (None, 30.0),  # /metrics not served (a proxy): as before
    ],
)
def test_freshness_window_adds_the_engines_own_search_delay(
    metrics: str | None, window: float
) -> None:
    def engine(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/metrics":
            return httpx.Response(200, text=metrics) if metrics else httpx.Response(404)
        raise AssertionError(f"unexpected request {req.url.path}")

    client = PromClient(PromConfig("http://vm:8428"), transport=httpx.MockTransport(engine))
    src = PrometheusSource(client, None, SourceOptions(schema="native", scrape_interval=15.0))
    assert src.window(0.0) == window
    assert src.window(1.0) == window  # asked once
    told = PrometheusSource(
        client, None, SourceOptions(schema="native", scrape_interval=15.0, search_delay=1.0)
    )
    assert told.window(0.0) == 31.0  # [prometheus] search_delay wins, nothing asked


class SlurmAttributedDcgmProm(FakeDcgmProm):
    """The same dcgm site, with a scheduler-exporter recording Slurm's allocation: job 7
    (ada, account ml) holds dgx01's GPU 1, under the exporter's own ``node`` label
    (``held=False``: no job runs); ``unknown`` jobs hold GPUs Slurm names no index of."""

    def __init__(self, held: bool = True, unknown: int = 0) -> None:
        super().__init__()
        self.held, self.unknown = held, unknown

    def __call__(self, req: httpx.Request) -> httpx.Response:
        q = parse_qs(req.content.decode()).get("query", [""])[0]
        gauge = "(last_over_time(factoryctl_slurm_jobs_gpu_indices_unknown"
        if q.startswith(("count" + gauge, "sum" + gauge)):  # one series; its value
            self.queries.append(q)
            value = 1 if q.startswith("count") else self.unknown
            return httpx.Response(200, json=vector([({}, value)]))
        if q.startswith("group by (job_id, node, gpu, user)"):
            self.queries.append(q)
            held = {"job_id": "7", "node": "dgx01", "gpu": "1", "user": "ada"}
            return httpx.Response(200, json=vector([(held, 1)] if self.held else []))
        return super().__call__(req)


def test_dcgm_site_with_a_scheduler_exporter_attributes_from_it() -> None:
    fake = SlurmAttributedDcgmProm()
    src = make_source(fake, schema="dcgm")  # forced: the attribution is still looked for
    snap = src.snapshot()
    schema = src.schema(T)
    assert schema.attribution == "factoryctl_slurm_gpu_job_info"
    assert schema.attribution_node == "node" and schema.node_label == "Hostname"
    assert snap.gpu("dgx01", 1).job_ids == ("7",)
    assert snap.gpu("dgx01", 0).job_ids == ()
    assert [(j.job_id, j.user) for j in snap.jobs] == [("7", "ada")]
    assert "jobs" not in snap.unavailable and "state" not in snap.unavailable
    assert snap.warnings == ()


def test_a_scheduler_exporter_with_no_job_running_still_knows_the_gpus_are_free() -> None:
    """Recorded, nothing held: idle, never n/a; jobs Slurm names no GPU of are said."""
    snap = make_source(SlurmAttributedDcgmProm(held=False, unknown=2), schema="dcgm").snapshot()
    assert snap.jobs == () and "state" not in snap.unavailable
    assert {n.state.value for n in snap.nodes} == {"idle"}
    assert snap.warnings == (
        "2 running jobs hold GPUs whose indices Slurm does not give: those GPUs are not"
        " attributed (factoryctl_slurm_jobs_gpu_indices_unknown)",
    )


def test_dcgm_site_without_a_scheduler_exporter_keeps_hpc_job() -> None:
    src = make_source(FakeDcgmProm(), schema="dcgm")
    assert src.schema(T).attribution_label == "hpc_job"
