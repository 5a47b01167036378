"""Plausible GPU processes for the simulator's jobs: what ``nvidia-smi`` would list.

One process per job per GPU by default (a rank of a distributed job, a server, a notebook
kernel), with a PID derived from the job, node and GPU so it stays the same between
polls and between the demo and the simulated exporter, the job's user, a command name
from its workload and the GPU's memory in use. The PIDs look like a busy node's (6-7
digits, below the 64-bit default ``pid_max`` of 4,194,304); nothing ever looks them up in
``/proc``: the simulated backend hands the exporter their name, user and job itself.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from factoryctl.processes import GpuProcessRow, ProcessTable, sort_rows
from factoryctl.sim.workload import Workload

if TYPE_CHECKING:
    from factoryctl.sim.factory import SimFactory
    from factoryctl.sim.jobs import SimJob

PID_BASE = 100_000
PIDS_PER_GPU = 64
PID_SLOTS = 60_000  # PID_BASE + PID_SLOTS * PIDS_PER_GPU < 4,194,304

# /proc/PID/comm as such workloads show it (the kernel truncates comm to 15 characters).
COMMANDS = {
    Workload.TRAINING: "pt_main_thread",  # PyTorch names its main thread so
    Workload.INFERENCE: "vllm",
    Workload.IDLE: "python3",  # a notebook kernel holding a GPU and doing nothing
}


def sim_pid(job_id: str, node: str, gpu: int, rank: int = 0) -> int:
    """The same PID for the same job on the same GPU, every time it is asked."""
    slot = zlib.crc32(f"{job_id}/{node}/{gpu}".encode()) % PID_SLOTS
    return PID_BASE + slot * PIDS_PER_GPU + rank % PIDS_PER_GPU


def command_of(job: SimJob) -> str:
    return COMMANDS.get(job.workload, "python3")


def gpu_processes(
    sim: SimFactory, node: str, index: int, per_gpu: int = 1
) -> tuple[GpuProcessRow, ...]:
    """The processes on one simulated GPU; none on a free, lost or silent one."""
    g = sim.gpu_slot(node, index)
    job = sim.owner[g]
    admin = sim.admin[sim.node_index[node]]
    if job is None or not sim.up[g] or admin.silent:
        return ()
    share = sim.memory_used[g] / per_gpu
    uuid = sim.uuids[g]
    name = command_of(job)
    return tuple(
        GpuProcessRow(
            node=node,
            gpu=index,
            pid=sim_pid(job.job_id, node, index, rank),
            name=name,
            user=job.user,
            job_id=job.job_id,
            memory_bytes=share,
            uuid=uuid,
        )
        for rank in range(per_gpu)
    )


def node_processes(sim: SimFactory, node: str, per_gpu: int = 1) -> ProcessTable:
    rows = [p for index in range(sim.gpn) for p in gpu_processes(sim, node, index, per_gpu)]
    return ProcessTable(node=node, rows=sort_rows(rows))
