"""The sample Alertmanager config: valid for amtool, routes as documented, inhibits as documented.

Routing is checked with `amtool config routes test`; inhibition with the real Alertmanager
(Debian's prometheus-alertmanager) on a free port, fed alerts through its API.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from factoryctl.lab.procs import ManagedProcess, free_port, wait_until

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[2] / "dashboards" / "alertmanager" / "alertmanager.yml"


def _tool(name: str) -> str:
    path = shutil.which(name)  # on PATH, never a fixed path
    if path is None:
        pytest.skip(f"{name} is not on PATH")
    return path


def test_amtool_check_config() -> None:
    proc = subprocess.run(
        [_tool("amtool"), "check-config", str(CONFIG)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    assert "3 inhibit rules" in proc.stdout


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        ("alertname=FactoryctlGPUXid79FallenOffBus severity=critical class=hardware", "pager,chat"),
        ("alertname=FactoryctlGPUXidApplication severity=warning class=application", "users"),
        ("alertname=FactoryctlGPUIdleAllocated severity=warning class=occupancy", "users"),
        ("alertname=FactoryctlExporterDown severity=warning class=telemetry", "chat"),
        ("alertname=FactoryctlGPUPowerCapped severity=info class=power", "chat"),
        ("alertname=SomethingElse", "chat"),
    ],
)
def test_routes(labels: str, receivers: str) -> None:
    proc = subprocess.run(
        [_tool("amtool"), "config", "routes", "test", f"--config.file={CONFIG}", *labels.split()],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == receivers


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = _tool("prometheus-alertmanager")
    port = free_port()
    proc = ManagedProcess(
        "alertmanager",
        [
            binary,
            f"--config.file={CONFIG}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port: several runs share this machine
        ],
        tmp_path / "alertmanager.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _get(f"{url}/-/ready") is not None, 20, "alertmanager ready")
        yield url
    finally:
        proc.stop()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as resp:
        body = resp.read()
    return json.loads(body) if body.strip().startswith((b"[", b"{")) else body


def _alert(name: str, **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, **labels}, "annotations": {"summary": name}}


def test_inhibitions(alertmanager: str) -> None:
    alerts = [
        _alert("FactoryctlNodeDown", node="gpu07", severity="warning"),
        _alert("FactoryctlGPUXidECC", node="gpu07", gpu="1", severity="critical"),
        _alert("FactoryctlGPUXidECC", node="gpu08", gpu="1", severity="critical"),
        _alert("FactoryctlGPUXid79FallenOffBus", node="gpu08", gpu="2", severity="critical"),
        _alert("FactoryctlGPUIdleAllocated", node="gpu08", gpu="2", job_id="7", user="alice"),
        _alert("FactoryctlGPUIdleAllocated", node="gpu08", gpu="3", job_id="7", user="alice"),
        _alert("FactoryctlExporterDown", node="gpu09", severity="warning"),
        _alert("FactoryctlExporterStale", node="gpu09", severity="warning"),
    ]
    request = urllib.request.Request(
        f"{alertmanager}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200

    def states() -> dict[tuple[str, str, str], str]:
        out = {}
        for alert in _get(f"{alertmanager}/api/v2/alerts"):
            labels = alert["labels"]
            key = (labels["alertname"], labels["node"], labels.get("gpu", ""))
            out[key] = alert["status"]["state"]
        return out

    wait_until(lambda: len(states()) == len(alerts), 10, "alerts received")
    wait_until(
        lambda: states()[("FactoryctlGPUXidECC", "gpu07", "1")] == "suppressed", 10, "inhibition"
    )
    assert states() == {
        ("FactoryctlNodeDown", "gpu07", ""): "active",
        ("FactoryctlGPUXidECC", "gpu07", "1"): "suppressed",  # its node is down
        ("FactoryctlGPUXidECC", "gpu08", "1"): "active",
        ("FactoryctlGPUXid79FallenOffBus", "gpu08", "2"): "active",
        ("FactoryctlGPUIdleAllocated", "gpu08", "2"): "suppressed",  # the GPU fell off the bus
        ("FactoryctlGPUIdleAllocated", "gpu08", "3"): "active",
        ("FactoryctlExporterDown", "gpu09", ""): "active",
        ("FactoryctlExporterStale", "gpu09", ""): "suppressed",  # its exporter is down
    }
