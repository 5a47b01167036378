"""The telemetry half of a rollout's health gate: before a node is resumed, the GPUs Slurm
expects on it report to the exporter, and no new XID or uncorrectable ECC error appeared
since its work started.

The baseline is read at the moment the node was drained (its work's start) with that
moment as the query time, and journaled; the gate reads again after ``--check`` and
compares. An explicit query time makes both reads repeatable: a resumed campaign, or a
baseline that could not be read at the time, asks Prometheus about the original instant.

What the counters can say differs by schema (see ``telemetry/metrics.py``):

* native: XID counters per (GPU, code) that start at 0 with the exporter (a reboot resets
  them), the time of each GPU's last XID, and NVML's aggregate uncorrected ECC count;
* dcgm-exporter: ``DCGM_FI_DEV_XID_ERRORS`` is the *last* XID code, not a count (a repeat
  of the same code is invisible), and ``DCGM_FI_DEV_ECC_DBE_VOL_TOTAL`` is volatile (a
  reboot resets it) and off in dcgm-exporter's default counter set.

A counter lower than its baseline was reset (a reboot, a driver reload): what it holds now
is new. A GPU exporting no ECC counter is said to be unchecked, never "clean".

The reader is ``GpuTelemetry`` (the real one: ``telemetry.gpu_health``); this module is
the comparison and the wait, with no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from factoryctl.errors import FactoryctlError

GATE_STEPS = ("gpus", "xid", "ecc")


@dataclass(frozen=True, slots=True)
class Counters:
    """A node's error counters at one instant, keyed by GPU index (as a string)."""

    at: float
    # native: "gpu:code" -> XID count; dcgm: "gpu" -> last XID code (0: none)
    xid: Mapping[str, float] = field(default_factory=dict)
    xid_is_code: bool = False  # dcgm: ``xid`` holds codes, not counts
    xid_time: Mapping[str, float] = field(default_factory=dict)  # gpu -> last XID (epoch s)
    ecc: Mapping[str, float] = field(default_factory=dict)  # gpu -> uncorrectable ECC
    ecc_metric: str = ""  # what was asked for ECC (named when nothing answered)

    def to_record(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "xid": dict(self.xid),
            "xid_is_code": self.xid_is_code,
            "xid_time": dict(self.xid_time),
            "ecc": dict(self.ecc),
            "ecc_metric": self.ecc_metric,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Counters:
        return cls(
            at=float(rec["at"]),
            xid={str(k): float(v) for k, v in dict(rec.get("xid") or {}).items()},
            xid_is_code=bool(rec.get("xid_is_code")),
            xid_time={str(k): float(v) for k, v in dict(rec.get("xid_time") or {}).items()},
            ecc={str(k): float(v) for k, v in dict(rec.get("ecc") or {}).items()},
            ecc_metric=str(rec.get("ecc_metric", "")),
        )


class GpuTelemetry(Protocol):
    """What the gate reads; ``telemetry.gpu_health.PromGpuTelemetry`` reads Prometheus."""

    def describe(self) -> str:
        """Where the readings come from, for the plan (``prometheus:native at URL``)."""
        ...

    def reporting(self, node: str, at: float, since: float) -> frozenset[str]:
        """GPU indices of ``node`` that are up, with a sample newer than ``since``."""
        ...

    def counters(self, node: str, at: float) -> Counters:
        """The node's error counters as of ``at`` (an explicit query time)."""
        ...


def _grown(base: float | None, now: float) -> float:
    """How much a counter grew; a counter below its baseline was reset: all of it is new."""
    if base is None or now < base:
        return now
    return now - base


def new_errors(base: Counters, now: Counters) -> tuple[list[str], list[str], list[str]]:
    """(XID findings, ECC findings, what could not be checked), comparing ``now`` with the
    baseline read at the work's start."""
    xids: list[str] = []
    if base.xid_is_code or now.xid_is_code:
        for gpu, last in sorted(now.xid.items()):
            if last and last != base.xid.get(gpu, 0.0):
                xids.append(f"GPU {gpu} last XID {last:.0f} (was {base.xid.get(gpu, 0.0):.0f})")
    else:
        per_gpu: dict[str, list[str]] = {}
        for key, value in sorted(now.xid.items()):
            grown = _grown(base.xid.get(key), value)
            if grown > 0:
                gpu, _, code = key.partition(":")
                per_gpu.setdefault(gpu, []).append(f"XID {code} x{grown:.0f}")
        for gpu, when in sorted(now.xid_time.items()):
            # The counters reset with the exporter; the last XID's time does not lie.
            if when > base.at and gpu not in per_gpu:
                per_gpu[gpu] = [f"an XID at {when:.0f} (counters reset since)"]
        xids = [f"GPU {gpu}: {', '.join(what)}" for gpu, what in sorted(per_gpu.items())]
    ecc = [
        f"GPU {gpu}: {grown:.0f} new uncorrectable ECC error(s)"
        for gpu, value in sorted(now.ecc.items())
        if (grown := _grown(base.ecc.get(gpu), value)) > 0
    ]
    unchecked = []
    if not now.ecc:
        unchecked.append(f"ECC unchecked: no {now.ecc_metric or 'ECC'} series for this node")
    return xids, ecc, unchecked


@dataclass(frozen=True, slots=True)
class Verdict:
    """The gate's answer for one node now: pending (wait), passed, or failed at a step."""

    passed: bool = False
    step: str = ""  # gpus | xid | ecc when failed
    note: str = ""

    @property
    def pending(self) -> bool:
        return not self.passed and not self.step


@dataclass
class TelemetryGate:
    """The gate of one campaign: its reader and how long a node's GPUs may take to report
    (a rebooted node's exporter needs a scrape or two)."""

    telemetry: GpuTelemetry
    wait: float = 120.0

    def baseline(self, node: str, work_start: float) -> Counters:
        return self.telemetry.counters(node, work_start)

    def evaluate(
        self,
        node: str,
        expected_gpus: int,
        started: float,
        fresh_after: float,
        baseline: Counters | None,
        work_start: float,
        now: float,
    ) -> Verdict:
        """``started``: when the gate began for this node, after its ``--check``. A GPU
        counts once it has a sample scraped after that: the counters read then include
        whatever the work and the check did (an XID in the check's last second is in
        Prometheus only a scrape later). ``fresh_after``: its reboot, if it had one."""
        late = now - started > self.wait
        try:
            up = self.telemetry.reporting(node, now, max(fresh_after, started))
        except FactoryctlError as err:
            if late:
                return Verdict(step="gpus", note=f"cannot read GPU telemetry: {err.message}")
            return Verdict()
        if len(up) < expected_gpus:
            if not late:
                return Verdict()
            return Verdict(
                step="gpus",
                note=(
                    f"{len(up)} of the {expected_gpus} GPU(s) Slurm expects report to the "
                    f"exporter after {self.wait:.0f}s"
                    + (f" (reporting: {','.join(sorted(up, key=_index))})" if up else "")
                ),
            )
        try:
            base = baseline or self.telemetry.counters(node, work_start)
            current = self.telemetry.counters(node, now)
        except FactoryctlError as err:
            if late:
                return Verdict(step="xid", note=f"cannot read GPU error counters: {err.message}")
            return Verdict()
        xids, ecc, unchecked = new_errors(base, current)
        if xids:
            return Verdict(step="xid", note="new since the work started: " + "; ".join(xids))
        if ecc:
            return Verdict(step="ecc", note="new since the work started: " + "; ".join(ecc))
        gpus = (
            f"{len(up)} GPU(s) reporting"
            if expected_gpus
            else "Slurm expects no GPUs here (no gpu Gres)"
        )
        errors = "no new XID" if unchecked else "no new XID or uncorrectable ECC"
        return Verdict(passed=True, note="; ".join([gpus, errors, *unchecked]))


def _index(gpu: str) -> tuple[int, str]:
    return (int(gpu), gpu) if gpu.isdigit() else (1 << 30, gpu)
