"""The backend of ``--allow-no-gpu``: no GPUs, so the exporter serves its self-metrics only.

A node whose driver failed to load still answers scrapes, and its ``up`` stays 1, so an
alert on ``factoryctl_exporter_build_info{backend="none"}`` tells a broken driver apart
from a dead node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from factoryctl.exporter.backend import GpuReading, XidCount


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
