"""A rollout campaign's journal and its replay, and the store of journals and locks.

Crash safety: everything the campaign decides is a record in its journal (JSON lines,
fsync'ed, append-only) under the state directory, *before* it acts.

Control (``rollout pause|abort``) goes through the journal as well: the runner reads new
control records on every tick. A runner holds an exclusive lock on the campaign's
``.lock`` file; a campaign whose journal says running and whose lock is free was cut off.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factoryctl import hostlists
from factoryctl.actions.audit import append_record
from factoryctl.actions.rollout_phases import (
    ACTIVE,
    DONE,
    DRAINING,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    TERMINAL_STATUS,
    campaign_reason,
)
from factoryctl.errors import FactoryctlError, UsageError

# -- the journal ----------------------------------------------------------------------------


@dataclass
class Journal:
    path: Path

    def append(self, record: Mapping[str, Any]) -> None:
        try:
            append_record(self.path, record)
        except OSError as err:
            raise FactoryctlError(
                f"cannot write the campaign journal {self.path}: {err.strerror}"
            ) from None

    def records(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except OSError as err:
            raise FactoryctlError(f"cannot read the journal {self.path}: {err.strerror}") from None
        out = []
        for line in text.splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn last line: the intent before it still stands
        return out


@dataclass
class NodeRecord:
    phase: str = PENDING
    since: float = 0.0  # when the phase's record was written (epoch seconds)
    drain_since: float = 0.0
    step: str = ""  # the failed step, for FAILED
    note: str = ""
    attempts: int = 0
    work_start: float = 0.0  # when it was drained: the telemetry gate's baseline instant
    back: float = 0.0  # when it registered again after its reboot
    baseline: dict[str, Any] | None = None  # the gate's counters at work_start


@dataclass
class Campaign:
    """A campaign as its journal says: the spec it was started with and where each node is."""

    id: str
    spec: dict[str, Any]
    nodes: dict[str, NodeRecord]
    status: str = RUNNING
    message: str = ""
    pause_requested: bool = False
    abort_requested: bool = False
    breaker_base: int = 0  # failures before the last resume: the breaker counts from there
    controls_seen: int = 0

    @property
    def user(self) -> str:
        return str(self.spec.get("user", ""))

    @property
    def reason(self) -> str:
        return str(self.spec.get("reason", ""))

    def stored_reason(self, what: str = "") -> str:
        text = f"{what}: {self.reason}" if what else self.reason
        return campaign_reason(self.id, text, self.user)

    def count(self, *phases: str) -> int:
        return sum(1 for r in self.nodes.values() if r.phase in phases)

    def names(self, *phases: str) -> list[str]:
        return [n for n, r in self.nodes.items() if r.phase in phases]

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "host": self.spec.get("host", ""),
            "reason": self.reason,
            "status": self.status,
            "message": self.message,
            "started": self.spec.get("time"),
            "nodes": hostlists.collect(self.nodes) if self.nodes else "",
            "total": len(self.nodes),
            "done": self.count(DONE),
            "failed": self.count(FAILED),
            "skipped": self.count(SKIPPED),
            "in_flight": self.names(*ACTIVE),
            "pending": self.count(PENDING),
        }


def replay(records: Sequence[Mapping[str, Any]]) -> Campaign:
    """The campaign's state from its journal records (the first is the campaign record)."""
    if not records or records[0].get("event") != "campaign":
        raise FactoryctlError("not a campaign journal (no campaign record first)")
    spec = dict(records[0])
    campaign = Campaign(
        id=str(spec["id"]),
        spec=spec,
        nodes={str(n): NodeRecord() for n in spec.get("order", [])},
    )
    controls = 0
    for rec in records[1:]:
        event = rec.get("event")
        if event == "node":
            node = campaign.nodes.setdefault(str(rec["node"]), NodeRecord())
            node.phase = str(rec["phase"])
            node.since = float(rec.get("time", 0.0))
            if node.phase == DRAINING and not rec.get("retry"):
                node.drain_since = node.since
            node.step = str(rec.get("step", ""))
            node.note = str(rec.get("note", ""))
            node.attempts = int(rec.get("attempts", node.attempts))
            if node.phase == "drained":
                node.work_start = node.since
            elif node.phase == "rebooted":
                node.back = node.since
        elif event == "baseline":
            # The gate's counters at the work's start: a resumed campaign compares with these.
            campaign.nodes.setdefault(str(rec["node"]), NodeRecord()).baseline = dict(
                rec["counters"]
            )
        elif event == "control":
            controls += 1
            action = rec.get("action")
            if action == "pause":
                campaign.pause_requested = True
            elif action == "abort":
                campaign.abort_requested = True
            elif action == "resume":
                campaign.pause_requested = False
                campaign.breaker_base = campaign.count(FAILED)
                campaign.status = RUNNING
        elif event == "status":
            campaign.status = str(rec["status"])
            campaign.message = str(rec.get("message", ""))
    campaign.controls_seen = controls
    return campaign


# -- where campaigns live, and their locks ---------------------------------------------------


@dataclass
class Store:
    """Campaign journals and locks: ``<state>/factoryctl/rollouts/<id>.jsonl``."""

    directory: Path

    def journal(self, campaign_id: str) -> Journal:
        return Journal(self.directory / f"{campaign_id}.jsonl")

    def ids(self) -> list[str]:
        try:
            paths = sorted(self.directory.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return []
        return [p.stem for p in paths]

    def load(self, campaign_id: str) -> Campaign:
        if not campaign_id or "/" in campaign_id or campaign_id.startswith("."):
            raise UsageError(f"invalid campaign id {campaign_id!r}")
        records = self.journal(campaign_id).records()
        if not records:
            from factoryctl.errors import NotFoundError

            raise NotFoundError(f"unknown campaign: {campaign_id} (see factoryctl rollout list)")
        return replay(records)

    def latest(self) -> str:
        ids = self.ids()
        if not ids:
            from factoryctl.errors import NotFoundError

            raise NotFoundError("no campaigns yet (factoryctl rollout start)")
        return ids[-1]

    def campaigns(self) -> list[Campaign]:
        out = []
        for cid in self.ids():
            with contextlib.suppress(FactoryctlError):
                out.append(self.load(cid))
        return out

    @contextlib.contextmanager
    def _flock(self, name: str, blocking: bool) -> Iterator[bool]:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                got = True
            except BlockingIOError:
                got = False
            yield got
        finally:
            os.close(fd)

    def registry_lock(self) -> contextlib.AbstractContextManager[bool]:
        """Held while a campaign is created: two starts cannot both take a node."""
        return self._flock(".registry.lock", blocking=True)

    def runner_lock(self, campaign_id: str) -> contextlib.AbstractContextManager[bool]:
        """Held by the one process running the campaign (yields False if another holds it)."""
        return self._flock(f"{campaign_id}.lock", blocking=False)

    def running(self, campaign_id: str) -> bool:
        with self.runner_lock(campaign_id) as got:
            return not got

    def effective_status(self, campaign: Campaign) -> str:
        if campaign.status == RUNNING and not self.running(campaign.id):
            return "interrupted"
        return campaign.status

    def held_nodes(self, exclude: str = "") -> dict[str, str]:
        """node -> campaign id, for every node an unfinished campaign has not finished."""
        held: dict[str, str] = {}
        for c in self.campaigns():
            if c.id == exclude or c.status in TERMINAL_STATUS:
                continue
            for name, rec in c.nodes.items():
                if rec.phase not in (DONE, SKIPPED):
                    held[name] = c.id
        return held
