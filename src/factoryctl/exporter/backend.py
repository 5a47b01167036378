"""What a GPU backend hands the exporter, and the small protocol every backend follows.

A backend turns one collection into immutable ``GpuReading`` values in base units (W, J,
bytes, Hz, 0-1 ratios). The energy counter has its own call, ``read_energy``: on an H100 it
costs ~4 ms of CPU per GPU (every other field together well under 1 ms), so the exporter
reads it when a GPU's owner changes and otherwise every ``--energy-interval``. A field the device does not support is ``None`` and its series is
simply absent; a GPU that NVML reports lost has ``up=False`` and nothing else. The
exporter never asks a backend anything while a scrape is being served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class GpuProcess:
    pid: int
    memory_bytes: float | None = None  # None: NVML could not say (e.g. inside a container)
    # What a backend knows without /proc (the simulator: its PIDs exist nowhere). None:
    # read /proc/PID/comm and the owner's uid (``exporter.processes``).
    name: str | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True)
class JobRef:
    """A job that holds a GPU, as a backend or an attribution source saw it."""

    job_id: str
    user: str = ""


@dataclass(frozen=True, slots=True)
class GpuReading:
    index: int
    uuid: str
    up: bool = True
    # Identity (GPU_INFO labels)
    model: str = ""
    driver_version: str = ""
    pci_bus_id: str = ""
    serial: str = ""
    mig_mode: str = ""  # "enabled" / "disabled" / "" when unsupported
    # Its MIG devices' UUIDs (``MIG-...``), where the backend lists them: a job's
    # CUDA_VISIBLE_DEVICES may name those instead of the GPU's own UUID.
    mig_uuids: tuple[str, ...] = ()
    # Activity and memory
    utilization: float | None = None
    memory_bandwidth_utilization: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    # Power (energy is read separately, by read_energy: it is the expensive call)
    power_watts: float | None = None
    power_limit_watts: float | None = None
    # Thermals and clocks
    temperature_celsius: float | None = None
    memory_temperature_celsius: float | None = None
    sm_clock_hz: float | None = None
    memory_clock_hz: float | None = None
    clock_events: Mapping[str, bool] | None = None  # reason -> active
    # Errors (device counters; monotonic over a driver lifetime)
    ecc_corrected: float | None = None
    ecc_uncorrected: float | None = None
    remapped_rows_correctable: float | None = None
    remapped_rows_uncorrectable: float | None = None
    row_remap_failure: bool | None = None
    pcie_replays: float | None = None
    # Processes and, for backends that know them directly (the simulator), the jobs
    processes: tuple[GpuProcess, ...] | None = None
    jobs: tuple[JobRef, ...] | None = None


@dataclass(frozen=True, slots=True)
class XidCount:
    """XID events seen on one GPU since the exporter started."""

    counts: Mapping[int, int] = field(default_factory=dict)  # xid code -> events
    last_time: float | None = None  # unix seconds of the most recent one


class Backend(Protocol):
    """A source of GPU readings: NVML on a real node, the simulator everywhere else."""

    @property
    def name(self) -> str:
        """ "nvml", "simulated" or "none": the build-info label."""
        ...

    def read(self, now: float) -> Sequence[GpuReading]:
        """One collection. Must not raise for a single bad GPU: mark it down instead."""
        ...

    def read_energy(self, indices: Sequence[int]) -> Mapping[int, float]:
        """The raw energy counters (J, may reset) of these GPUs; unsupported ones absent."""
        ...

    def xids(self) -> Mapping[int, XidCount]:
        """XID tallies by GPU index (fed from the backend's own event thread)."""
        ...

    def error_counts(self) -> Mapping[str, int]:
        """Failed calls by name (NVML function), for the self-metrics."""
        ...

    def close(self) -> None: ...
