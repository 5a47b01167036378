"""Slurm's JSON into the domain, for every generation from 22.05 on.

One mapping for ``sinfo --json`` (22.05), ``scontrol --json show node|job|reservation``
(23.02 and later), ``squeue --json`` and slurmrestd's bodies: all of them are the
output of one of Slurm's data parsers, and the document's own ``meta`` names which one.

* ``v0.0.36``-``v0.0.38`` (21.08, 22.05): scalars. A node's ``state`` is a string beside
  ``state_flags``; times are integers; features are a comma-joined string.
* ``v0.0.39`` and later (23.02 on; 24.11 is v0.0.42, 25.05 v0.0.43, 26.05 v0.0.45):
  states are lists of flags, times are ``{"set", "infinite", "number"}`` objects, and
  the per-node allocation moved from ``allocated_nodes`` to ``nodes.allocation``.

A parser newer than the ones we know is read with the newest mapping, field by field:
any field that is missing or has a type we do not know is an error that names the Slurm
release, the data parser and the field (exit 12), never a default. An output that we
cannot place at all (no ``meta``, or a grouped ``sinfo`` summary) is an error too.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hostlist

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Allocation, Job, JobState, Node, NodeState
from factoryctl.scheduler.base import Reservation
from factoryctl.scheduler.slurm_parse import (
    JOB_STATES,
    gpu_count,
    gpu_indices,
    map_node_state,
    tres_gpus,
)

# The data parsers whose shapes we have read from a real Slurm (tests/fixtures/slurm).
KNOWN_PARSERS = ("v0.0.38", "v0.0.40", "v0.0.41", "v0.0.42", "v0.0.43", "v0.0.44", "v0.0.45")
_PARSER = re.compile(r"v(\d+)\.(\d+)\.(\d+)")


@functools.lru_cache(maxsize=64)  # asked once per record: 12,500 times per node list
def parser_key(version: str) -> tuple[int, ...]:
    m = _PARSER.search(version)
    return tuple(int(x) for x in m.groups()) if m else ()


class SlurmShapeError(FactoryctlError):
    """Slurm printed something our mapping does not know."""

    status = ExitStatus.SCHEDULER_ERROR


@dataclass(frozen=True, slots=True)
class Shape:
    """Which Slurm and data parser wrote a document, from its own ``meta``."""

    what: str  # the command or endpoint, for messages
    release: str  # "24.11.5", or "" where meta does not say
    parser: str  # "v0.0.42"

    @property
    def legacy(self) -> bool:
        """v0.0.38 and older: scalar states and times."""
        return parser_key(self.parser) < (0, 0, 39)

    def error(self, detail: str) -> SlurmShapeError:
        slurm = f"Slurm {self.release}" if self.release else "Slurm"
        return SlurmShapeError(
            f"{self.what}: output of {slurm} (data parser {self.parser}) not understood: {detail}"
        )


def shape_of(doc: Mapping[str, Any], what: str) -> Shape:
    meta = doc.get("meta")
    if not isinstance(meta, Mapping):
        raise SlurmShapeError(f"{what}: output has no 'meta': not a Slurm JSON shape we know")
    slurm = meta.get("slurm") or meta.get("Slurm") or {}
    release = str(slurm.get("release") or "") if isinstance(slurm, Mapping) else ""
    plugin = meta.get("plugin")
    plugin = plugin if isinstance(plugin, Mapping) else {}
    # 23.02+ name the data parser; 22.05 and older only the OpenAPI plugin of that version.
    for candidate in (plugin.get("data_parser"), plugin.get("type")):
        m = _PARSER.search(str(candidate or ""))
        if m:
            return Shape(what, release, m.group(0))
    raise SlurmShapeError(
        f"{what}: output of Slurm {release or '(unknown release)'} names no data parser in"
        " meta.plugin: not a Slurm JSON shape we know"
    )


def load(text: str, what: str) -> tuple[dict[str, Any], Shape]:
    """The document and its shape; Slurm's own ``errors`` become one-line errors."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise FactoryctlError(
            f"{what} returned invalid JSON: {err}", ExitStatus.SCHEDULER_ERROR
        ) from None
    if not isinstance(doc, dict):
        raise SlurmShapeError(f"{what} returned JSON that is not an object")
    errors = doc.get("errors") or []
    if errors:
        # 22.05 exits 0 with {"errors": [{"error": "Unspecified error"}], "nodes": []} when
        # slurmctld cannot be reached: no data plus an error means we could not read it.
        first = errors[0] if isinstance(errors[0], dict) else {"error": str(errors[0])}
        detail = first.get("description") or first.get("error") or "error"
        empty = not any(doc.get(k) for k in ("nodes", "jobs", "reservations", "sinfo"))
        status = ExitStatus.SCHEDULER_UNREACHABLE if empty else ExitStatus.SCHEDULER_ERROR
        hint = " (is slurmctld reachable?)" if empty else ""
        raise FactoryctlError(f"{what} reported: {detail}{hint}", status)
    return doc, shape_of(doc, what)


class Record:
    """One node, job or reservation, read field by field against its shape."""

    __slots__ = ("data", "kind", "shape")

    def __init__(self, data: Any, shape: Shape, kind: str) -> None:
        # ``type() is dict`` first: what json gives, without the ABC's isinstance (a tenth
        # of mapping 10,000 accounting records went to it).
        if type(data) is not dict and not isinstance(data, Mapping):
            raise shape.error(f"a {kind} record is {type(data).__name__}, not an object")
        self.data, self.shape, self.kind = data, shape, kind

    def _bad(self, key: str, value: Any, want: str) -> SlurmShapeError:
        got = "missing" if value is _MISSING else f"{type(value).__name__} {_short(value)}"
        return self.shape.error(f"{self.kind} field {key!r} is {got}, expected {want}")

    def raw(self, key: str) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            raise self._bad(key, value, "a value")
        return value

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, _MISSING)
        if value is _MISSING and default is not None:
            return default
        if isinstance(value, str):
            return value
        if value is None and default is not None:
            return default
        raise self._bad(key, value, "a string")

    def number(self, key: str) -> int | float:
        value = self.data.get(key, _MISSING)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(key, value, "a number")
        return value

    def time(self, key: str) -> float | None:
        """Epoch seconds; None where Slurm says unset, 0 or infinite."""
        value = self.data.get(key, _MISSING)
        if (type(value) is dict or isinstance(value, Mapping)) and {
            "set",
            "number",
        } <= value.keys():
            if not value["set"] or value.get("infinite"):
                return None
            value = value["number"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(key, value, "a time (integer or {set, infinite, number})")
        return float(value) if value > 0 else None

    def words(self, key: str) -> tuple[str, ...]:
        """A list of strings, or the comma-joined string older parsers print."""
        value = self.data.get(key, _MISSING)
        if value is None:
            return ()
        if isinstance(value, str):
            return tuple(x for x in value.split(",") if x and x != "(null)")
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return tuple(value)
        raise self._bad(key, value, "a list of strings")


_MISSING: Any = object()


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _records(doc: Mapping[str, Any], key: str, shape: Shape) -> list[Any]:
    items = doc.get(key, _MISSING)
    if not isinstance(items, list):
        if key == "nodes" and isinstance(doc.get("sinfo"), list):
            raise shape.error(
                "'sinfo' holds node groups, not nodes (read nodes with scontrol --json show node)"
            )
        got = "missing" if items is _MISSING else type(items).__name__
        raise shape.error(f"top-level {key!r} is {got}, expected a list")
    return items


# -- nodes ------------------------------------------------------------------------------


def node_state(r: Record) -> NodeState:
    if r.shape.legacy:
        return map_node_state(r.text("state"), r.words("state_flags"))
    flags = r.words("state")
    if not flags:
        raise r.shape.error(f"node {r.data.get('name')!r} has an empty 'state'")
    return map_node_state(flags[0], flags[1:])


def map_node(r: Record) -> Node:
    features = r.words("features") if "features" in r.data else ()
    return Node(
        name=r.text("name"),
        state=node_state(r),
        reason=r.text("reason", default=""),
        reason_time=r.time("reason_changed_at") if "reason_changed_at" in r.data else None,
        partitions=r.words("partitions"),
        gpu_count=gpu_count(r.text("gres", default="")),
        gpus_allocated=gpu_count(r.text("gres_used", default="")),
        features=features,
    )


def parse_nodes(text: str, what: str) -> list[Node]:
    doc, shape = load(text, what)
    nodes = [map_node(Record(n, shape, "node")) for n in _records(doc, "nodes", shape)]
    if not nodes:
        # A cluster has nodes: an empty list is an output we do not understand, and an
        # empty table (or "no problems found") would be a lie.
        raise shape.error("it lists no nodes")
    return nodes


# -- jobs -------------------------------------------------------------------------------


def job_state(r: Record) -> JobState:
    flags = (r.text("job_state"),) if r.shape.legacy else r.words("job_state")
    if not flags:
        raise r.shape.error(f"job {r.data.get('job_id')!r} has an empty 'job_state'")
    return JOB_STATES.get(flags[0].upper(), JobState.UNKNOWN)


def job_hosts(r: Record) -> list[str]:
    """The job's nodes in allocation order (the order of ``gres_detail``)."""
    resources = r.data.get("job_resources") or {}
    if not isinstance(resources, Mapping):
        raise r._bad("job_resources", resources, "an object")
    nodes = resources.get("nodes")
    if isinstance(nodes, Mapping):  # v0.0.41+: nodes.allocation[].name
        allocation = nodes.get("allocation") or []
        return [str(a["name"]) for a in allocation if isinstance(a, Mapping) and "name" in a]
    legacy = resources.get("allocated_nodes")  # v0.0.38-v0.0.40
    if isinstance(legacy, list) and legacy:
        return [str(a.get("nodename", "")) for a in legacy if isinstance(a, Mapping)]
    listed = r.text("nodes", default="")
    return list(hostlist.expand_hostlist(listed)) if listed else []


def map_job(r: Record) -> Job:
    state = job_state(r)
    details = r.data.get("gres_detail") or []
    if not isinstance(details, list):
        raise r._bad("gres_detail", details, "a list")
    hosts = job_hosts(r) if state is not JobState.PENDING else []
    # A finished job's GPU indices are gone (``gres_detail: []``): its GPU count still
    # stands in the TRES it asked for (per node) or was allocated (in all).
    per_node = tres_gpus(r.text("tres_per_node", default=""))
    if per_node is None and hosts:
        total = tres_gpus(r.text("tres_alloc_str", default=""))
        per_node = None if total is None else total // len(hosts)
    allocations = tuple(
        Allocation(node, indices) if indices else Allocation(node, (), gpus=per_node)
        for node, indices in (
            (node, gpu_indices(str(details[i])) if i < len(details) else ())
            for i, node in enumerate(hosts)
        )
    )
    user = r.data.get("user_name") or r.data.get("user_id")
    if user is None or user == "":
        raise r._bad("user_name", r.data.get("user_name", _MISSING), "a user")
    start = r.time("start_time")
    end = r.time("end_time")
    return Job(
        job_id=str(r.raw("job_id")),
        user=str(user),
        account=r.text("account", default=""),
        partition=r.text("partition", default=""),
        name=r.text("name", default=""),
        state=state,
        start_time=start if state is not JobState.PENDING else None,
        end_time=end if state.finished else None,
        allocations=allocations,
        admin_comment=r.text("admin_comment", default=""),
    )


def parse_jobs(text: str, what: str) -> list[Job]:
    doc, shape = load(text, what)
    return [map_job(Record(j, shape, "job")) for j in _records(doc, "jobs", shape)]


# -- reservations -----------------------------------------------------------------------


def map_reservation(r: Record) -> Reservation:
    nodes = r.text("node_list", default="")
    start, end = r.time("start_time"), r.time("end_time")
    if start is None or end is None:
        raise r.shape.error(f"reservation {r.data.get('name')!r} has no start or end time")
    return Reservation(
        name=r.text("name"),
        nodes=tuple(hostlist.expand_hostlist(nodes)) if nodes and nodes != "(null)" else (),
        start_time=start,
        end_time=end,
        flags=r.words("flags"),
        users=r.words("users"),
        state="",
    )


def parse_reservations(text: str, what: str) -> list[Reservation]:
    doc, shape = load(text, what)
    items: Sequence[Any] = _records(doc, "reservations", shape)
    return [map_reservation(Record(x, shape, "reservation")) for x in items]
