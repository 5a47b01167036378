"""XID events: a thread-safe tally, and the thread that feeds it from an NVML event set.

dcgm-exporter's XID metric is a last-value gauge, so two XID 79s in a row look like one
and an old XID never clears. We count every event per (GPU, code) instead, and keep the
time of the last one, so ``increase(factoryctl_gpu_xid_errors_total[1h])`` is exact.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from factoryctl.exporter.backend import XidCount
from factoryctl.exporter.nvml_lib import XID_CRITICAL_ERROR_EVENT, Nvml, NvmlError, NvmlTimeout

log = logging.getLogger("factoryctl.exporter")


class XidTally:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[int, dict[int, int]] = {}
        self._last: dict[int, float] = {}

    def record(self, gpu: int, code: int, when: float) -> None:
        with self._lock:
            per_gpu = self._counts.setdefault(gpu, {})
            per_gpu[code] = per_gpu.get(code, 0) + 1
            self._last[gpu] = max(when, self._last.get(gpu, when))

    def snapshot(self) -> dict[int, XidCount]:
        with self._lock:
            return {
                gpu: XidCount(dict(codes), self._last.get(gpu))
                for gpu, codes in self._counts.items()
            }


class XidWatcher(threading.Thread):
    """Blocks in nvmlEventSetWait so an XID is counted the moment the driver raises it,
    not at the next collection; a wait times out every ``wait_ms`` to notice ``stop()``."""

    def __init__(
        self,
        nvml: Nvml,
        handles: Mapping[int, Any],
        tally: XidTally,
        clock: Callable[[], float] = time.time,
        wait_ms: int = 500,
    ) -> None:
        super().__init__(name="factoryctl-xid", daemon=True)
        self.nvml = nvml
        self.handles = dict(handles)
        self.tally = tally
        self.clock = clock
        self.wait_ms = wait_ms
        self.registered: list[int] = []
        self.ready = threading.Event()
        self._stop_event = threading.Event()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)

    def _index_of(self, device: Any) -> int | None:
        for index, handle in self.handles.items():
            if _same_handle(handle, device):
                return index
        try:
            return int(self.nvml.call("nvmlDeviceGetIndex", device))
        except Exception:
            return None

    def run(self) -> None:
        try:
            event_set = self.nvml.call("nvmlEventSetCreate")
        except NvmlError as exc:
            log.warning("XID events unavailable: %s", exc)
            self.ready.set()
            return
        for index, handle in self.handles.items():
            try:
                self.nvml.call(
                    "nvmlDeviceRegisterEvents", handle, XID_CRITICAL_ERROR_EVENT, event_set
                )
                self.registered.append(index)
            except NvmlError as exc:
                log.warning("GPU %d: XID events unavailable: %s", index, exc)
        self.ready.set()
        try:
            while not self._stop_event.is_set() and self.registered:
                try:
                    data = self.nvml.call("nvmlEventSetWait_v2", event_set, self.wait_ms)
                except NvmlTimeout:
                    continue
                except NvmlError:
                    # Counted by Nvml.call; back off so a broken event set cannot spin.
                    self._stop_event.wait(1.0)
                    continue
                gpu = self._index_of(data.device)
                if gpu is not None:
                    self.tally.record(gpu, int(data.eventData), self.clock())
        finally:
            with contextlib.suppress(NvmlError):
                self.nvml.call("nvmlEventSetFree", event_set)


def _same_handle(a: Any, b: Any) -> bool:
    if a is b or a == b:
        return True
    # ctypes pointers compare by identity; compare the addresses they hold instead.
    try:
        import ctypes

        return bool(ctypes.cast(a, ctypes.c_void_p).value == ctypes.cast(b, ctypes.c_void_p).value)
    except Exception:
        return False
