"""One series per GPU process: name from /proc/PID/comm, user, job, NVML's used memory."""

from __future__ import annotations

import shutil

from exporter_fakes import FakeGpu, FakeNvml, make_proc
from prometheus_client import CollectorRegistry

from factoryctl.exporter.attribution import Attributor, JobMapDir, ProcResolver
from factoryctl.exporter.collection import Exporter
from factoryctl.exporter.main import main
from factoryctl.exporter.metrics import SnapshotCollector
from factoryctl.exporter.nvml import Nvml, NvmlBackend
from factoryctl.exporter.simulated import SimBackend
from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.sim.processes import sim_pid

SERIES = "factoryctl_gpu_process_used_memory_bytes"
CG_JOB = "0::/system.slice/slurmstepd.scope/job_77/step_0/user/task_0\n"
CG_PLAIN = "0::/user.slice/user-1000.slice/session-3.scope\n"
USERS = {1000: "ada", 1001: "ben"}


def make(gpus, tmp_path, *, map_dir=None, process_metrics=True, uid=1000):
    fake = FakeNvml(gpus)
    backend = NvmlBackend(Nvml(fake), watch_xids=False, slow_interval=0)
    # Fixture files belong to whoever runs the test: map that uid to a fixed name.
    resolver = ProcResolver(tmp_path / "proc", user_of=lambda u: USERS.get(uid, "?"))
    exporter = Exporter(
        backend, "gpu001", Attributor(map_dir, resolver), process_metrics=process_metrics
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: exporter.snapshot))
    return fake, exporter, registry


def labels(gpu, uuid, pid, name, user, job_id):
    return {
        "node": "gpu001",
        "gpu": str(gpu),
        "uuid": uuid,
        "pid": str(pid),
        "name": name,
        "user": user,
        "job_id": job_id,
    }


def series(registry):
    return [
        s for m in registry.collect() if m.name == SERIES for s in m.samples if s.name == SERIES
    ]


def test_each_process_is_one_series_named_from_proc(tmp_path):
    proc = tmp_path / "proc"
    make_proc(proc, 100, CG_JOB, comm="pt_main_thread")
    make_proc(proc, 101, CG_JOB, comm="pt_data_worker")
    make_proc(proc, 200, CG_PLAIN, comm="stray")  # outside any job
    gpus = [
        FakeGpu("GPU-a", procs=[(100, 30 * 2**30), (101, 2**30)]),
        FakeGpu("GPU-b", procs=[(200, 512 * 2**20)]),
        FakeGpu("GPU-c"),
    ]
    _fake, exporter, reg = make(gpus, tmp_path)
    exporter.collect_once()
    v = reg.get_sample_value
    assert v(SERIES, labels(0, "GPU-a", 100, "pt_main_thread", "ada", "77")) == 30 * 2**30
    assert v(SERIES, labels(0, "GPU-a", 101, "pt_data_worker", "ada", "77")) == 2**30
    assert v(SERIES, labels(1, "GPU-b", 200, "stray", "ada", "")) == 512 * 2**20
    assert len(series(reg)) == 3
    # The per-GPU totals are unchanged beside them.
    g0 = {"node": "gpu001", "gpu": "0", "uuid": "GPU-a"}
    assert v("factoryctl_gpu_processes", g0) == 2
    assert v("factoryctl_gpu_process_memory_bytes", g0) == 31 * 2**30


def test_a_process_that_exited_before_proc_was_read_is_skipped(tmp_path):
    proc = tmp_path / "proc"
    make_proc(proc, 100, CG_JOB, comm="alive")
    gpus = [FakeGpu("GPU-a", procs=[(100, 2**30), (999, 2**30)])]  # 999: no /proc entry
    _fake, exporter, reg = make(gpus, tmp_path)
    snap = exporter.collect_once()
    assert [p.pid for p in snap.processes[0]] == [100]
    assert [s.labels["pid"] for s in series(reg)] == ["100"]
    # Gone from /proc after being cached: the next collection drops it too.
    shutil.rmtree(proc / "100")
    gpus[0].procs = [(100, 2**30)]
    exporter.collect_once()
    assert series(reg)  # still cached while NVML lists the PID: no /proc read per scrape
    gpus[0].procs = []
    exporter.collect_once()
    assert series(reg) == []


def test_unknown_memory_leaves_the_series_absent_not_zero(tmp_path):
    make_proc(tmp_path / "proc", 100, CG_JOB, comm="in_container")
    _fake, exporter, reg = make([FakeGpu("GPU-a", procs=[(100, None)])], tmp_path)
    snap = exporter.collect_once()
    assert snap.processes[0][0].memory_bytes is None
    assert series(reg) == []


def test_a_pid_reused_by_another_command_is_read_afresh(tmp_path):
    proc = tmp_path / "proc"
    make_proc(proc, 100, CG_JOB, comm="first")
    gpus = [FakeGpu("GPU-a", procs=[(100, 2**30)])]
    _fake, exporter, reg = make(gpus, tmp_path)
    exporter.collect_once()
    assert series(reg)[0].labels["name"] == "first"
    gpus[0].procs = []
    exporter.collect_once()
    (proc / "100" / "comm").write_text("second\n")
    gpus[0].procs = [(100, 2**30)]
    exporter.collect_once()
    assert series(reg)[0].labels["name"] == "second"


def test_the_job_map_names_the_job_of_a_process_proc_cannot_place(tmp_path):
    make_proc(tmp_path / "proc", 100, CG_PLAIN, comm="mpi_rank")
    maps = tmp_path / "map"
    maps.mkdir()
    (maps / "0").write_text("31337\n")
    gpus = [FakeGpu("GPU-a", procs=[(100, 2**30)])]
    _fake, exporter, reg = make(gpus, tmp_path, map_dir=JobMapDir(maps))
    exporter.collect_once()
    assert reg.get_sample_value(SERIES, labels(0, "GPU-a", 100, "mpi_rank", "ada", "31337")) == (
        2**30
    )


def test_process_metrics_can_be_turned_off(tmp_path):
    make_proc(tmp_path / "proc", 100, CG_JOB, comm="secret")
    gpus = [FakeGpu("GPU-a", procs=[(100, 2**30)])]
    _fake, exporter, reg = make(gpus, tmp_path, process_metrics=False)
    exporter.collect_once()
    assert series(reg) == []
    g0 = {"node": "gpu001", "gpu": "0", "uuid": "GPU-a"}
    assert reg.get_sample_value("factoryctl_gpu_processes", g0) == 1  # totals stay


def test_the_flag_is_on_the_command_line(capsys):
    assert main(["--help"]) == 0
    assert "--no-process-metrics" in capsys.readouterr().out


def test_simulated_processes_carry_the_jobs_user_and_workload(tmp_path):
    sim = SimFactory(SimConfig(nodes=1, node_names=("n1",), gpus_per_node=2, jobs=False))
    backend = SimBackend(sim, "n1", follow_clock=False, processes_per_gpu=2)
    # A real process that happens to have a simulated PID is never consulted.
    make_proc(tmp_path / "proc", sim_pid("501", "n1", 1, 0), CG_JOB, comm="bash")
    exporter = Exporter(backend, "n1", Attributor(None, ProcResolver(tmp_path / "proc")))
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: exporter.snapshot))
    sim.assign("501", "carol", "n1", [1], Workload.INFERENCE)
    sim.advance(5.0)
    exporter.collect_once(sim.now)
    found = series(reg)
    assert {s.labels["pid"] for s in found} == {str(sim_pid("501", "n1", 1, k)) for k in (0, 1)}
    assert all(s.labels["gpu"] == "1" for s in found)
    assert {(s.labels["name"], s.labels["user"], s.labels["job_id"]) for s in found} == {
        ("vllm", "carol", "501")
    }
    assert sum(s.value for s in found) == sim.memory_used[1] > 0
