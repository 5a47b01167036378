"""The audit log's records of ``factoryctl job-epilog``: writing a job's energy into its
AdminComment changes Slurm's accounting, so it is logged like every other cluster-changing
action (``start`` before, ``result`` after, one id), skips and failures included.

Unlike an operator's action, the epilog must never fail or delay the job's completion: a
log that cannot be written is a warning (the comment is written regardless, and the
wrapper's syslog line still says what happened), and each append is bounded in time (a
hung filesystem must not hold the epilog; the append goes on in a daemon thread and the
warning says so). No audit lock is taken: the epilog changes one job's comment, which no
other action touches, and O_APPEND keeps concurrent records whole.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factoryctl.actions.audit import append_record, new_action_id

VERB = "job-epilog"
REASON = "job energy record"  # what the audit table's REASON column shows
# At most this long per record (the epilog's whole run is bounded by --timeout anyway).
APPEND_SECONDS = 2.0
# Outcomes of one run, as the ``result`` record's status.
WRITTEN, SKIPPED, FAILED = "ok", "skipped", "failed"


@dataclass
class EpilogAudit:
    path: Path
    user: str
    job_id: str
    warn: Callable[[str], None]
    clock: Callable[[], float]
    argv: Sequence[str] = ()
    id: str = field(default_factory=new_action_id)
    started: bool = False
    warned: bool = False

    def _record(self, event: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "event": event,
            "time": self.clock(),
            "user": self.user,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "verb": VERB,
            "job_id": self.job_id,
            "reason": REASON,
            **extra,
        }

    def start(self, nodes: str = "") -> None:
        """Before anything is read or written: a run killed by the wrapper's hard timeout
        then shows as incomplete in ``factoryctl audit``, not as nothing."""
        self.started = True
        self._append(self._record("start", nodes=nodes, argv=list(self.argv)))

    def result(self, status: str, message: str, **extra: Any) -> None:
        if not self.started:
            self.start()
        self._append(self._record("result", status=status, message=message, **extra))

    def _append(self, record: Mapping[str, Any]) -> None:
        failure: list[str] = []

        def write() -> None:
            try:
                append_record(self.path, record)
            except OSError as err:
                failure.append(err.strerror or type(err).__name__)

        worker = threading.Thread(target=write, name="epilog-audit", daemon=True)
        worker.start()
        worker.join(APPEND_SECONDS)
        if worker.is_alive():
            failure.append(f"no answer within {APPEND_SECONDS:g}s")
        if failure and not self.warned:
            # Once per run: the second record fails for the same reason as the first.
            self.warned = True
            self.warn(
                f"warning: cannot write the audit log {self.path}: {failure[0]};"
                f" job {self.job_id}'s epilog goes on without it"
            )
