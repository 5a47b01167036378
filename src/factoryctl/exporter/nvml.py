"""The NVML backend: one ``GpuReading`` per GPU per collection, through ``Nvml``.

Every call goes through ``Nvml.call`` (``nvml_lib``: the one place that calls NVML, where
errors are classified once): a field NVML does not support is absent, a lost GPU reads
``factoryctl_gpu_up 0`` while the others keep reporting, and other failures are counted
in ``factoryctl_exporter_nvml_errors_total{call}``. ``Nvml`` and ``NvmlInitError`` are
re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from factoryctl.exporter.backend import GpuProcess, GpuReading, XidCount
from factoryctl.exporter.nvml_lib import (
    NVML_AGGREGATE_ECC,
    NVML_CLOCK_MEM,
    NVML_CLOCK_SM,
    NVML_FI_DEV_MEMORY_TEMP,
    NVML_MEMORY_ERROR_TYPE_CORRECTED,
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
    NVML_SUCCESS,
    NVML_TEMPERATURE_GPU,
    NVML_VALUE_NOT_AVAILABLE,
    GpuLost,
    NotSupported,
    Nvml,
    NvmlError,
    NvmlInitError,
)
from factoryctl.exporter.xid import XidTally, XidWatcher

# nvmlClocksEventReason* bits -> our `reason` label (nvidia-smi's clocks_event_reasons.*)
CLOCK_EVENT_REASONS: Mapping[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass(slots=True)
class _Identity:
    handle: Any
    uuid: str
    model: str
    pci_bus_id: str
    serial: str


class NvmlBackend:
    """Reads every GPU of the node through ``Nvml``; XID events arrive on their own thread."""

    name = "nvml"

    def __init__(self, nvml: Nvml, watch_xids: bool = True, slow_interval: float = 10.0) -> None:
        self.nvml = nvml
        # MIG mode and the PCIe replay counter cost ~0.4 ms each on an H100, more than all
        # the other per-collection fields together, and change rarely: read them this often.
        self.slow_interval = slow_interval
        self._slow: dict[int, tuple[float, Any, Any]] = {}  # index -> (when, mig, replays)
        nvml.init()
        try:
            self.driver_version = _text(nvml.call("nvmlSystemGetDriverVersion"))
            self.count = int(nvml.call("nvmlDeviceGetCount"))
        except NvmlError as exc:
            raise NvmlInitError(f"NVML failed to list GPUs: {exc}") from exc
        self._ids: dict[int, _Identity] = {}
        for index in range(self.count):
            self._identify(index)
        self.tally = XidTally()
        self.watcher: XidWatcher | None = None
        if watch_xids:
            handles = {i: ident.handle for i, ident in self._ids.items()}
            self.watcher = XidWatcher(nvml, handles, self.tally)
            self.watcher.start()

    def _identify(self, index: int) -> _Identity | None:
        """Static identity, read once; retried each collection for a GPU lost at start."""
        if index in self._ids:
            return self._ids[index]
        nvml = self.nvml
        try:
            handle = nvml.call("nvmlDeviceGetHandleByIndex", index)
            uuid = _text(nvml.call("nvmlDeviceGetUUID", handle))
        except NvmlError:
            return None
        ident = _Identity(handle, uuid, "", "", "")
        ident.model = self._opt(_text, "nvmlDeviceGetName", handle) or ""
        pci = self._opt(None, "nvmlDeviceGetPciInfo", handle)
        ident.pci_bus_id = _text(pci.busId) if pci is not None else ""
        ident.serial = self._opt(_text, "nvmlDeviceGetSerial", handle) or ""
        self._ids[index] = ident
        return ident

    def _opt(self, conv: Any, fn: str, *args: Any) -> Any:
        """A call whose failure leaves the field absent; a lost GPU still propagates."""
        try:
            value = self.nvml.call(fn, *args)
        except GpuLost:
            raise
        except NvmlError:
            return None
        return value if conv is None else conv(value)

    def read(self, now: float) -> Sequence[GpuReading]:
        out = []
        for index in range(self.count):
            ident = self._identify(index)
            if ident is None:
                out.append(GpuReading(index=index, uuid="", up=False))
                continue
            try:
                out.append(self._read_one(index, ident))
            except GpuLost:
                out.append(GpuReading(index=index, uuid=ident.uuid, up=False))
        return out

    def _read_one(self, index: int, ident: _Identity) -> GpuReading:
        h, opt = ident.handle, self._opt
        util = opt(None, "nvmlDeviceGetUtilizationRates", h)
        mem = opt(None, "nvmlDeviceGetMemoryInfo", h)
        mig, replays = self._slow_fields(index, h)
        remap = opt(None, "nvmlDeviceGetRemappedRows", h)
        return GpuReading(
            index=index,
            uuid=ident.uuid,
            model=ident.model,
            driver_version=self.driver_version,
            pci_bus_id=ident.pci_bus_id,
            serial=ident.serial,
            mig_mode="" if mig is None else ("enabled" if mig[0] else "disabled"),
            utilization=None if util is None else util.gpu / 100.0,
            memory_bandwidth_utilization=None if util is None else util.memory / 100.0,
            memory_used_bytes=None if mem is None else float(mem.used),
            memory_total_bytes=None if mem is None else float(mem.total),
            power_watts=opt(_milli, "nvmlDeviceGetPowerUsage", h),
            power_limit_watts=opt(_milli, "nvmlDeviceGetEnforcedPowerLimit", h),
            temperature_celsius=opt(float, "nvmlDeviceGetTemperature", h, NVML_TEMPERATURE_GPU),
            memory_temperature_celsius=self._memory_temperature(h),
            sm_clock_hz=opt(_mega, "nvmlDeviceGetClockInfo", h, NVML_CLOCK_SM),
            memory_clock_hz=opt(_mega, "nvmlDeviceGetClockInfo", h, NVML_CLOCK_MEM),
            clock_events=self._clock_events(h),
            ecc_corrected=opt(
                float,
                "nvmlDeviceGetTotalEccErrors",
                h,
                NVML_MEMORY_ERROR_TYPE_CORRECTED,
                NVML_AGGREGATE_ECC,
            ),
            ecc_uncorrected=opt(
                float,
                "nvmlDeviceGetTotalEccErrors",
                h,
                NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                NVML_AGGREGATE_ECC,
            ),
            remapped_rows_correctable=None if remap is None else float(remap[0]),
            remapped_rows_uncorrectable=None if remap is None else float(remap[1]),
            row_remap_failure=None if remap is None else bool(remap[3]),
            pcie_replays=replays,
            processes=self._processes(h),
        )

    def _slow_fields(self, index: int, h: Any) -> tuple[Any, float | None]:
        now = time.monotonic()
        cached = self._slow.get(index)
        if cached is not None and now - cached[0] < self.slow_interval:
            return cached[1], cached[2]
        mig = self._opt(None, "nvmlDeviceGetMigMode", h)
        replays = self._opt(float, "nvmlDeviceGetPcieReplayCounter", h)
        self._slow[index] = (now, mig, replays)
        return mig, replays

    def read_energy(self, indices: Sequence[int]) -> Mapping[int, float]:
        out: dict[int, float] = {}
        for index in indices:
            ident = self._ids.get(index)
            if ident is None:
                continue
            try:
                joules = self._opt(_milli, "nvmlDeviceGetTotalEnergyConsumption", ident.handle)
            except GpuLost:
                continue  # the next read() reports it down
            if joules is not None:
                out[index] = joules
        return out

    def _memory_temperature(self, h: Any) -> float | None:
        values = self._opt(None, "nvmlDeviceGetFieldValues", h, [NVML_FI_DEV_MEMORY_TEMP])
        if not values or values[0].nvmlReturn != NVML_SUCCESS:
            return None
        v = values[0]
        # valueType: 0 double, 1 uint, 2 ulong, 3 ulonglong, 4 slonglong, 5 sint
        attr = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal")[int(v.valueType)]
        temp = float(getattr(v.value, attr))
        # GPUs without an HBM sensor answer 0 rather than NOT_SUPPORTED.
        return temp if temp > 0 else None

    def _clock_events(self, h: Any) -> dict[str, bool] | None:
        try:
            mask = self.nvml.call("nvmlDeviceGetCurrentClocksEventReasons", h)
        except NotSupported:  # drivers before 535 only have the "throttle" spelling
            mask = self._opt(None, "nvmlDeviceGetCurrentClocksThrottleReasons", h)
        except GpuLost:
            raise
        except NvmlError:
            return None
        if mask is None:
            return None
        return {name: bool(int(mask) & bit) for bit, name in CLOCK_EVENT_REASONS.items()}

    def _processes(self, h: Any) -> tuple[GpuProcess, ...] | None:
        compute = self._opt(None, "nvmlDeviceGetComputeRunningProcesses", h)
        graphics = self._opt(None, "nvmlDeviceGetGraphicsRunningProcesses", h)
        if compute is None and graphics is None:
            return None
        seen: dict[int, GpuProcess] = {}
        for proc in [*(compute or ()), *(graphics or ())]:
            used = getattr(proc, "usedGpuMemory", None)
            used_f = None if used is None or used == NVML_VALUE_NOT_AVAILABLE else float(used)
            pid = int(proc.pid)
            if pid not in seen:
                seen[pid] = GpuProcess(pid, used_f)
        return tuple(seen.values())

    def xids(self) -> Mapping[int, XidCount]:
        return self.tally.snapshot()

    def error_counts(self) -> Mapping[str, int]:
        return self.nvml.errors()

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.nvml.shutdown()


def _milli(value: Any) -> float:
    return float(value) / 1000.0  # mW -> W, mJ -> J


def _mega(value: Any) -> float:
    return float(value) * 1e6  # MHz -> Hz


__all__ = ["Nvml", "NvmlBackend", "NvmlInitError"]
