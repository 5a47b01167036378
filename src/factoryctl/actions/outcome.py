"""What an action was asked to do (Request), who asked (operator) and how it ended
(Outcome, with a result per node: what ``-o json`` prints and the audit log keeps)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from factoryctl.actions.plan import Plan, Verb
from factoryctl.errors import ExitStatus

# What each per-node result means to a script reading ``-o json``.
CHANGED, UNCHANGED, FAILED, REFUSED, PENDING = (
    "changed",
    "unchanged",
    "failed",
    "refused",
    "pending",
)


@dataclass(frozen=True, slots=True)
class Request:
    verb: Verb
    nodes: str  # hostlist expression as typed
    reason: str
    user: str
    force: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    action_id: str
    plan: Plan
    status: ExitStatus = ExitStatus.OK
    message: str = ""
    results: dict[str, dict[str, str]] = field(default_factory=dict)
    waited: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "action",
            "id": self.action_id,
            "verb": self.plan.verb.value,
            "status": self.status.name.lower(),
            "exit_status": int(self.status),
            "message": self.message,
            "user": self.plan.user,
            "reason": self.plan.stored_reason,
            "params": dict(self.plan.params),
            "nodes": [
                {
                    "name": n.name,
                    "step": n.step.value,
                    "state_before": n.state.value,
                    "note": n.note,
                }
                | self.results.get(n.name, {})
                for n in self.plan.nodes
            ],
            "jobs": [
                {
                    "job_id": j.job_id,
                    "user": j.user,
                    "name": j.name,
                    "gpus": j.gpus,
                    "effect": j.effect,
                }
                for j in self.plan.jobs
            ],
            "gpus_out_of_service": self.plan.gpus_out_of_service,
            "waited": self.waited,
        }


def operator(environ: Mapping[str, str]) -> str:
    """Who acts: the person behind sudo when there is one."""
    for key in ("SUDO_USER", "USER", "LOGNAME"):
        if environ.get(key):
            return environ[key]
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())
