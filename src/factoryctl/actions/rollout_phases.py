"""Where a rollout campaign and each of its nodes stand, and how a Slurm reason names the
campaign: the vocabulary the journal, the plan and the runner share (``factoryctl rollout``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from factoryctl.model import Node

ROLLOUT_PREFIX = "factoryctl rollout "

# Node phases. Intents are written before the action they name.
PENDING = "pending"
DRAINING = "draining"  # drain issued (or about to be)
EXEC = "exec"  # --exec started
REBOOT = "reboot"  # reboot about to be issued
REBOOT_ISSUED = "reboot-issued"  # scontrol reboot returned
CHECK = "check"  # --check started
GATE = "gate"  # telemetry gate: waiting for the GPUs, then comparing error counters
RESUMING = "resuming"  # resume about to be issued
DONE = "done"
SKIPPED = "skipped"  # left in service: drain timed out, or out of service by someone else
FAILED = "failed"  # left drained, reason names the campaign and the failed step
TERMINAL = frozenset({DONE, SKIPPED, FAILED})
IN_FLIGHT = frozenset({DRAINING, EXEC, REBOOT, REBOOT_ISSUED, CHECK, GATE, RESUMING})
# Between steps (a runner cut off right after writing one continues from there).
BETWEEN = frozenset({"drained", "rebooted", "check-passed", "gate-passed"})
ACTIVE = IN_FLIGHT | BETWEEN

# Campaign statuses.
RUNNING, PAUSED, BREAKER, ABORTED, FINISHED = "running", "paused", "breaker", "aborted", "finished"
TERMINAL_STATUS = frozenset({ABORTED, FINISHED})


def campaign_reason(campaign_id: str, text: str, user: str) -> str:
    return f"{ROLLOUT_PREFIX}{campaign_id}: {text.strip()} ({user})"


def owned_by_campaign(reason: str, campaign_id: str) -> bool:
    return reason.startswith(f"{ROLLOUT_PREFIX}{campaign_id}: ")


_REASON = re.compile(r"^factoryctl rollout ([0-9A-Za-z]+): .*?\(([^()]*)\)")


def campaigns_in_slurm(nodes: Sequence[Node]) -> dict[str, dict[str, Any]]:
    """Campaigns seen in node reasons: those of other state directories (other operators'
    hosts or homes) show up here even though their journals are elsewhere."""
    seen: dict[str, dict[str, Any]] = {}
    for node in nodes:
        match = _REASON.match(node.reason)
        # Only nodes out of service: some Slurm generations keep a reason after a resume.
        if match and not node.state.in_service:
            entry = seen.setdefault(match.group(1), {"user": match.group(2), "nodes": []})
            entry["nodes"].append(node.name)
    return seen


def new_campaign_id() -> str:
    return uuid.uuid4().hex[:8]
