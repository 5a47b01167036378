"""The last gate before a production scheduler: node names, reasons, reservation names
and users, job ids, checked here as well as by the caller (``slurm_cli``, ``slurmrestd``,
the demo scheduler and the actions all take them from here)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from factoryctl import hostlists
from factoryctl.errors import UsageError

MAX_REASON = 512
_RESERVATION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")


def validate_reason(reason: str) -> str:
    text = reason.strip()
    if not text:
        raise UsageError("a reason is required and may not be empty")
    if len(text) > MAX_REASON:
        raise UsageError(f"reason is longer than {MAX_REASON} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise UsageError("reason may not contain control characters (newlines, tabs)")
    return text


def validate_nodes(nodes: Sequence[str]) -> str:
    """The hostlist to hand to scontrol, after checking every name once more."""
    if not nodes:
        raise UsageError("no nodes given")
    for name in nodes:
        hostlists.expand(name)  # raises on anything that is not a plain node name
    return hostlists.collect(nodes)


def validate_reservation_name(name: str) -> str:
    if not _RESERVATION_NAME.match(name):
        raise UsageError(f"invalid reservation name {name!r}: letters, digits, '.', '_', '-'")
    return name


def reservation_users(users: Sequence[str]) -> tuple[str, ...]:
    """The users a reservation admits, each a plain user name."""
    bad = [u for u in users if not _USER.match(u)]
    if bad or not users:
        raise UsageError(f"invalid reservation user {bad[0] if bad else ''!r}")
    return tuple(users)


def valid_job_id(job_id: str) -> str:
    if not re.fullmatch(r"[0-9]+([_+][0-9]+)?", job_id):
        raise UsageError(f"invalid job id {job_id!r}")
    return job_id
