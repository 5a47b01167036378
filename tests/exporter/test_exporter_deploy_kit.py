"""The deploy kit: Slurm prolog/epilog against a fake Slurm environment, and the configs.

The prolog and epilog also need a run inside the real Slurm test cluster (Slurm issue);
here they run as Slurm would run them, with the variables slurmd sets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from factoryctl.exporter.attribution import JobMapDir

KIT = Path(__file__).resolve().parents[2] / "exporters"
PROLOG = KIT / "slurm" / "factoryctl-jobmap-prolog.sh"
EPILOG = KIT / "slurm" / "factoryctl-jobmap-epilog.sh"


def slurm(script: Path, map_dir: Path, job: str | None, gpus: str | None = None):
    env = {"PATH": os.environ["PATH"], "FACTORYCTL_JOB_MAP_DIR": str(map_dir)}
    if job is not None:
        env["SLURM_JOB_ID"] = job
    if gpus is not None:
        env["SLURM_JOB_GPUS"] = gpus
    return subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=30
    )


def files(map_dir: Path) -> dict[str, list[str]]:
    return {p.name: p.read_text().split() for p in sorted(map_dir.iterdir()) if p.name.isdigit()}


def test_prolog_and_epilog_keep_the_map_exact(tmp_path):
    maps = tmp_path / "job-map"
    assert slurm(PROLOG, maps, "101", "0,1").returncode == 0
    assert slurm(PROLOG, maps, "102", "1-3").returncode == 0  # shares GPU 1
    assert files(maps) == {"0": ["101"], "1": ["101", "102"], "2": ["102"], "3": ["102"]}
    assert slurm(PROLOG, maps, "101", "0,1").returncode == 0  # a requeue: no duplicate
    assert files(maps)["1"] == ["102", "101"]
    assert JobMapDir(maps).read() == {0: ("101",), 1: ("102", "101"), 2: ("102",), 3: ("102",)}
    assert slurm(EPILOG, maps, "101").returncode == 0
    assert files(maps) == {"1": ["102"], "2": ["102"], "3": ["102"]}
    assert slurm(EPILOG, maps, "102").returncode == 0
    assert files(maps) == {}
    assert not [p for p in maps.iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_concurrent_prologs_lose_no_job(tmp_path):
    maps = tmp_path / "job-map"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda j: slurm(PROLOG, maps, str(j), "0"), range(200, 216)))
    assert all(r.returncode == 0 for r in results)
    assert sorted(files(maps)["0"]) == [str(j) for j in range(200, 216)]


@pytest.mark.parametrize("job", [None, "", "12; rm -rf /", "../../etc"])
def test_bad_job_ids_write_nothing_and_never_fail_the_job(tmp_path, job):
    maps = tmp_path / "job-map"
    for script in (PROLOG, EPILOG):
        proc = slurm(script, maps, job, "0")
        assert proc.returncode == 0  # a failing prolog would drain the node
    assert not maps.exists() or files(maps) == {}


def test_an_unwritable_map_dir_never_fails_the_job(tmp_path):
    blocker = tmp_path / "job-map"
    blocker.write_text("a file where the directory should be")
    proc = slurm(PROLOG, blocker, "101", "0")
    assert proc.returncode == 0
    assert "cannot create" in proc.stderr
    assert slurm(EPILOG, blocker, "101").returncode == 0


def test_jobs_without_gpus_and_odd_gpu_lists(tmp_path):
    maps = tmp_path / "job-map"
    assert slurm(PROLOG, maps, "300").returncode == 0
    assert not maps.exists()
    proc = slurm(PROLOG, maps, "301", "0,gpu:h100,2")
    assert proc.returncode == 0 and "ignoring GPU 'gpu:h100'" in proc.stderr
    assert files(maps) == {"0": ["301"], "2": ["301"]}


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool")
def test_scrape_config_is_valid_prometheus_config():
    proc = subprocess.run(
        ["promtool", "check", "config", str(KIT / "prometheus" / "factoryctl-scrape.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_unit_verifies(tmp_path):
    unit = (KIT / "systemd" / "factoryctl-exporter.service").read_text()
    assert "DynamicUser=yes" in unit and "ProtectSystem=strict" in unit
    # verify insists the ExecStart binary exists; point it at one that does.
    copy = tmp_path / "factoryctl-exporter.service"
    copy.write_text(
        unit.replace("/usr/local/bin/factoryctl-exporter", shutil.which("true") or "/bin/true")
    )
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if line.strip() and "man factoryctl-exporter(8)" not in line  # man page not installed
    ]
    assert problems == []


def test_daemonset_runs_the_exporter_with_host_pids():
    doc = yaml.safe_load((KIT / "kubernetes" / "factoryctl-exporter-daemonset.yaml").read_text())
    spec = doc["spec"]["template"]["spec"]
    assert doc["kind"] == "DaemonSet" and spec["hostPID"] is True
    container = spec["containers"][0]
    assert "--node-name=$(NODE_NAME)" in container["args"]
    assert container["ports"][0]["containerPort"] == 9835
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
