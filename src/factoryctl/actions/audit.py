"""The audit log: append-only JSON lines, one record before and one after every action.

Both records are flushed and fsync'ed before the code moves on, so a crash (or a
``kill -9``) between them leaves a ``start`` record with no ``result``: ``factoryctl
audit`` reports that action as incomplete instead of forgetting it. Records are never
rewritten. An exclusive lock on a sibling ``.lock`` file serialises actions that share
a log, so two operators on one host act one after the other on fresh state.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factoryctl.config import xdg_state_home
from factoryctl.errors import ExitStatus, FactoryctlError


def default_audit_path(environ: Mapping[str, str]) -> Path:
    return xdg_state_home(environ) / "factoryctl" / "audit.jsonl"


def new_action_id() -> str:
    return uuid.uuid4().hex[:16]


def append_record(path: Path, record: Mapping[str, Any]) -> None:
    """One JSON line appended and fsynced before returning: the audit log's and a rollout
    journal's durability. O_APPEND: concurrent writers never interleave within a record.
    Raises OSError; callers say which file it was."""
    line = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class AuditLog:
    path: Path
    lock_timeout: float = 60.0

    def append(self, record: Mapping[str, Any]) -> None:
        try:
            append_record(self.path, record)
        except OSError as err:
            raise FactoryctlError(
                f"cannot write the audit log {self.path}: {err.strerror}; nothing was changed",
                ExitStatus.ERROR,
            ) from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise FactoryctlError(
                f"cannot open the audit log lock {lock_path}: {err.strerror}; nothing was changed",
                ExitStatus.ERROR,
            ) from None
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise FactoryctlError(
                            f"another factoryctl action holds {lock_path} for more than "
                            f"{self.lock_timeout:.0f}s",
                            ExitStatus.REFUSED,
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def records(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except OSError as err:
            raise FactoryctlError(
                f"cannot read the audit log {self.path}: {err.strerror}"
            ) from None
        out = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                # A torn last line (power loss mid-write) is reported, not fatal.
                out.append({"event": "corrupt", "raw": line[:200]})
        return out


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per action: its start record merged with its result (if any)."""
    actions: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for rec in records:
        action_id = str(rec.get("id", ""))
        if rec.get("event") == "start":
            actions[action_id] = dict(rec, status="incomplete", result=None)
            order.append(action_id)
        elif action_id in actions and rec.get("event") in ("result", "wait"):
            entry = actions[action_id]
            if rec.get("event") == "result":
                entry["status"] = rec.get("status", "unknown")
                entry["result"] = rec.get("result")
                entry["finished"] = rec.get("time")
            else:
                entry["wait"] = {"status": rec.get("status"), "result": rec.get("result")}
    return [actions[i] for i in order]
