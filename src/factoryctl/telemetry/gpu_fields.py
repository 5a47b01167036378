"""Which per-GPU fields each view needs, and the native fields spread over several series."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from factoryctl.telemetry.metrics import NATIVE
from factoryctl.telemetry.prom_detect import gpu_key
from factoryctl.telemetry.results import QueryResult

GpuKey = tuple[str, int]

# Per-GPU fields each view shows (None: all of them).
VIEW_FIELDS: dict[str, frozenset[str]] = {
    "nodes": frozenset({"utilization", "power_watts", "temperature_celsius", "xid_total"}),
    "jobs": frozenset({"utilization", "memory_used_bytes", "power_watts", "idle_seconds"}),
}
MULTI_SERIES = frozenset({"xid_total", "ecc_uncorrected_total", "throttle_reasons"})


def native_multi(
    results: Mapping[str, QueryResult],
    values: dict[GpuKey, dict[str, Any]],
    seen: set[str],
) -> None:
    """Fields the native exporter spreads over several series per GPU (summed server-side)."""
    for name in ("xid_total", "ecc_uncorrected_total"):
        res = results.get(name)
        for s in res.vector if res else ():
            key = gpu_key(NATIVE, s.labels)
            if key in values:
                values[key][name] = s.value
                seen.add(name)
    events = results.get("throttle_reasons")
    reasons: dict[GpuKey, list[str]] = {}
    for s in events.vector if events else ():
        key = gpu_key(NATIVE, s.labels)
        if key in values:
            reasons.setdefault(key, []).append(s.labels.get("reason", "?"))
    for key, names in reasons.items():
        values[key]["throttle_reasons"] = tuple(sorted(names))
    # A GPU with XID counters but no XID yet is 0, not unknown.
    if "xid_total" in seen:
        for v in values.values():
            v.setdefault("xid_total", 0.0)
