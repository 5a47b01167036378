"""Every rule and panel expression, run by real engines on a simulated factory.

promtool proves the expressions parse; only an engine with data proves they execute (a
many-to-many join fails at evaluation, not at parse time) and return something, so that no
panel silently shows "No data". A stand-in for factoryctl-exporter serves the native schema
from a simulated factory with an XID 79, a drained node, throttling and idle-allocated GPUs,
and the scheduler view comes from the real SchedulerCollector. Prometheus evaluates the rules
itself; VictoriaMetrics gets them through vmalert. The lab repeats this with the real exporter.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from factoryctl.lab import expressions as ex
from factoryctl.lab.debian import RELEASES, DebianRelease, available
from factoryctl.lab.procs import ManagedProcess, free_port, wait_until
from factoryctl.model import FactorySnapshot
from factoryctl.telemetry import schema as s
from factoryctl.telemetry.demo import DemoSource
from factoryctl.telemetry.scheduler_collector import SchedulerCollector

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REASONS = ("sw_power_cap", "hw_thermal_slowdown", "sw_thermal_slowdown", "hw_slowdown")


def _q(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _exporter_text(snap: FactorySnapshot, elapsed: float, lost: tuple[str, int], node: str) -> str:
    """The native schema for every GPU, with counters that advance with wall time.

    ``lost`` fell off the bus (XID 79) a moment ago: NVML reports it lost while its job,
    about to fail, still holds it.
    """
    out: list[str] = []

    def add(name: str, labels: dict[str, str], value: float) -> None:
        body = ",".join(f'{k}="{_q(v)}"' for k, v in labels.items())
        out.append(f"{name}{{{body}}} {value!r}")

    users = {j.job_id: j.user for j in snap.jobs}
    job_power: dict[tuple[str, str], float] = {}
    for g in snap.gpus_of_node(node):
        ids = {"node": g.node, "gpu": str(g.index), "uuid": g.uuid}
        add(s.GPU_INFO, {**ids, "model": g.model}, 1)
        up = g.up and g.key != lost
        add(s.GPU_UP, ids, 1 if up else 0)
        # Attribution survives a lost GPU: the prolog's job-map files still name the job.
        for job_id in g.job_ids:
            add(s.GPU_JOB_INFO, {**ids, "job_id": job_id, "user": users.get(job_id, "")}, 1)
        if not up:
            # XIDs keep coming, so increase() over any window sees one.
            add(s.GPU_XID_ERRORS, {**ids, "xid": "79"}, 1 + elapsed // 5)
            continue
        power = g.power_watts or 0.0
        add(s.GPU_UTILIZATION, ids, g.utilization or 0.0)
        add(s.GPU_MEMORY_UTILIZATION, ids, g.memory_utilization or 0.0)
        add(s.GPU_MEMORY_USED, ids, g.memory_used_bytes or 0.0)
        add(s.GPU_MEMORY_TOTAL, ids, g.memory_total_bytes or 0.0)
        add(s.GPU_POWER, ids, power)
        add(s.GPU_POWER_LIMIT, ids, g.power_limit_watts or 700.0)
        add(s.GPU_ENERGY, ids, (g.energy_joules or 0.0) + power * elapsed)
        add(s.GPU_TEMPERATURE, ids, g.temperature_celsius or 0.0)
        add(s.GPU_MEMORY_TEMPERATURE, ids, (g.temperature_celsius or 0.0) + 4)
        add(s.GPU_SM_CLOCK, ids, g.sm_clock_hz or 0.0)
        add(s.GPU_MEMORY_CLOCK, ids, 2.6e9)
        for reason in REASONS:
            add(s.GPU_CLOCK_EVENT, {**ids, "reason": reason}, float(reason in g.throttle_reasons))
        for kind in ("corrected", "uncorrected"):
            add(s.GPU_ECC_ERRORS, {**ids, "type": kind}, 0)
        for cause in ("correctable", "uncorrectable"):
            add(s.GPU_REMAPPED_ROWS, {**ids, "cause": cause}, 0)
        add(s.GPU_ROW_REMAP_FAILURE, ids, 0)
        add(s.GPU_PCIE_REPLAYS, ids, 0)
        add(s.GPU_PROCESSES, ids, len(g.job_ids))
        for job_id in g.job_ids:
            key = (g.node, job_id)
            job_power[key] = job_power.get(key, 0.0) + power / len(g.job_ids)
    # The exporter's own series carry no node: Prometheus knows it by the target.
    out.append(f"{s.EXPORTER_LAST_SUCCESS} {time.time()!r}")
    out.append(f"{s.EXPORTER_COLLECTION_DURATION} 0.004")
    for (node_name, job_id), power in job_power.items():
        labels = {"node": node_name, "job_id": job_id}
        add(s.JOB_ENERGY, labels, 1e6 + power * elapsed)
        add(s.JOB_GPU_SECONDS, labels, 1e4 + 4 * elapsed)
        add(s.JOB_ACTIVE_GPU_SECONDS, labels, 5e3 + 3 * elapsed)
    return "\n".join(out) + "\n"


def _dcgm_text(snap: FactorySnapshot, elapsed: float) -> str:
    """The same GPUs as dcgm-exporter shows them: its names, units and labels."""
    out: list[str] = []
    for g in snap.gpus:
        labels = (
            f'gpu="{g.index}",UUID="{g.uuid}",device="nvidia{g.index}",'
            f'modelName="{g.model}",Hostname="{g.node}"'
        )
        power = g.power_watts or 0.0
        for name, value in (
            ("DCGM_FI_DEV_GPU_UTIL", round(100 * (g.utilization or 0.0))),
            ("DCGM_FI_PROF_DRAM_ACTIVE", g.memory_utilization or 0.0),
            ("DCGM_FI_DEV_FB_USED", (g.memory_used_bytes or 0.0) // 2**20),
            ("DCGM_FI_DEV_POWER_USAGE", power),
            ("DCGM_FI_DEV_GPU_TEMP", g.temperature_celsius or 0.0),
            ("DCGM_FI_DEV_MEMORY_TEMP", (g.temperature_celsius or 0.0) + 4),
            ("DCGM_FI_DEV_SM_CLOCK", (g.sm_clock_hz or 0.0) / 1e6),
            (
                "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
                1e3 * ((g.energy_joules or 0) + power * elapsed),
            ),
            ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", elapsed // 5),
            ("DCGM_FI_DEV_XID_ERRORS", 0),
        ):
            out.append(f"{name}{{{labels}}} {float(value)!r}")
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def factory() -> FactorySnapshot:
    source = DemoSource.create(nodes=6, gpus_per_node=4, seed=7, now=time.time(), warmup=3600)
    sim = source.sim
    sim.inject_throttle("gpu001", 0, "hw_thermal_slowdown", 3600)
    sim.inject_throttle("gpu001", 1, "sw_power_cap", 3600)
    sim.set_admin("gpu006", drain=True, reason="fan replacement")
    sim.advance(5)
    return source.snapshot()


@pytest.fixture(scope="module")
def lost(factory: FactorySnapshot) -> tuple[str, int]:
    return next(g.key for g in factory.gpus if g.job_ids)


@pytest.fixture(scope="module")
def targets(factory: FactorySnapshot, lost: tuple[str, int]) -> Iterator[str]:
    """host:port serving one stand-in exporter per node at /node/NAME, the scheduler at
    /scheduler and a dcgm-exporter stand-in at /dcgm."""
    registry = CollectorRegistry()
    registry.register(SchedulerCollector(lambda: factory.nodes))
    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/scheduler"):
                body = generate_latest(registry)
            elif self.path.startswith("/dcgm"):
                body = _dcgm_text(factory, time.monotonic() - started).encode()
            else:
                node = self.path.rsplit("/", 1)[-1]
                body = _exporter_text(factory, time.monotonic() - started, lost, node).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _scrape_config(target: str, nodes: list[str]) -> list[dict[str, Any]]:
    # One target per node, each its own instance on 127.0.0.1 as in the lab, so the rules
    # must learn which node an instance serves; and a closed port: an exporter that is down.
    per_node = [
        {
            "targets": [target],
            "labels": {"__metrics_path__": f"/node/{name}", "instance": f"127.0.0.1:{10001 + i}"},
        }
        for i, name in enumerate(nodes)
    ]
    return [
        {
            "job_name": "factoryctl",
            "static_configs": [*per_node, {"targets": [f"127.0.0.1:{free_port()}"]}],
        },
        {
            "job_name": "factoryctl-scheduler",
            "metrics_path": "/scheduler",
            "static_configs": [{"targets": [target]}],
        },
    ]


def _rule_files(tmp: Path) -> list[str]:
    """The rules as shipped, minus their 1m group intervals: the test cannot wait a minute."""
    out = []
    for src in sorted((ex.DASHBOARDS_DIR / "prometheus").glob("*.rules.yml")):
        doc = yaml.safe_load(src.read_text())
        for group in doc["groups"]:
            group.pop("interval", None)
        dst = tmp / src.name
        dst.write_text(yaml.safe_dump(doc))
        out.append(str(dst))
    return out


@pytest.fixture(scope="module", params=RELEASES)
def engine_release(request: pytest.FixtureRequest) -> DebianRelease:
    """The rules run on the Prometheus and the VictoriaMetrics + vmalert of every Debian
    generation (Prometheus 2.42/2.53/3.5, VictoriaMetrics 1.79/1.112/1.145): binaries on
    PATH for the host's release, in the lab's root for the others, never a fixed path."""
    release = available(request.param)
    if release is None:
        pytest.skip(f"Debian {request.param} is not here (./dev test builds every release)")
    return release


def _start_prometheus(
    tmp: Path, scrape_configs: list[dict[str, Any]], release: DebianRelease
) -> tuple[str, ManagedProcess]:
    if not release.has("prometheus"):
        pytest.skip(f"prometheus is not installed in {release.codename}")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": _rule_files(tmp),
        "scrape_configs": scrape_configs,
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    proc = ManagedProcess(
        "prometheus",
        release.argv(
            "prometheus",
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ),
        tmp / "prometheus.log",
    ).start()
    return f"http://127.0.0.1:{port}", proc


@pytest.fixture(scope="module")
def prometheus(
    targets: str,
    factory: FactorySnapshot,
    tmp_path_factory: pytest.TempPathFactory,
    engine_release: DebianRelease,
) -> Iterator[str]:
    scrape = _scrape_config(targets, [n.name for n in factory.nodes])
    url, proc = _start_prometheus(tmp_path_factory.mktemp("prometheus"), scrape, engine_release)
    try:
        wait_until(lambda: _query(url, "factory:factoryctl_gpus:count"), 60, "first rule results")
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def dcgm_prometheus(
    targets: str, tmp_path_factory: pytest.TempPathFactory, engine_release: DebianRelease
) -> Iterator[str]:
    """A site that runs only dcgm-exporter, its Hostname relabelled to node as README says."""
    scrape = {
        "job_name": "dcgm-exporter",
        "metrics_path": "/dcgm",
        "static_configs": [{"targets": [targets]}],
        "metric_relabel_configs": [{"source_labels": ["Hostname"], "target_label": "node"}],
    }
    url, proc = _start_prometheus(tmp_path_factory.mktemp("dcgm"), [scrape], engine_release)
    try:
        wait_until(lambda: _query(url, "DCGM_FI_DEV_GPU_UTIL"), 60, "first dcgm scrape")
        yield url
    finally:
        proc.stop()


def _eval_delay(release: DebianRelease) -> list[str]:
    """vmalert's -rule.evalDelay, matched to VictoriaMetrics' -search.latencyOffset=1s.

    vmalert 1.9x+ (trixie, forky) queries every rule at now - 30 s by default, to wait out
    VictoriaMetrics' default 30 s latency offset. With VictoriaMetrics' offset at 1 s, that
    default only delays each rule's first result by 30 s (vmalert's docs: evalDelay should
    equal -search.latencyOffset). bookworm's vmalert 1.79 has no such delay and no flag.
    """
    help_text = subprocess.run(
        release.argv("vmalert", "-help"), capture_output=True, text=True, timeout=30
    )
    return (
        ["-rule.evalDelay=1s"] if "-rule.evalDelay" in help_text.stderr + help_text.stdout else []
    )


def _start_victoriametrics(
    release: DebianRelease, tmp: Path, scrape: list[dict[str, Any]], procs: list[ManagedProcess]
) -> str:
    """VictoriaMetrics of ``release`` scraping ``scrape``, with vmalert evaluating the rules
    into it; both started at once (vmalert's first evaluations are empty), none waited for."""
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": scrape}
    (tmp / "scrape.yml").write_text(json.dumps(config))
    port, alert_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    vm_argv = release.argv(
        "victoria-metrics",
        f"-httpListenAddr=127.0.0.1:{port}",
        f"-storageDataPath={tmp / 'data'}",
        f"-promscrape.config={tmp / 'scrape.yml'}",
        "-search.latencyOffset=1s",  # default 30s: the test would wait half a minute
        "-search.disableCache",
    )
    procs.append(ManagedProcess("victoria-metrics", vm_argv, tmp / "victoria-metrics.log").start())
    vmalert_argv = release.argv(
        "vmalert",
        *(f"-rule={path}" for path in _rule_files(tmp)),
        f"-datasource.url={url}",
        f"-remoteWrite.url={url}",
        "-remoteWrite.flushInterval=1s",
        "-evaluationInterval=1s",
        f"-httpListenAddr=127.0.0.1:{alert_port}",
        f"-notifier.url=http://127.0.0.1:{free_port()}",  # nobody listens: alerts stay here
        *_eval_delay(release),
    )
    procs.append(ManagedProcess("vmalert", vmalert_argv, tmp / "vmalert.log").start())
    return url


@pytest.fixture(scope="module")
def victoriametrics_of_every_release(
    targets: str, factory: FactorySnapshot, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Codename -> URL of a VictoriaMetrics + vmalert of every release that has them, all
    started at once when the first VictoriaMetrics test asks. Each needs ~40 s before the
    deepest rule chain has data (see the test), nearly all of it waiting: started one
    release at a time that was 3 x 40 s; side by side it is ~40 s for the three."""
    scrape = _scrape_config(targets, [n.name for n in factory.nodes])
    procs: list[ManagedProcess] = []
    urls: dict[str, str] = {}
    try:
        for codename in RELEASES:
            release = available(codename)
            if release is not None and release.has("victoria-metrics", "vmalert"):
                tmp = tmp_path_factory.mktemp(f"victoriametrics-{codename}")
                urls[codename] = _start_victoriametrics(release, tmp, scrape, procs)
        yield urls
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture(scope="module")
def victoriametrics(
    victoriametrics_of_every_release: dict[str, str], engine_release: DebianRelease
) -> str:
    """VictoriaMetrics scraping the same targets, with vmalert evaluating the same rules."""
    url = victoriametrics_of_every_release.get(engine_release.codename)
    if url is None:
        pytest.skip(f"victoria-metrics or vmalert is not installed in {engine_release.codename}")
    wait_until(lambda: _query(url, "factoryctl_gpu_info"), 60, "first VictoriaMetrics scrape")
    wait_until(lambda: _query(url, "factory:factoryctl_gpus:count"), 60, "first vmalert results")
    return url


DCGM_ROLLUPS = "prometheus/rollups.rules.yml"
CONSOLE_RULES = "prometheus/console.rules.yml"


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    qs = urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{qs}", timeout=10) as resp:
            reply = json.load(resp)
    except urllib.error.HTTPError as err:  # 400 bad_data, 422 execution: name the expression
        reply = json.load(err)
    assert reply["status"] == "success", (expr, reply)
    result: list[dict[str, Any]] = reply["data"]["result"]
    return result


@pytest.mark.parametrize("engine", ["prometheus", "victoriametrics"])
def test_every_expression_executes_and_returns_data(
    engine: str, request: pytest.FixtureRequest, engine_release: DebianRelease
) -> None:
    url = request.getfixturevalue(engine)
    expressions = ex.all_expressions()
    # The dcgm-exporter rollup rules read DCGM_FI_* series, which this native factory does
    # not have: test_rollup_rules_live.py runs them over a dcgm-format exporter instead.
    # The console's rules read the exporter's rollups, which this stand-in does not write
    # (and list only problems): test_console_rules_live.py runs them over the rollups.
    skip = {DCGM_ROLLUPS, CONSOLE_RULES}
    data = [e for e in expressions if e.kind != "alert" and e.source not in skip]
    # Rules chain through up to three groups and rate() needs two scrapes: wait for all.
    # On VictoriaMetrics each link of the chain (raw series -> gpu_job:...:last2m ->
    # gpu_job:...:allocated -> job:factoryctl_gpus_active:count) shows up ~10 s after the
    # one it reads: vmalert writes a new series and VictoriaMetrics makes a new series
    # searchable within ~10 s (measured on 1.79, 1.112 and 1.145: 10.0 s steps). So the
    # deepest chain needs ~30 s after the first rule result; Prometheus evaluates in memory.
    deadline = time.monotonic() + 60
    while True:
        empty = [e for e in data if not _query(url, e.expr)]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert [f"{e.source}: {e.name}" for e in empty] == []
    # Alert expressions must execute (no many-to-many errors); most are empty when healthy.
    for alert in (e for e in expressions if e.kind == "alert"):
        _query(url, alert.expr)


def test_xid79_fires_naming_node_gpu_job_and_user(
    prometheus: str, factory: FactorySnapshot, lost: tuple[str, int]
) -> None:
    gpu = factory.gpu(*lost)
    assert gpu is not None
    # The alert joins the recording rule gpu:factoryctl_gpu_job_info:topk1, which has no
    # value until its group's first evaluation: on a just-started engine the alert's first
    # evaluation can come before it and fire the branch that names no job. Wait for the one
    # that names the job (it must come within a few evaluations), then check it.
    alerts = 'ALERTS{alertname="FactoryctlGPUXid79FallenOffBus", job_id!=""}'
    wait_until(lambda: _query(prometheus, alerts), 30, "the XID 79 alert naming the job")
    (alert,) = _query(prometheus, alerts)
    labels = alert["metric"]
    assert (labels["node"], labels["gpu"]) == (gpu.node, str(gpu.index))
    assert labels["job_id"] in gpu.job_ids and labels["severity"] == "critical"
    (job,) = (j for j in factory.jobs if j.job_id == labels["job_id"])
    assert labels["user"] == job.user
    with urllib.request.urlopen(f"{prometheus}/api/v1/alerts", timeout=10) as resp:
        alerts = json.load(resp)["data"]["alerts"]
    (firing,) = (a for a in alerts if a["labels"]["alertname"] == "FactoryctlGPUXid79FallenOffBus")
    runbook = f'factoryctl drain {gpu.node} --reason "XID 79 on GPU {gpu.index}"'
    assert firing["annotations"]["runbook"] == runbook
    assert f"Job: {job.job_id} of user {job.user}." in firing["annotations"]["description"]


# The node-detail panels dashboards/README.md promises on dcgm-exporter sites.
DCGM_PANELS = {
    "GPU utilization [A]",
    "Memory bandwidth utilization [A]",
    "GPU memory used [A]",
    "GPU power [A]",
    "GPU temperature [A]",
    "GPU temperature [B]",
    "SM clock [A]",
    "GPU energy (power from the counter) [A]",
    "PCIe replays [A]",
    "node",
}


def test_node_detail_on_a_dcgm_exporter_site(dcgm_prometheus: str) -> None:
    node_board = [e for e in ex.dashboard_expressions() if e.source == "grafana/node-detail.json"]
    time.sleep(3)  # rate() and increase() need a few scrapes
    with_data = {e.name for e in node_board if _query(dcgm_prometheus, e.expr)}
    assert with_data == DCGM_PANELS


def test_each_exporter_instance_maps_to_its_node(prometheus: str, factory: FactorySnapshot) -> None:
    """Every target is 127.0.0.1:PORT, as in the lab; the rules still know its node."""
    rows = _query(prometheus, "instance:factoryctl_exporter_node:info")
    nodes = sorted(r["metric"]["node"] for r in rows)
    assert nodes == sorted(n.name for n in factory.nodes)
    assert all(r["metric"]["instance"].startswith("127.0.0.1:") for r in rows)
