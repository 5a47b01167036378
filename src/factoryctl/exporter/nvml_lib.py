"""The NVML library binding: every call, its error classes and its failure counts.

``Nvml.call`` classifies errors once:

- ``NOT_SUPPORTED`` / ``FUNCTION_NOT_FOUND`` (or a binding too old to have the function):
  the field is absent from the exposition, not an error.
- ``GPU_IS_LOST`` and ``UNKNOWN``: that GPU is reported ``factoryctl_gpu_up 0`` for this
  collection; the other GPUs keep reporting.
- anything else (``NO_PERMISSION``, ``TIMEOUT`` ...): the field is absent and the failure is
  counted in ``factoryctl_exporter_nvml_errors_total{call}``.

The numeric NVML constants are part of NVML's stable C ABI; they are spelled out here so
the fake NVML of the unit tests needs only functions. Its own module, below both the
backend (``nvml``) and the XID watcher (``xid``), which each use it.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections import Counter
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_AGGREGATE_ECC = 1  # lifetime counts: they survive driver reloads, unlike VOLATILE
NVML_FI_DEV_MEMORY_TEMP = 82
NVML_VALUE_NOT_AVAILABLE = 2**64 - 1  # usedGpuMemory when the driver cannot say
XID_CRITICAL_ERROR_EVENT = 0x8  # nvmlEventTypeXidCriticalError

_UNSUPPORTED = {NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_FUNCTION_NOT_FOUND}
_LOST = {NVML_ERROR_GPU_IS_LOST, NVML_ERROR_UNKNOWN}


class NvmlError(Exception):
    def __init__(self, call: str, code: int | None, text: str = "") -> None:
        super().__init__(f"{call}: {text or code}")
        self.call = call
        self.code = code


class NotSupported(NvmlError):
    pass


class GpuLost(NvmlError):
    pass


class NvmlTimeout(NvmlError):
    pass


class NvmlInitError(Exception):
    """NVML could not start: no driver, no library, no permission."""


class Nvml:
    """Mediates every NVML call and counts failures by call name (thread-safe)."""

    def __init__(self, lib: Any | None = None) -> None:
        self._lib = lib
        self._errors: Counter[str] = Counter()
        self._lock = threading.Lock()

    def init(self) -> None:
        if self._lib is None:
            try:
                self._lib = importlib.import_module("pynvml")
            except ImportError as exc:
                raise NvmlInitError(f"the NVML Python binding is missing ({exc})") from exc
        try:
            self._lib.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, NoPermission...
            raise NvmlInitError(f"NVML failed to initialise: {exc}") from exc

    def shutdown(self) -> None:
        with contextlib.suppress(NvmlError):
            self.call("nvmlShutdown")

    def call(self, fn: str, *args: Any) -> Any:
        lib: Any = self._lib
        func = getattr(lib, fn, None)
        if func is None:  # nvidia-ml-py older than the function
            raise NotSupported(fn, None, "not in this NVML binding")
        try:
            return func(*args)
        except lib.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code in _UNSUPPORTED:
                raise NotSupported(fn, code, str(exc)) from None
            if code == NVML_ERROR_TIMEOUT and fn.startswith("nvmlEventSetWait"):
                raise NvmlTimeout(fn, code, str(exc)) from None
            with self._lock:
                self._errors[fn] += 1
            if code in _LOST:
                raise GpuLost(fn, code, str(exc)) from None
            raise NvmlError(fn, code, str(exc)) from None

    def errors(self) -> dict[str, int]:
        with self._lock:
            return dict(self._errors)
