"""GPU processes end to end: factoryctl-exporter --simulate serves one series per process,
a real Prometheus / VictoriaMetrics scrapes it, and ``PrometheusSource.processes(node)``
returns exactly the processes the exporter served, for that node only."""

from __future__ import annotations

import sys
import urllib.request

import pytest
from exporter_prom import ENGINES, available, engine
from prometheus_client.parser import text_string_to_metric_families

from factoryctl.lab.procs import ManagedProcess, free_port, port_open, wait_until
from factoryctl.sim.processes import sim_pid
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions

pytestmark = [pytest.mark.integration]

SERIES = "factoryctl_gpu_process_used_memory_bytes"


def start_exporter(tmp_path, node: str, jobs: str, *extra: str) -> tuple[ManagedProcess, str]:
    control = tmp_path / f"{node}-control"
    control.mkdir()
    (control / "jobs").write_text(jobs)
    port = free_port()
    proc = ManagedProcess(
        node,
        [
            sys.executable, "-m", "factoryctl.exporter.main",
            "--simulate", "4", "--node-name", node, "--sim-control", str(control),
            "--sim-processes-per-gpu", "2", "--listen", f"127.0.0.1:{port}", *extra,
        ],
        tmp_path / f"{node}.log",
    ).start()  # fmt: skip
    wait_until(lambda: port_open(port) or not proc.alive(), 20, f"exporter {node}")
    assert proc.alive(), proc.log_tail()
    return proc, f"127.0.0.1:{port}"


def served(target: str) -> set[tuple[int, int, str, str, str]]:
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    out = set()
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            if s.name == SERIES:
                lab = s.labels
                out.add((int(lab["gpu"]), int(lab["pid"]), lab["name"], lab["user"], lab["job_id"]))
    return out


@pytest.mark.parametrize("engine_name", ENGINES)
def test_processes_of_one_node_are_what_the_exporter_served(tmp_path, engine_name):
    if not available(engine_name):
        pytest.skip(f"{engine_name} is not here (./dev test builds every release)")
    procs: list[ManagedProcess] = []
    prom = None
    try:
        a, target_a = start_exporter(
            tmp_path, "node-a", "601 ada training 0,1\n602 ben inference 3\n"
        )
        procs.append(a)
        # Same jobs on a node that does not export processes by PID.
        b, target_b = start_exporter(
            tmp_path, "node-b", "701 chen training 0\n", "--no-process-metrics"
        )
        procs.append(b)
        prom = engine(engine_name, tmp_path / "tsdb", [target_a, target_b]).start()
        prom.wait_all_up(2)
        wait_until(
            lambda: prom.scalar(f"count({SERIES})") == 6, 30, "6 processes scraped", interval=0.2
        )
        source = PrometheusSource(
            PromClient(PromConfig(prom.url, timeout=10)), None, SourceOptions()
        )
        table = source.processes("node-a")
        assert table.available and table.note == ""
        got = {(r.gpu, r.pid, r.name, r.user, r.job_id) for r in table.rows}
        expected = {
            (gpu, sim_pid(job, "node-a", gpu, rank), name, user, job)
            for job, user, name, gpus in (
                ("601", "ada", "pt_main_thread", (0, 1)),
                ("602", "ben", "vllm", (3,)),
            )
            for gpu in gpus
            for rank in (0, 1)
        }
        assert got == expected == served(target_a)
        assert all(r.node == "node-a" and r.uuid.startswith("GPU-") for r in table.rows)
        assert all(r.memory_bytes is not None and r.memory_bytes > 0 for r in table.rows)
        assert [r.gpu for r in table.rows] == sorted(r.gpu for r in table.rows)
        # node-b counts its processes but exports none by PID: said so, not an empty table.
        assert served(target_b) == set()
        hidden = source.processes("node-b")
        assert not hidden.available and "counts 2 process(es)" in hidden.note
        # A node nobody has heard of: no telemetry, not "no processes".
        unknown = source.processes("node-z")
        assert not unknown.available and "no process telemetry" in unknown.note
    finally:
        if prom is not None:
            prom.stop()
        for p in procs:
            p.stop()
