"""``python -m factoryctl.lab up|down``: a user's way to the real stack, stopped by PID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def lab(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "factoryctl.lab", "--state", str(state), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_lab_up_serves_factoryctl_then_down_stops_every_pid(tmp_path: Path) -> None:
    state = tmp_path / "lab"
    exporter = f"{sys.executable} -m tests.integration.simexpo --port {{port}} --node {{node}} --gpus {{gpus}}"
    up = lab(
        state,
        "up",
        "--exporters",
        "2",
        "--gpus",
        "4",
        "--interval",
        "1s",
        "--exporter-cmd",
        exporter,
    )
    pids = []
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        pids = [int(line.split()[1]) for line in (state / "pids").read_text().splitlines()]
        assert len(pids) == 4  # two engines, two exporters
        assert all(alive(p) for p in pids)
        urls = [
            line.split()[1]
            for line in up.stdout.splitlines()
            if line.startswith(("prometheus", "victoria"))
        ]
        for url in urls:
            res = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "factoryctl",
                    "--prometheus",
                    url,
                    "--scheduler",
                    "none",
                    "gpus",
                    "-o",
                    "json",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=REPO,
                env={**os.environ, "HOME": str(tmp_path)},
            )
            assert res.returncode == 0, res.stderr
            assert res.stdout.count('"uuid"') == 8
        assert lab(state, "status").returncode == 0
    finally:
        down = lab(state, "down")
    assert down.returncode == 0 and "stopped:" in down.stdout
    assert not any(alive(p) for p in pids)
    assert lab(state, "status").returncode == 1


def test_lab_with_the_real_exporter(tmp_path: Path) -> None:
    """The default lab: factoryctl-exporter --simulate on each node, read back by factoryctl."""
    state = tmp_path / "lab"
    up = lab(state, "up", "--exporters", "2", "--gpus", "4", "--interval", "1s")
    pids: list[int] = []
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        pids = [int(line.split()[1]) for line in (state / "pids").read_text().splitlines()]
        urls = [
            line.split()[1]
            for line in up.stdout.splitlines()
            if line.startswith(("prometheus", "victoria"))
        ]
        env = {**os.environ, "HOME": str(tmp_path)}
        for url in urls:
            base = [sys.executable, "-m", "factoryctl", "--prometheus", url, "--scheduler", "none"]
            gpus = subprocess.run(
                [*base, "gpus", "-o", "json"],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=REPO,
                env=env,
            )
            assert gpus.returncode == 0, gpus.stderr
            doc = json.loads(gpus.stdout)
            assert doc["source"] == "prometheus:native"
            assert len(doc["items"]) == 8
            assert {i["node"] for i in doc["items"]} == {"gpu001", "gpu002"}
            assert all(i["up"] and i["power_watts"] is not None for i in doc["items"])
            nodes = subprocess.run(
                [*base, "nodes", "-o", "json"],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=REPO,
                env=env,
            )
            assert nodes.returncode == 0, nodes.stderr
            assert [n["gpus_total"] for n in json.loads(nodes.stdout)["items"]] == [4, 4]
            jobs = subprocess.run(
                [*base, "jobs", "-o", "json"],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=REPO,
                env=env,
            )
            assert jobs.returncode == 0, jobs.stderr
            items = json.loads(jobs.stdout)["items"]
            assert items and all(j["user"] and j["gpus"] >= 1 for j in items)
            assert all(j["energy_joules"] is not None for j in items)
    finally:
        lab(state, "down")
    assert pids and not any(alive(p) for p in pids)


def test_lab_runs_the_scheduler_exporter_and_our_rules(tmp_path: Path) -> None:
    """``--scheduler-view demo --rules``: the scheduler view scraped under the job name the
    rules expect, and Prometheus evaluating the shipped rules over it."""
    import urllib.parse
    import urllib.request

    from factoryctl.lab.procs import wait_until

    state = tmp_path / "lab"
    up = lab(
        state,
        "up",
        "--exporters",
        "1",
        "--gpus",
        "2",
        "--interval",
        "1s",
        "--engines",
        "prometheus",
        "--scheduler-view",
        "demo",
        "--rules",
        str(REPO / "dashboards" / "prometheus"),
    )
    pids: list[int] = []
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        lines = (state / "pids").read_text().splitlines()
        pids = [int(line.split()[1]) for line in lines]
        assert any(line.startswith("scheduler-exporter ") for line in lines)
        url = next(line.split()[1] for line in up.stdout.splitlines() if line.startswith("prom"))

        def query(expr: str) -> list[dict[str, object]]:
            qs = urllib.parse.urlencode({"query": expr})
            with urllib.request.urlopen(f"{url}/api/v1/query?{qs}", timeout=5) as resp:
                result: list[dict[str, object]] = json.load(resp)["data"]["result"]
            return result

        assert query('up{job="factoryctl-scheduler"} == 1')
        assert query("factoryctl_node_gpus_expected")
        # A recording rule over the exporter's series: the rules are loaded and evaluated.
        wait_until(lambda: bool(query("factory:factoryctl_gpus:count")), 30, "a recorded series")
    finally:
        lab(state, "down")
    assert pids and not any(alive(p) for p in pids)
