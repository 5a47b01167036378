"""The NVML backend on a real GPU. Skipped where NVML cannot start (no GPU, no driver)."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from factoryctl.exporter.attribution import Attributor
from factoryctl.exporter.collection import Exporter
from factoryctl.exporter.metrics import SnapshotCollector
from factoryctl.exporter.nvml import Nvml, NvmlBackend, NvmlInitError
from factoryctl.lab.procs import ManagedProcess, free_port, port_open, wait_until


def _nvml_available() -> bool:
    try:
        backend = NvmlBackend(Nvml(), watch_xids=False)
    except NvmlInitError:
        return False
    backend.close()
    return backend.count > 0


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _nvml_available(), reason="no NVIDIA GPU/driver here"),
]


@pytest.fixture
def nvml_exporter():
    backend = NvmlBackend(Nvml(), watch_xids=True)
    exporter = Exporter(backend, "gpunode", Attributor())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: exporter.snapshot))
    yield backend, exporter, registry
    backend.close()


def test_every_gpu_reads_sane_values(nvml_exporter):
    backend, exporter, registry = nvml_exporter
    first = exporter.collect_once()
    time.sleep(1.0)  # let the energy counter move
    snap = exporter.collect_once()
    assert len(snap.readings) == backend.count
    for r in snap.readings:
        print(r)
        assert r.up, r
        assert r.uuid.startswith(("GPU-", "MIG-"))
        assert r.model and r.driver_version and r.pci_bus_id
        assert r.memory_total_bytes is not None and r.memory_total_bytes > 2**30
        assert r.power_watts is not None and 1 < r.power_watts < 2000
        assert r.power_limit_watts is not None and r.power_limit_watts >= 100
        assert r.temperature_celsius is not None and 5 < r.temperature_celsius < 110
        assert r.sm_clock_hz is not None and r.sm_clock_hz >= 1e8
        assert r.utilization is not None and 0 <= r.utilization <= 1
        # Volta and later: read every collection here (energy_interval 0)
        assert snap.gpu_energy[r.index] > first.gpu_energy[r.index] > 0
    print(f"nvml errors by call: {dict(snap.nvml_errors)}")
    assert backend.watcher is not None
    wait_until(backend.watcher.ready.is_set, 10, "XID event registration")
    print(f"XID events registered on GPUs {backend.watcher.registered}")
    text = generate_latest(registry).decode()
    assert text.count("factoryctl_gpu_up{") == backend.count
    if shutil.which("promtool"):
        lint = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_a_cuda_process_is_attributed_through_proc(nvml_exporter, tmp_path):
    pytest.importorskip("torch")
    _backend, exporter, registry = nvml_exporter
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, torch; x = torch.ones(1 << 20, device='cuda'); "
            "open(sys.argv[1], 'w').close(); time.sleep(60)",
            str(ready),
        ],
        env={**os.environ, "SLURM_JOB_ID": "4242", "SLURM_JOB_USER": "gputest"},
    )
    try:
        wait_until(ready.exists, 60, "the CUDA child to allocate")

        def attributed() -> bool:
            snap = exporter.collect_once()
            return any(ref.job_id == "4242" for refs in snap.attribution.values() for ref in refs)

        wait_until(attributed, 20, "job 4242 attributed via /proc")
        snap = exporter.snapshot
        holders = {i: refs for i, refs in snap.attribution.items() if refs}
        print(f"attribution: {holders}")
        procs = {r.index: r.processes for r in snap.readings}
        print(f"processes: {procs}")
        gpu = next(i for i, refs in holders.items() if refs[0].job_id == "4242")
        assert holders[gpu][0].user == "gputest"
        uuid = next(r.uuid for r in snap.readings if r.index == gpu)
        labels = {
            "node": "gpunode",
            "gpu": str(gpu),
            "uuid": uuid,
            "job_id": "4242",
            "user": "gputest",
        }
        assert registry.get_sample_value("factoryctl_gpu_job_info", labels) == 1
        # The process's own series: named from /proc, owned by us, in job 4242.
        mine = next(p for p in snap.processes[gpu] if p.pid == child.pid)
        comm = Path(f"/proc/{child.pid}/comm").read_text().strip()
        assert (mine.name, mine.user, mine.job_id) == (comm, getpass.getuser(), "4242")
        proc_labels = {
            **{k: v for k, v in labels.items() if k != "user"},
            "pid": str(child.pid),
            "name": comm,
            "user": getpass.getuser(),
        }
        value = registry.get_sample_value("factoryctl_gpu_process_used_memory_bytes", proc_labels)
        if mine.memory_bytes is None:  # NVML cannot say (some containers): no series
            assert value is None
        else:
            assert value == mine.memory_bytes >= 4 * 2**20  # at least the 4 MiB tensor
    finally:
        child.kill()
        child.wait(10)


def test_the_real_exporter_serves_nvml(tmp_path):
    port = free_port()
    proc = ManagedProcess(
        "exporter",
        [sys.executable, "-m", "factoryctl.exporter.main", "--listen", f"127.0.0.1:{port}"],
        tmp_path / "exporter.log",
    ).start()
    try:
        wait_until(lambda: port_open(port) or not proc.alive(), 30, "the exporter")
        assert proc.alive(), proc.log_tail()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            body = resp.read().decode()
        print(body)
        assert 'backend="nvml"' in body
        assert "factoryctl_gpu_up{" in body and "factoryctl_gpu_power_watts{" in body
    finally:
        proc.stop()
    print(proc.log_tail())
