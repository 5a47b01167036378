"""The GPUs a Slurm job's environment names, mapped to this node's GPU indices.

``SLURM_JOB_GPUS`` and ``SLURM_STEP_GPUS`` hold the node's indices in every generation.
From Slurm 25.11 ``CUDA_VISIBLE_DEVICES`` holds GPU UUIDs (``GPU-...``; MIG devices
``MIG-...``); before, indices that ConstrainDevices renumbers from 0 inside the job, which
are therefore not the node's and never used. UUIDs map to indices through the backend's
readings. An entry that names no GPU of this node is returned as unknown: the caller
counts it, nothing is guessed. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from factoryctl.exporter.backend import GpuReading

# Where a Slurm job's environment names its GPUs, most reliable first.
GPU_ENV_KEYS = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")
NO_GPU = frozenset({"NoDevFiles", "none", "void"})  # "no GPU here", not an error


def gpu_entries(env: Mapping[str, str]) -> tuple[str, ...]:
    """The GPUs a job's environment names: indices from SLURM_JOB_GPUS/SLURM_STEP_GPUS,
    UUIDs from any of the three (CUDA_VISIBLE_DEVICES only where they are UUIDs)."""
    out: list[str] = []
    for key in GPU_ENV_KEYS:
        for entry in env.get(key, "").split(","):
            entry = entry.strip()
            if not entry or entry in NO_GPU:
                continue
            if key == "CUDA_VISIBLE_DEVICES" and not entry.upper().startswith(("GPU-", "MIG-")):
                continue  # renumbered inside the job's cgroup: not this node's index
            if entry not in out:
                out.append(entry)
    return tuple(out)


def gpu_indices_of(
    entries: Iterable[str], readings: Sequence[GpuReading]
) -> tuple[set[int], list[str]]:
    """Map entries to this node's GPU indices: (known indices, entries naming nothing here)."""
    indices = {r.index for r in readings}
    by_uuid: dict[str, int] = {}
    for r in readings:
        for uuid in (r.uuid, *r.mig_uuids):
            if uuid:
                by_uuid[uuid.lower()] = r.index
    known: set[int] = set()
    unknown: list[str] = []
    for entry in entries:
        lowered = entry.lower()
        if entry.isdigit():
            index: int | None = int(entry) if int(entry) in indices else None
        elif lowered.startswith("mig-gpu-"):
            # Drivers before R470 name a MIG device by its parent: MIG-GPU-<uuid>/<gi>/<ci>.
            index = by_uuid.get(lowered[len("mig-") :].split("/", 1)[0])
        else:
            index = by_uuid.get(lowered)
        if index is None:
            unknown.append(entry)
        else:
            known.add(index)
    return known, unknown
