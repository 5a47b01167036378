"""The backend of ``--allow-no-gpu``: no GPUs yet, so the exporter serves its self-metrics.

A node whose driver failed to load still answers scrapes, and its ``up`` stays 1, so an
alert on ``factoryctl_exporter_build_info{backend="none"}`` tells a broken driver apart
from a dead node. ``WaitingForNvml`` retries NVML every minute and switches to the real
backend once it starts (driver reinstalled, module loaded late), without a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from factoryctl.exporter.backend import Backend, GpuReading, XidCount

log = logging.getLogger("factoryctl.exporter")


class NullBackend:
    name = "none"

    def read(self, now: float) -> Sequence[GpuReading]:
        return ()

    def read_energy(self, indices: Sequence[int]) -> Mapping[int, float]:
        return {}

    def xids(self) -> Mapping[int, XidCount]:
        return {}

    def error_counts(self) -> Mapping[str, int]:
        return {}

    def close(self) -> None:
        pass


class WaitingForNvml:
    """Serves nothing until ``opener`` succeeds, then delegates to what it opened."""

    def __init__(
        self,
        opener: Callable[[], Backend],
        retry_seconds: float = 60.0,
        last_try: float | None = None,
    ) -> None:
        self.opener = opener
        self.retry_seconds = retry_seconds
        self.inner: Backend = NullBackend()
        self._last_try = last_try

    @property
    def name(self) -> str:
        return self.inner.name

    def read(self, now: float) -> Sequence[GpuReading]:
        if isinstance(self.inner, NullBackend) and (
            self._last_try is None or now - self._last_try >= self.retry_seconds
        ):
            self._last_try = now
            try:
                self.inner = self.opener()
            except Exception as exc:
                log.debug("NVML still unavailable: %s", exc)
            else:
                log.info("NVML started; serving GPUs from now on")
        return self.inner.read(now)

    def read_energy(self, indices: Sequence[int]) -> Mapping[int, float]:
        return self.inner.read_energy(indices)

    def xids(self) -> Mapping[int, XidCount]:
        return self.inner.xids()

    def error_counts(self) -> Mapping[str, int]:
        return self.inner.error_counts()

    def close(self) -> None:
        self.inner.close()
