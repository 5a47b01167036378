"""GPU process tables: the simulator's, the demo source's, and PrometheusSource's."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx

from factoryctl.processes import GpuProcessRow, ProcessTable, processes_of, sort_rows
from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.sim.processes import PID_BASE, node_processes, sim_pid
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.demo import DemoSource
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions

T = 1_767_225_600.0


def test_sim_pids_are_stable_distinct_and_never_real():
    a = sim_pid("101", "n1", 0)
    assert a == sim_pid("101", "n1", 0)
    assert len({a, sim_pid("101", "n1", 1), sim_pid("102", "n1", 0), sim_pid("101", "n2", 0)}) == 4
    assert PID_BASE <= a < 2**22  # a PID a real node could have


def test_sim_node_processes_follow_the_jobs():
    sim = SimFactory(SimConfig(nodes=1, node_names=("n1",), gpus_per_node=4, jobs=False))
    assert node_processes(sim, "n1").rows == ()
    sim.assign("7", "ada", "n1", [0, 2], Workload.TRAINING)
    sim.advance(5.0)
    table = node_processes(sim, "n1", per_gpu=2)
    assert table.available
    assert [(r.gpu, r.job_id, r.user, r.name) for r in table.rows] == [
        (0, "7", "ada", "pt_main_thread")
    ] * 2 + [(2, "7", "ada", "pt_main_thread")] * 2
    assert sum(r.memory_bytes or 0 for r in table.on_gpu(2)) == sim.memory_used[2] > 0
    sim.release("7")
    assert node_processes(sim, "n1").rows == ()


def test_demo_source_lists_the_processes_of_its_busy_gpus():
    demo = DemoSource.create(nodes=4, gpus_per_node=8, seed=3, now=T)
    snap = demo.snapshot()
    node = next(n.name for n in snap.nodes if n.gpus_allocated)
    table = demo.processes(node)
    held = {g.index: g.job_ids for g in snap.gpus_of_node(node) if g.job_ids}
    assert {r.gpu for r in table.rows} == set(held)
    for r in table.rows:
        assert (r.job_id,) == held[r.gpu]
        assert r.user == snap.job(r.job_id).user
        assert r.memory_bytes == snap.gpu(node, r.gpu).memory_used_bytes
    assert not demo.processes("nope").available


def test_a_source_without_processes_says_so():
    table = processes_of(object(), "n1")
    assert not table.available and "no per-process" in table.note


def test_rows_sort_by_gpu_then_biggest_first():
    rows = [
        GpuProcessRow("n", 1, 5, memory_bytes=1.0),
        GpuProcessRow("n", 0, 9, memory_bytes=1.0),
        GpuProcessRow("n", 0, 3, memory_bytes=5.0),
    ]
    assert [r.pid for r in sort_rows(rows)] == [3, 9, 5]


class FakeProm:
    def __init__(self, procs, counted=None, schema_metric="factoryctl_gpu_up"):
        self.procs = procs
        self.counted = counted
        self.schema_metric = schema_metric
        self.queries: list[str] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        # The engine's own metrics and its index's names: not served here (a proxy).
        if req.url.path == "/metrics" or req.url.path.startswith("/api/v1/label/"):
            return httpx.Response(404)
        if req.url.path == "/api/v1/targets":
            data = {"activeTargets": [{"scrapeInterval": "15s"}]}
            return httpx.Response(200, json={"status": "success", "data": data})
        q = parse_qs(req.content.decode())["query"][0]
        self.queries.append(q)
        items: list[tuple[dict[str, str], float]] = []
        if q.startswith("count by (__name__)"):
            items = [({"__name__": self.schema_metric}, 4)]
        elif q.startswith("last_over_time(factoryctl_gpu_process_used_memory_bytes"):
            items = self.procs
        elif (
            q.startswith("sum(last_over_time(factoryctl_gpu_processes") and self.counted is not None
        ):
            items = [({}, self.counted)]
        result = [{"metric": m, "value": [T, str(v)]} for m, v in items]
        data = {"resultType": "vector", "result": result}
        return httpx.Response(200, json={"status": "success", "data": data})


def source(handler) -> PrometheusSource:
    client = PromClient(PromConfig("http://prom:9090"), transport=httpx.MockTransport(handler))
    return PrometheusSource(client, None, SourceOptions(), clock=lambda: T)


def proc(gpu, pid, mem, job="42"):
    labels = {"node": "gpu-a.1", "gpu": str(gpu), "uuid": f"GPU-{gpu}", "pid": str(pid)}
    return ({**labels, "name": "python3", "user": "ada", "job_id": job}, mem)


def test_prometheus_processes_one_query_for_one_node():
    prom = FakeProm([proc(1, 300, 2e9), proc(0, 100, 1e9), proc(0, 200, 5e9, job="")])
    table = source(prom).processes("gpu-a.1")
    assert [(r.gpu, r.pid, r.memory_bytes, r.job_id) for r in table.rows] == [
        (0, 200, 5e9, ""),
        (0, 100, 1e9, "42"),
        (1, 300, 2e9, "42"),
    ]
    assert table.rows[0].uuid == "GPU-0" and table.rows[0].user == "ada"
    (q,) = [q for q in prom.queries if "process" in q]
    # Filtered by that node (regex-escaped), over two scrape intervals.
    assert 'node=~"gpu\\\\-a\\\\.1"' in q and "[30000ms]" in q


def test_prometheus_no_processes_versus_not_exported():
    assert source(FakeProm([], counted=0)).processes("n") == ProcessTable(node="n")
    hidden = source(FakeProm([], counted=3)).processes("n")
    assert not hidden.available and "counts 3 process" in hidden.note
    silent = source(FakeProm([])).processes("n")
    assert not silent.available and "no process telemetry" in silent.note


def test_dcgm_sites_cannot_list_processes_and_say_so():
    prom = FakeProm([proc(0, 1, 1.0)], schema_metric="DCGM_FI_DEV_GPU_UTIL")
    table = source(prom).processes("n")
    assert not table.available and "dcgm-exporter" in table.note
    assert not any("process" in q for q in prom.queries)
