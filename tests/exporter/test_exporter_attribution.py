"""GPU -> job attribution from fixture /proc trees and job-map directories."""

from __future__ import annotations

import logging

import pytest
from exporter_fakes import make_proc

from factoryctl.errors import ConfigError
from factoryctl.exporter.attribution import (
    Attributor,
    JobMapDir,
    ProcResolver,
    job_from_cgroup,
    parse_map_file,
)
from factoryctl.exporter.backend import GpuProcess, GpuReading, JobRef

CG_V1 = (
    "12:memory:/slurm/uid_1000/job_4242/step_0/task_0\n"
    "11:devices:/slurm/uid_1000/job_4242/step_0\n"
    "1:name=systemd:/system.slice/slurmd.service\n"
)
CG_V2 = "0::/system.slice/slurmstepd.scope/job_77/step_batch/user/task_0\n"
CG_K8S = (
    "0::/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod3f1b2c4d_5e6f_4a7b_8c9d_0e1f2a3b4c5d.slice/cri-containerd-ab12.scope\n"
)
CG_K8S_V1 = "9:cpu:/kubepods/besteffort/pod3f1b2c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d/ab12\n"
CG_PLAIN = "0::/user.slice/user-1000.slice/session-3.scope\n"


@pytest.mark.parametrize(
    ("text", "job"),
    [
        (CG_V1, "4242"),
        (CG_V2, "77"),
        (CG_K8S, "3f1b2c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"),
        (CG_K8S_V1, "3f1b2c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"),
        (CG_PLAIN, None),
        ("0::/system.slice/job_runner.service\n", None),
    ],
)
def test_job_from_cgroup(text, job):
    assert job_from_cgroup(text) == job


def reading(index: int, pids: list[int]) -> GpuReading:
    return GpuReading(
        index=index, uuid=f"GPU-{index}", processes=tuple(GpuProcess(p) for p in pids)
    )


def test_proc_sources_in_order(tmp_path):
    proc = tmp_path / "proc"
    make_proc(proc, 100, CG_V1, {"SLURM_JOB_ID": "999", "SLURM_JOB_USER": "ada"})
    make_proc(proc, 200, CG_PLAIN, {"SLURM_JOB_ID": "555", "SLURM_JOB_USER": "ben"})
    make_proc(proc, 300, CG_PLAIN)  # no job at all: a stray process
    make_proc(proc, 400, CG_V2, uid=0)
    attr = Attributor(None, ProcResolver(proc, user_of=lambda uid: f"uid{uid}"))
    out = attr.attribute(
        [reading(0, [100]), reading(1, [200]), reading(2, [300]), reading(3, [400])]
    )
    # cgroup beats environ; environ fills in when the cgroup has no job
    assert out[0] == (JobRef("4242", "ada"),)
    assert out[1] == (JobRef("555", "ben"),)
    assert out[2] == ()
    assert out[3] == (JobRef("77", "uid0"),)


def test_a_process_that_exited_is_not_an_error(tmp_path):
    proc = tmp_path / "proc"
    make_proc(proc, 100, CG_V2)
    attr = Attributor(None, ProcResolver(proc, user_of=str))
    out = attr.attribute([reading(0, [100, 31337])])  # 31337 exited before we looked
    assert out[0] == (JobRef("77", "0"),)


def test_pid_cache_is_dropped_when_the_pid_leaves(tmp_path):
    proc = tmp_path / "proc"
    d = make_proc(proc, 100, CG_V2)
    resolver = ProcResolver(proc, user_of=str)
    attr = Attributor(None, resolver)
    assert attr.attribute([reading(0, [100])])[0][0].job_id == "77"
    attr.attribute([reading(0, [])])  # PID gone from the GPU
    (d / "cgroup").write_text(CG_V1)  # ...and reused by another job's process
    assert attr.attribute([reading(0, [100])])[0][0].job_id == "4242"


def test_map_dir_wins_and_users_come_from_processes(tmp_path):
    proc = tmp_path / "proc"
    make_proc(proc, 100, CG_V2, {"SLURM_JOB_USER": "ada"})
    maps = tmp_path / "map"
    maps.mkdir()
    (maps / "0").write_text("77\n")
    (maps / "1").write_text("81\n82\n")  # shared GPU (MPS / oversubscribe)
    (maps / ".1.tmp").write_text("junk that is not a GPU file")
    attr = Attributor(JobMapDir(maps), ProcResolver(proc, user_of=str))
    out = attr.attribute([reading(0, [100]), reading(1, []), reading(2, [100])])
    assert out[0] == (JobRef("77", "ada"),)
    assert out[1] == (JobRef("81", ""), JobRef("82", ""))
    assert out[2] == (JobRef("77", "ada"),)  # no map file: falls back to /proc


def test_map_file_garbage_lines(tmp_path):
    ids, bad = parse_map_file("123\n\n# comment\n123_4\nrm: cannot remove\n9+1\n", "f")
    assert ids == ["123", "123_4", "9+1"]
    assert bad == ["f:5: not a job id: 'rm: cannot remove'"]
    maps = tmp_path / "map"
    maps.mkdir()
    (maps / "3").write_text("12\n$(reboot)\n")
    with pytest.raises(ConfigError, match=r"3:2: not a job id"):
        JobMapDir(maps).validate()


def test_garbage_at_runtime_is_logged_once_and_ignored(tmp_path, caplog):
    maps = tmp_path / "map"
    maps.mkdir()
    (maps / "0").write_text("12\n\x00\x01bin\n")
    mapdir = JobMapDir(maps)
    with caplog.at_level(logging.WARNING, "factoryctl.exporter"):
        for _ in range(3):
            assert mapdir.read() == {0: ("12",)}
    assert len([r for r in caplog.records if "not a job id" in r.message]) == 1
    assert mapdir.errors == 3


def test_unreadable_map_dir_falls_back_to_proc_and_logs_once(tmp_path, caplog):
    proc = tmp_path / "proc"
    make_proc(proc, 100, CG_V1)
    attr = Attributor(JobMapDir(tmp_path / "missing"), ProcResolver(proc, user_of=str))
    with caplog.at_level(logging.WARNING, "factoryctl.exporter"):
        for _ in range(3):
            assert attr.attribute([reading(0, [100])])[0] == (JobRef("4242", "0"),)
    assert len([r for r in caplog.records if "unreadable" in r.message]) == 1


def test_backend_known_jobs_are_used_without_proc(tmp_path):
    attr = Attributor(None, ProcResolver(tmp_path / "nothing"))
    r = GpuReading(index=0, uuid="u", processes=(GpuProcess(5),), jobs=(JobRef("9", "eve"),))
    assert attr.attribute([r])[0] == (JobRef("9", "eve"),)
    assert attr.attribute([GpuReading(index=1, uuid="v", up=False)]) == {}


# -- the GPUs a job's environment names (SLURM_JOB_GPUS, Slurm 25.11+ UUIDs) --------------

U = [f"GPU-{i:08x}-1111-2222-3333-44445555666{i}" for i in range(4)]


def uuid_reading(index: int, pids: list[int], up: bool = True, mig=()) -> GpuReading:
    return GpuReading(
        index=index,
        uuid=U[index],
        up=up,
        mig_uuids=tuple(mig),
        processes=tuple(GpuProcess(p) for p in pids) if up else None,
    )


def _job_env(**gpus: str) -> dict[str, str]:
    return {"SLURM_JOB_ID": "77", "SLURM_JOB_USER": "ada", **gpus}


def test_gpu_entries_from_the_job_environment():
    from factoryctl.exporter.job_env import gpu_entries

    assert gpu_entries({"SLURM_JOB_GPUS": "0,2", "CUDA_VISIBLE_DEVICES": "0,1"}) == ("0", "2")
    assert gpu_entries({"SLURM_STEP_GPUS": "3", "CUDA_VISIBLE_DEVICES": U[1]}) == ("3", U[1])
    assert gpu_entries({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}) == ()


@pytest.mark.parametrize(
    "env",
    [
        _job_env(SLURM_JOB_GPUS="1,3"),  # indices (every Slurm generation)
        _job_env(CUDA_VISIBLE_DEVICES=f"{U[1]},{U[3].upper()}"),  # Slurm 25.11+: UUIDs
        _job_env(SLURM_STEP_GPUS="1", CUDA_VISIBLE_DEVICES=f"{U[3]}"),
        # Renumbered inside the job's cgroup (0,1): never read as the node's 0 and 1.
        _job_env(SLURM_JOB_GPUS="1,3", CUDA_VISIBLE_DEVICES="0,1"),
    ],
)
def test_a_job_holds_the_gpus_its_environment_names(tmp_path, env):
    """Job 77 runs a process on GPU 1 only; GPU 3 is its too (idle inside the job)."""
    proc = tmp_path / "proc"
    make_proc(proc, 100, CG_V2, env)
    attr = Attributor(None, ProcResolver(proc, user_of=str))
    out = attr.attribute([uuid_reading(i, [100] if i == 1 else []) for i in range(4)])
    assert out == {0: (), 1: (JobRef("77", "ada"),), 2: (), 3: (JobRef("77", "ada"),)}
    assert attr.errors == 0


def test_mig_devices_map_to_their_gpu(tmp_path):
    proc = tmp_path / "proc"
    mig = "MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    # A MIG device the backend lists under GPU 2, and the old parent-named form of GPU 0.
    make_proc(proc, 100, CG_V2, _job_env(CUDA_VISIBLE_DEVICES=f"{mig},MIG-{U[0]}/1/0"))
    attr = Attributor(None, ProcResolver(proc, user_of=str))
    readings = [uuid_reading(0, []), uuid_reading(1, []), uuid_reading(2, [100], mig=[mig])]
    out = attr.attribute(readings)
    assert out[0] == out[2] == (JobRef("77", "ada"),) and out[1] == ()
    assert attr.errors == 0


def test_unknown_entries_count_as_errors_and_the_known_still_attribute(tmp_path, caplog):
    proc = tmp_path / "proc"
    stranger = "GPU-ffffffff-0000-0000-0000-000000000000"
    make_proc(proc, 100, CG_V2, _job_env(CUDA_VISIBLE_DEVICES=f"{U[2]},{stranger}"))
    make_proc(proc, 200, CG_V2, _job_env(SLURM_JOB_GPUS="2,9"))  # no GPU 9 here
    attr = Attributor(None, ProcResolver(proc, user_of=str))
    readings = [uuid_reading(0, [100, 200]), uuid_reading(1, []), uuid_reading(2, [])]
    with caplog.at_level(logging.WARNING, "factoryctl.exporter"):
        for _ in range(3):
            out = attr.attribute(readings)
    assert out[0] == out[2] == (JobRef("77", "ada"),) and out[1] == ()  # never guessed
    assert attr.errors == 2  # once per process, not per collection
    warned = [r.message for r in caplog.records]
    assert len(warned) == 2 and any(stranger in m for m in warned)


def test_a_lost_gpu_is_held_by_the_job_whose_environment_names_it(tmp_path):
    """XID 79: NVML lists no process on GPU 1, but the job still holds it."""
    proc = tmp_path / "proc"
    make_proc(proc, 100, CG_V2, _job_env(SLURM_JOB_GPUS="0,1"))
    attr = Attributor(None, ProcResolver(proc, user_of=str))
    out = attr.attribute([uuid_reading(0, [100]), uuid_reading(1, [], up=False)])
    assert out[1] == (JobRef("77", "ada"),)


def test_another_jobs_environment_names_no_gpu(tmp_path):
    """The cgroup says job 4242, the environ job 999 (a process moved between cgroups):
    the environ's GPUs are not job 4242's."""
    proc = tmp_path / "proc"
    make_proc(proc, 100, CG_V1, {"SLURM_JOB_ID": "999", "SLURM_JOB_GPUS": "1"})
    attr = Attributor(None, ProcResolver(proc, user_of=str))
    out = attr.attribute([uuid_reading(0, [100]), uuid_reading(1, [])])
    assert out[0][0].job_id == "4242" and out[1] == ()
