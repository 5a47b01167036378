"""A fake NVML library (same function names and error class as nvidia-ml-py), and helpers
for fixture /proc trees. Handles are GPU indices; every call checks the GPU's failure
settings first, the way the real library answers for a lost or limited device."""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml

NOT_SUPPORTED, NO_PERMISSION, TIMEOUT, GPU_IS_LOST, UNKNOWN = 3, 4, 10, 15, 999


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    util_gpu: int = 87  # percent, as NVML reports
    util_mem: int = 41
    mem_used: int = 40 * 1024**3
    mem_total: int = 80 * 1024**3
    power_mw: int = 612_345
    limit_mw: int = 700_000
    energy_mj: int = 123_456_789
    temp: int = 64
    mem_temp: int = 71
    sm_mhz: int = 1980
    mem_mhz: int = 2619
    reasons: int = 0x4 | 0x1  # sw_power_cap + gpu_idle
    ecc: tuple[int, int] = (5, 0)
    remap: tuple[int, int, int, int] = (2, 1, 0, 0)
    replays: int = 3
    procs: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes)
    mig: int = 0
    lost: bool = False
    unsupported: set[str] = field(default_factory=set)
    errors: dict[str, int] = field(default_factory=dict)


class FakeNvml:
    NVMLError = pynvml.NVMLError

    def __init__(self, gpus: list[FakeGpu], init_error: int | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.calls: list[str] = []
        self.events: queue.Queue[tuple[int, int]] = queue.Queue()
        self.initialised = False

    def _gpu(self, handle: int, fn: str) -> FakeGpu:
        self.calls.append(fn)
        gpu = self.gpus[handle]
        if gpu.lost:
            raise pynvml.NVMLError(GPU_IS_LOST)
        if fn in gpu.unsupported:
            raise pynvml.NVMLError(NOT_SUPPORTED)
        if fn in gpu.errors:
            raise pynvml.NVMLError(gpu.errors[fn])
        return gpu

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.159.04"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetIndex(self, handle: int) -> int:
        return handle

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return self.gpus[h].uuid

    def nvmlDeviceGetName(self, h: int) -> str:
        return self._gpu(h, "nvmlDeviceGetName").name

    def nvmlDeviceGetPciInfo(self, h: int) -> Any:
        self._gpu(h, "nvmlDeviceGetPciInfo")
        return SimpleNamespace(busId=f"00000000:{0x18 + h:02X}:00.0".encode())

    def nvmlDeviceGetSerial(self, h: int) -> str:
        self._gpu(h, "nvmlDeviceGetSerial")
        return f"165000000{h}"

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:
        g = self._gpu(h, "nvmlDeviceGetMigMode")
        return [g.mig, g.mig]

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        g = self._gpu(h, "nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=g.util_gpu, memory=g.util_mem)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        g = self._gpu(h, "nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(used=g.mem_used, total=g.mem_total, free=g.mem_total - g.mem_used)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetPowerUsage").power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetEnforcedPowerLimit").limit_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetTotalEnergyConsumption").energy_mj

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        assert sensor == 0
        return self._gpu(h, "nvmlDeviceGetTemperature").temp

    def nvmlDeviceGetFieldValues(self, h: int, ids: list[int]) -> list[Any]:
        g = self._gpu(h, "nvmlDeviceGetFieldValues")
        assert ids == [82]
        return [SimpleNamespace(nvmlReturn=0, valueType=1, value=SimpleNamespace(uiVal=g.mem_temp))]

    def nvmlDeviceGetClockInfo(self, h: int, clock: int) -> int:
        g = self._gpu(h, "nvmlDeviceGetClockInfo")
        return {1: g.sm_mhz, 2: g.mem_mhz}[clock]

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetCurrentClocksEventReasons").reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetCurrentClocksThrottleReasons").reasons

    def nvmlDeviceGetTotalEccErrors(self, h: int, kind: int, counter: int) -> int:
        assert counter == 1  # aggregate
        return self._gpu(h, "nvmlDeviceGetTotalEccErrors").ecc[kind]

    def nvmlDeviceGetRemappedRows(self, h: int) -> tuple[int, int, int, int]:
        return self._gpu(h, "nvmlDeviceGetRemappedRows").remap

    def nvmlDeviceGetPcieReplayCounter(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetPcieReplayCounter").replays

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        g = self._gpu(h, "nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in g.procs]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list[Any]:
        self._gpu(h, "nvmlDeviceGetGraphicsRunningProcesses")
        return []

    # events
    def nvmlEventSetCreate(self) -> str:
        return "event-set"

    def nvmlDeviceRegisterEvents(self, h: int, types: int, event_set: str) -> None:
        self._gpu(h, "nvmlDeviceRegisterEvents")
        assert types == 0x8

    def nvmlEventSetWait_v2(self, event_set: str, timeout_ms: int) -> Any:
        try:
            gpu, xid = self.events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise pynvml.NVMLError(TIMEOUT) from None
        return SimpleNamespace(device=gpu, eventType=0x8, eventData=xid)

    def nvmlEventSetFree(self, event_set: str) -> None:
        pass


def make_proc(
    root: Path,
    pid: int,
    cgroup: str,
    environ: dict[str, str] | None = None,
    uid: int = 0,
    comm: str | None = None,
) -> Path:
    """One fake /proc/PID with a cgroup file and optionally an environ and a comm."""
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cgroup").write_text(cgroup)
    if comm is not None:
        (d / "comm").write_text(comm + "\n")  # the kernel ends comm with a newline
    if environ is not None:
        raw = b"".join(f"{k}={v}".encode() + b"\0" for k, v in environ.items())
        (d / "environ").write_bytes(b"PATH=/usr/bin\0" + raw)
    return d
