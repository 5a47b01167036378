"""Slurm's words into the domain: node and job states, GRES strings and ``scontrol -o``.

Pure functions over text, so unit tests run them on outputs recorded from real clusters
of every generation the lab runs (tests/fixtures/slurm). Slurm's compound node states
collapse onto the operator states of ``factoryctl.model.NodeState``. The JSON outputs
are mapped in ``slurm_json``; the ``scontrol -o`` text here is the fallback for a Slurm
without JSON support.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from datetime import datetime

import hostlist

from factoryctl.model import Allocation, Job, JobState, Node, NodeState
from factoryctl.scheduler.base import Reservation

_BASE = {
    "idle": NodeState.IDLE,
    "allocated": NodeState.ALLOCATED,
    "alloc": NodeState.ALLOCATED,
    "mixed": NodeState.MIXED,
    "completing": NodeState.MIXED,
    "down": NodeState.DOWN,
    "error": NodeState.DOWN,
    "future": NodeState.UNKNOWN,
    "unknown": NodeState.UNKNOWN,
}
_BUSY = {"allocated", "alloc", "mixed", "completing"}


def map_node_state(base: str, flags: Iterable[str]) -> NodeState:
    """``MIXED+DRAIN`` -> DRAINING, ``IDLE+DRAIN`` -> DRAINED, ``DOWN+REBOOT_ISSUED`` ->
    REBOOTING, ``IDLE+MAINTENANCE+RESERVED`` -> MAINT. Order matters: a drained node in a
    maintenance window is drained first (that is what keeps jobs off it)."""
    return _map_node_state(base, tuple(flags))


# A factory has a handful of distinct (state, flags) pairs and GRES strings across its
# 12,500 nodes: each is worked out once per process.
@functools.lru_cache(maxsize=1024)
def _map_node_state(base: str, flags: tuple[str, ...]) -> NodeState:
    base = base.lower().rstrip("*~#!%$@^-")
    flagset = {f.upper() for f in flags}
    if flagset & {"REBOOT_ISSUED", "REBOOT_REQUESTED"}:
        return NodeState.REBOOTING
    if base in ("down", "error"):
        return NodeState.DOWN
    if flagset & {"DRAIN", "DRAINING", "DRAINED", "FAIL"}:
        busy = base in _BUSY or "COMPLETING" in flagset
        return NodeState.DRAINING if busy else NodeState.DRAINED
    if "MAINTENANCE" in flagset or "MAINT" in flagset:
        return NodeState.MAINT
    return _BASE.get(base, NodeState.UNKNOWN)


def split_state(compound: str) -> tuple[str, list[str]]:
    """``IDLE+DRAIN+MAINTENANCE`` -> ("idle", ["DRAIN", "MAINTENANCE"])."""
    base, *flags = compound.split("+")
    return base.lower(), flags


_GRES_COUNT = re.compile(r"^gpu(?::[^:(]+)?:(\d+)")
_GRES_IDX = re.compile(r"IDX:([0-9,\-]+)")


@functools.lru_cache(maxsize=1024)
def gpu_count(gres: str) -> int:
    """``gpu:8``, ``gpu:h100:8(S:0-1)``, ``gpu:2(IDX:0-1)`` -> count; several GRES comma-joined."""
    total = 0
    for part in re.split(r",(?![^(]*\))", gres or ""):
        m = _GRES_COUNT.match(part.strip())
        if m:
            total += int(m.group(1))
    return total


_TRES_TOTAL = re.compile(r"(?:^|,)gres/gpu=(\d+)")
_TRES_GPU = re.compile(r"gres[/:]gpu:(?:[^:,=()]+:)?(\d+)")


def tres_gpus(tres: str) -> int | None:
    """GPUs in a TRES string; None where it names none.

    ``tres_per_node``: ``gres:gpu:2`` (22.05), ``gres/gpu:2`` or ``gres/gpu:h100:2``
    (24.11+), per node. ``tres_alloc_str``: ``...,gres/gpu=4,gres/gpu:h100=4`` for the
    whole job, where the typed entry repeats the untyped total."""
    total = _TRES_TOTAL.search(tres or "")
    if total:
        return int(total.group(1))
    found = _TRES_GPU.findall(tres or "")
    return sum(int(n) for n in found) if found else None


def gpu_indices(gres: str) -> tuple[int, ...]:
    """``gpu:2(IDX:0-1)`` -> (0, 1); ``gpu:3(IDX:0,2-3)`` -> (0, 2, 3)."""
    out: list[int] = []
    for m in _GRES_IDX.finditer(gres or ""):
        for piece in m.group(1).split(","):
            if not piece:
                continue
            lo, _, hi = piece.partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    return tuple(out)


JOB_STATES = {
    "PENDING": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "CONFIGURING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "NODE_FAIL": JobState.NODE_FAIL,
    "TIMEOUT": JobState.TIMEOUT,
    "OUT_OF_MEMORY": JobState.FAILED,
    "BOOT_FAIL": JobState.NODE_FAIL,
    "PREEMPTED": JobState.CANCELLED,
    "DEADLINE": JobState.TIMEOUT,
}


# scontrol -o: "Key=value Key=value ...". Values may hold spaces (OS=, Reason=), so a key
# starts only where a known-shaped "Key=" follows a space. Reason is always last and may
# contain anything, "=" included: everything after " Reason=" belongs to it.
_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=")
_REASON_SUFFIX = re.compile(r"\s*\[[^\[\]@]*@[0-9T:\-]+\]\s*$")


def parse_scontrol_line(line: str, reason_last: bool = True) -> dict[str, str]:
    """One ``scontrol -o`` record. ``reason_last``: node records, whose Reason runs to the
    end of the line (job records have a one-word Reason in the middle)."""
    head, sep, reason = line.partition(" Reason=") if reason_last else (line, "", "")
    fields: dict[str, str] = {}
    matches = list(_KEY.finditer(head))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(head)
        fields[m.group(1)] = head[m.end() : end].strip()
    if sep:
        fields["Reason"] = _REASON_SUFFIX.sub("", reason.rstrip("\n"))
    return fields


def parse_scontrol_records(text: str, reason_last: bool = True) -> list[dict[str, str]]:
    return [parse_scontrol_line(ln, reason_last) for ln in text.splitlines() if "=" in ln]


# ``scontrol -o -d show job`` repeats "Nodes=... CPU_IDs=... Mem=... GRES=..." per node set.
_JOB_DETAIL = re.compile(r"\sNodes=(\S+) CPU_IDs=\S+ Mem=\S+ GRES=(\S*)")


def parse_scontrol_jobs(text: str) -> list[Job]:
    jobs = []
    for line in text.splitlines():
        if not line.startswith("JobId="):
            continue
        f = parse_scontrol_line(line, reason_last=False)
        state = JOB_STATES.get(f.get("JobState", ""), JobState.UNKNOWN)
        allocations = tuple(
            Allocation(node, gpu_indices(gres))
            for m in _JOB_DETAIL.finditer(line)
            for node, gres in ((n, m.group(2)) for n in hostlist.expand_hostlist(m.group(1)))
        )
        start = f.get("StartTime", "")
        jobs.append(
            Job(
                job_id=f["JobId"],
                user=f.get("UserId", "").split("(")[0],
                account="" if f.get("Account") == "(null)" else f.get("Account", ""),
                partition=f.get("Partition", ""),
                name=f.get("JobName", ""),
                state=state,
                start_time=slurm_time(start)
                if state is JobState.RUNNING and start[:1].isdigit()
                else None,
                allocations=allocations,
            )
        )
    return jobs


def parse_scontrol_nodes(text: str) -> list[Node]:
    nodes = []
    for f in parse_scontrol_records(text):
        base, flags = split_state(f.get("State", "unknown"))
        nodes.append(
            Node(
                name=f["NodeName"],
                state=map_node_state(base, flags),
                reason=f.get("Reason", ""),
                partitions=tuple(p for p in f.get("Partitions", "").split(",") if p),
                gpu_count=gpu_count(f.get("Gres", "")),
                # GresUsed is printed with -d only: "gpu:4(IDX:0-3)".
                gpus_allocated=gpu_count(f.get("GresUsed", "")),
                features=tuple(
                    x for x in f.get("AvailableFeatures", "").split(",") if x and x != "(null)"
                ),
            )
        )
    return nodes


def slurm_time(text: str) -> float:
    """Slurm prints local time without a zone (``2026-11-22T10:43:54``)."""
    return datetime.fromisoformat(text).timestamp()


def parse_reservations(text: str) -> list[Reservation]:
    out = []
    for f in parse_scontrol_records(text):
        if "ReservationName" not in f:
            continue
        nodes = f.get("Nodes", "")
        out.append(
            Reservation(
                name=f["ReservationName"],
                nodes=tuple(hostlist.expand_hostlist(nodes)) if nodes and nodes != "(null)" else (),
                start_time=slurm_time(f["StartTime"]),
                end_time=slurm_time(f["EndTime"]),
                flags=tuple(x for x in f.get("Flags", "").split(",") if x),
                users=tuple(x for x in f.get("Users", "").split(",") if x and x != "(null)"),
                state=f.get("State", ""),
            )
        )
    return out
