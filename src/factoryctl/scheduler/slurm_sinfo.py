"""The node list from grouped ``sinfo -O`` lines, checked against ``scontrol -o show node``.

At 12,500 nodes Slurm's JSON node list is the slow part of every read: ``scontrol
--json show node`` takes 1.2 to 2.3 s on 24.11 (29 MB) and 0.7 s as ``sinfo --json`` on
22.05, before we parse a byte of it. Everything a ``Node`` holds, sinfo prints grouped:
nodes that share every field asked for share one line (``gpu[00005-12500]|gpu|down|
gpu:8|gpu:0|(null)|Unknown|no slurmd (lab)``), a handful of lines in 0.05 to 0.12 s.

sinfo lists nodes per partition, and a node in no partition not at all, so it cannot
say alone which nodes exist. ``scontrol -o show node`` can (one line per node, 6.4 MB
at 12,500 nodes, printed in about 0.1 s); of it we read only the name that starts each
line, its ``Partitions=`` and whether it has a reason. That gives:

* every node, in Slurm's own order (the JSON's order);
* each node's partitions in Slurm's order, which must be the set of the sinfo lines
  that listed it;
* whether a node's reason is the word ``none`` (sinfo prints "none" where there is no
  reason at all; scontrol then prints no ``Reason=``).

Where the two disagree (a node in no partition, hidden from sinfo, or the cluster
changed between the two reads) ``parse_grouped_nodes`` returns None and the caller reads
the JSON list instead: slower, never wrong. A line or a state we cannot read is an error,
never skipped or shown as "unknown". Pure functions over text, as ``slurm_parse``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import hostlist

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Node, NodeState
from factoryctl.scheduler.base import NodeStatus
from factoryctl.scheduler.slurm_parse import gpu_count, map_node_state

# Reason last: the one field that may hold the separator. Timestamp is when the reason was
# set; with SLURM_TIME_FORMAT=%s (set by the caller) it is epoch seconds or "Unknown".
SINFO_NODES_FORMAT = (
    "NodeList:|,PartitionName:|,StateComplete:|,Gres:|,GresUsed:|,Features:|,Timestamp:|,Reason:"
)
SINFO_NODES_ARGV = ("sinfo", "--noheader", "--all", "-O", SINFO_NODES_FORMAT)
SCONTROL_NODES_ARGV = ("scontrol", "-o", "show", "node")
_WHAT = "sinfo -O (grouped node list)"

# Slurm's own tables (src/common/slurm_protocol_defs.c, node_states and node_state_flags,
# 22.05 to 26.05). sinfo's StateComplete prints them lowercased and "+"-joined.
BASE_STATES = frozenset({"down", "idle", "allocated", "error", "mixed", "future", "unknown"})
STATE_FLAGS = frozenset(
    {
        "cloud", "completing", "drain", "dynamic_future", "dynamic_norm", "invalid_reg",
        "fail", "maintenance", "power_down", "power_up", "perfctrs", "powered_down",
        "reboot_requested", "reboot_issued", "reserved", "resume", "not_responding",
        "planned", "powering_up", "powering_down", "blocked",
    }
)  # fmt: skip


def _error(detail: str) -> FactoryctlError:
    return FactoryctlError(f"{_WHAT}: {detail}", ExitStatus.SCHEDULER_ERROR)


@functools.lru_cache(maxsize=1024)  # a factory has a handful of distinct states
def strict_state(compound: str) -> NodeState:
    """``idle+drain+maintenance`` -> DRAINED. A base or flag not in Slurm's tables (a newer
    Slurm's, or a "?" Slurm printed for a bit it does not name) is an error: it could be
    the one flag that keeps jobs off the node."""
    base, *flags = compound.strip().lower().split("+")
    unknown = [x for x in (base, *flags) if x not in BASE_STATES and x not in STATE_FLAGS]
    if base not in BASE_STATES or unknown:
        raise _error(f"node state {compound.strip()!r} not understood ({', '.join(unknown)})")
    return map_node_state(base, [f.upper() for f in flags])


@dataclass(frozen=True, slots=True)
class _Group:
    """One sinfo line's fields but the partition, as a ``Node`` wants them."""

    state: NodeState
    reason: str
    reason_time: float | None
    gpu_count: int
    gpus_allocated: int
    features: tuple[str, ...]


def _group(compound: str, gres: str, used: str, features: str, stamp: str, reason: str) -> _Group:
    if stamp == "Unknown":
        when = None
    elif stamp.isdigit():
        when = float(stamp) if int(stamp) > 0 else None
    else:
        raise _error(f"reason time {stamp!r} is not epoch seconds (SLURM_TIME_FORMAT=%s)")
    return _Group(
        state=strict_state(compound),
        reason="" if reason == "none" else reason,
        reason_time=when,
        gpu_count=gpu_count("" if gres == "(null)" else gres),
        gpus_allocated=gpu_count("" if used == "(null)" else used),
        features=tuple(x for x in features.split(",") if x and x != "(null)"),
    )


def parse_sinfo_groups(text: str) -> tuple[dict[str, _Group], dict[str, list[str]]]:
    """Each listed node's fields, and the partitions of the lines that listed it."""
    groups: dict[str, _Group] = {}
    partitions: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 7)
        if len(parts) != 8 or not parts[0] or not parts[1] or not parts[2]:
            raise _error(f"line not understood: {line[:80]!r}")
        names, partition, compound, gres, used, features, stamp, reason = parts
        group = _group(compound, gres, used, features, stamp.strip(), reason)
        for name in hostlist.expand_hostlist(names.strip()):
            seen = groups.setdefault(name, group)
            if seen != group:  # one node, two partitions, two states: not one snapshot
                raise _error(f"node {name} listed with two different states")
            partitions.setdefault(name, []).append(partition.strip())
    return groups, partitions


_PARTITIONS = re.compile(r" Partitions=(\S*)")


@dataclass(frozen=True, slots=True)
class ScontrolNode:
    """What the node list takes from one ``scontrol -o show node`` line."""

    name: str
    partitions: tuple[str, ...]
    reason_is_none: bool  # its Reason is the word "none", not absent


def parse_scontrol_index(text: str) -> list[ScontrolNode]:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, space, _ = line.partition(" ")
        if not name.startswith("NodeName=") or not space or len(name) <= 9:
            raise FactoryctlError(
                f"scontrol -o show node: line not understood: {line[:80]!r}",
                ExitStatus.SCHEDULER_ERROR,
            )
        m = _PARTITIONS.search(line)
        parts = tuple(p for p in m.group(1).split(",") if p) if m else ()
        none = " Reason=none [" in line or line.endswith(" Reason=none")
        out.append(ScontrolNode(name[9:], parts, none))
    return out


def parse_grouped_nodes(sinfo_text: str, scontrol_text: str) -> list[Node] | None:
    """Every node, in Slurm's order; None where sinfo and scontrol do not list the same
    nodes in the same partitions (see the module's docstring: read the JSON instead)."""
    groups, listed_in = parse_sinfo_groups(sinfo_text)
    index = parse_scontrol_index(scontrol_text)
    if not index:
        raise FactoryctlError("scontrol -o show node listed no nodes", ExitStatus.SCHEDULER_ERROR)
    if len(index) != len(groups):
        return None
    nodes = []
    for entry in index:
        g = groups.get(entry.name)
        if g is None or set(listed_in[entry.name]) != set(entry.partitions):
            return None
        reason = "none" if entry.reason_is_none and not g.reason else g.reason
        nodes.append(
            Node(
                name=entry.name,
                state=g.state,
                reason=reason,
                reason_time=g.reason_time,
                partitions=entry.partitions,
                gpu_count=g.gpu_count,
                gpus_allocated=g.gpus_allocated,
                features=g.features,
            )
        )
    return nodes


# -- states alone, for the console's polls between full reads (``node_cache``) -----------
# The same grouping with the fields that change from poll to poll: a handful of lines.
SINFO_STATES_FORMAT = "NodeList:|,StateComplete:|,GresUsed:|,Reason:"


def parse_sinfo_states(text: str) -> dict[str, NodeStatus]:
    """Each node's state, reason and allocated GPUs from ``SINFO_STATES_FORMAT`` lines
    (``gpu[0005-1000]|down+not_responding|gpu:0|no slurmd``). A line of another shape or
    a state we do not know is an error, never skipped: a node left out would be shown with
    an old state. A reason that is the word "none" reads as no reason here; the cache
    then sees a changed reason and reads the full list, which tells the two apart."""
    out: dict[str, NodeStatus] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 3)
        if len(parts) != 4 or not parts[0] or not parts[1]:
            raise FactoryctlError(
                f"sinfo -O {SINFO_STATES_FORMAT}: line not understood: {line[:80]!r}",
                ExitStatus.SCHEDULER_ERROR,
            )
        names, compound, gres_used, reason = parts
        status = NodeStatus(
            strict_state(compound),
            "" if reason == "none" else reason,
            gpu_count(gres_used.strip()),
        )
        for name in hostlist.expand_hostlist(names.strip()):
            out[name] = status
    return out
