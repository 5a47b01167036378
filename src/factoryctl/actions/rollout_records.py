"""A rollout campaign's records: every step goes to the journal (fsync'ed) first, then
to the audit log, then out as an event (a JSON line or a progress line): the order a
crash must find them in. The runner (``rollout_steps``, ``rollout_runner``) builds on it."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from factoryctl.actions.audit import AuditLog
from factoryctl.actions.plan import Verb
from factoryctl.actions.rollout_journal import Campaign, Journal, Store
from factoryctl.actions.rollout_phases import DONE, DRAINING, FAILED

Emit = Callable[[dict[str, Any]], None]


@dataclass(kw_only=True)
class Records:
    store: Store
    campaign: Campaign
    audit: AuditLog
    emit: Emit
    clock: Callable[[], float] = time.time

    # -- records --------------------------------------------------------------------------
    @property
    def journal(self) -> Journal:
        return self.store.journal(self.campaign.id)

    def _audit(self, event: str, **extra: Any) -> None:
        self.audit.append(
            {
                "id": self.campaign.id,
                "event": event,
                "time": self.clock(),
                "user": self.campaign.user,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "verb": Verb.ROLLOUT.value,
                "nodes": self.campaign.summary()["nodes"],
                "reason": self.campaign.stored_reason(),
                **extra,
            }
        )

    def phase(self, node: str, phase: str, **extra: Any) -> None:
        """Journal first (fsync), then the audit log, then the event: the order a crash
        must find them in."""
        now = self.clock()
        rec = self.campaign.nodes[node]
        record = {"event": "node", "node": node, "phase": phase, "time": now, **extra}
        self.journal.append(record)
        rec.phase, rec.since = phase, now
        if phase == DRAINING and not extra.get("retry"):
            rec.drain_since = now
        elif phase == "drained":
            rec.work_start = now
        elif phase == "rebooted":
            rec.back = now
        rec.step = str(extra.get("step", ""))
        rec.note = str(extra.get("note", ""))
        self._audit("step", node=node, phase=phase, **extra)
        done = self.campaign.count(DONE)
        self.emit(
            {
                "event": "node",
                "campaign": self.campaign.id,
                "node": node,
                "phase": phase,
                "time": now,
                "done": done,
                "failed": self.campaign.count(FAILED),
                "total": len(self.campaign.nodes),
                **extra,
            }
        )

    def status(self, status: str, message: str) -> None:
        self.campaign.status, self.campaign.message = status, message
        self.journal.append(
            {"event": "status", "status": status, "message": message, "time": self.clock()}
        )
        self.emit(
            {
                "event": "campaign",
                "campaign": self.campaign.id,
                "status": status,
                "message": message,
                "time": self.clock(),
                **{k: v for k, v in self.campaign.summary().items() if k not in ("message",)},
            }
        )
