"""Maintenance campaigns in waves: ``factoryctl rollout``.

A campaign takes each of its nodes through drain -> wait DRAINED -> ``--exec`` ->
``--reboot`` -> ``--check`` -> resume, never more than ``--max-unavailable`` nodes of the
partition out of service at once (nodes out for other reasons count), and stops starting
nodes after ``--max-failures`` failed ones.

Crash safety: everything the campaign decides is a record in its journal (JSON lines,
fsync'ed, append-only) under the state directory, *before* it acts. A node's last record
is an intent ("draining", "reboot", "resuming"...): after a ``kill -9`` the runner that
resumes the campaign re-checks that intent against Slurm instead of assuming it happened
(a drain that never landed is issued again, a reboot that is over is not redone, a node
whose resume was cut off is resumed). Work steps (``--exec``, ``--check``) that were cut off
run again: they must be safe to repeat. Terminal nodes are reconciled too: a failed node
is drained with its failure reason, a done node is back in service.

Control (``rollout pause|abort``) goes through the journal as well: the runner reads new
control records on every tick. A runner holds an exclusive lock on the campaign's
``.lock`` file; a campaign whose journal says running and whose lock is free was cut off.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from factoryctl import hostlists
from factoryctl.actions.audit import AuditLog
from factoryctl.actions.guards import BlastRadius, RefusedError
from factoryctl.actions.plan import Verb, build_plan
from factoryctl.errors import ExitStatus, FactoryctlError, UsageError
from factoryctl.model import Node, NodeState
from factoryctl.scheduler.base import NextState, Scheduler
from factoryctl.scheduler.slurm_cli import validate_reason

ROLLOUT_PREFIX = "factoryctl rollout "

# Node phases. Intents are written before the action they name.
PENDING = "pending"
DRAINING = "draining"  # drain issued (or about to be)
EXEC = "exec"  # --exec started
REBOOT = "reboot"  # reboot about to be issued
REBOOT_ISSUED = "reboot-issued"  # scontrol reboot returned
CHECK = "check"  # --check started
RESUMING = "resuming"  # resume about to be issued
DONE = "done"
SKIPPED = "skipped"  # left in service: drain timed out, or out of service by someone else
FAILED = "failed"  # left drained, reason names the campaign and the failed step
TERMINAL = frozenset({DONE, SKIPPED, FAILED})
IN_FLIGHT = frozenset({DRAINING, EXEC, REBOOT, REBOOT_ISSUED, CHECK, RESUMING})
# Between steps (a runner cut off right after writing one continues from there).
BETWEEN = frozenset({"drained", "rebooted", "check-passed"})
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


# -- input --------------------------------------------------------------------------------


def parse_max_unavailable(text: str, partition_size: int) -> int:
    raw = text.strip()
    try:
        if raw.endswith("%"):
            share = float(raw[:-1])
            if not 0 < share <= 100:
                raise ValueError
            return max(1, math.floor(share * partition_size / 100 + 1e-9))
        value = int(raw)
        if value < 1:
            raise ValueError
        return value
    except ValueError:
        raise UsageError(
            f"invalid --max-unavailable {text!r}: a node count (2) or a share of the partition (10%)"
        ) from None


def command_template(option: str, text: str | None, environ: Mapping[str, str]) -> list[str]:
    """``--exec``/``--check`` as an argv template: shlex-split, ``{node}`` required, the
    program found and executable. Never a shell unless the user wrote ``sh -c``."""
    if text is None:
        return []
    try:
        argv = shlex.split(text)
    except ValueError as err:
        raise UsageError(f"{option}: cannot split {text!r}: {err}") from None
    if not argv:
        raise UsageError(f"{option} is empty")
    if not any("{node}" in a for a in argv):
        raise UsageError(f"{option} {text!r} does not name the node: put {{node}} where it goes")
    program = argv[0]
    if "/" in program:
        found = program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    else:
        found = shutil.which(program, path=environ.get("PATH", os.defpath))
    if found is None:
        raise UsageError(f"{option}: {program!r} is not an executable file (or not on PATH)")
    return argv


def substitute(template: Sequence[str], node: str) -> list[str]:
    return [a.replace("{node}", node) for a in template]


# -- the journal ----------------------------------------------------------------------------


@dataclass
class Journal:
    path: Path

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
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


# -- the plan -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    hostlist: str
    reason: str
    user: str
    max_unavailable: str = "1"
    exec_cmd: str | None = None
    reboot: bool = False
    next_state: str = "resume"
    check_cmd: str | None = None
    drain_timeout: float = 7200.0
    reboot_timeout: float = 1800.0
    step_timeout: float = 3600.0
    max_failures: int | None = None
    force: bool = False


def partition_of(targets: Sequence[str], nodes: Sequence[Node]) -> list[Node]:
    """Every node sharing a partition with a target (all nodes when none is known)."""
    by = {n.name: n for n in nodes}
    parts = {p for t in targets for p in by[t].partitions}
    if not parts:
        return list(nodes)
    return [n for n in nodes if set(n.partitions) & parts]


def unavailable(node: Node) -> bool:
    return not node.state.in_service


def build_rollout_plan(
    spec: RolloutSpec,
    scheduler: Scheduler,
    radius: BlastRadius,
    environ: Mapping[str, str],
    campaign_id: str,
    held: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Validate everything, read Slurm, and say what will happen. Raises before anything
    changes: malformed hostlist (USAGE), unknown node (NOT_FOUND), bad --exec/--check
    (USAGE), a floor that cannot hold or nodes another campaign holds (REFUSED)."""
    names = hostlists.expand(spec.hostlist)
    validate_reason(spec.reason)
    longest = campaign_reason(campaign_id, f"reboot failed: {spec.reason}", spec.user)
    validate_reason(longest)
    exec_argv = command_template("--exec", spec.exec_cmd, environ)
    check_argv = command_template("--check", spec.check_cmd, environ)
    if spec.max_failures is not None and spec.max_failures < 1:
        raise UsageError("--max-failures must be 1 or more")
    nodes = scheduler.nodes()
    targets = hostlists.resolve(spec.hostlist, (n.name for n in nodes))
    assert set(targets) == set(names)
    jobs = scheduler.jobs()
    base = build_plan(Verb.ROLLOUT, targets, nodes, jobs, spec.user, spec.reason, spec.force)
    by = {n.name: n for n in nodes}
    partition = partition_of(targets, nodes)
    size = len(partition)
    max_unav = parse_max_unavailable(spec.max_unavailable, size)
    acting = [n for n in base.nodes if n.step.value == "act"]
    # Idle nodes first: they drain at once; busy ones wait for their jobs.
    acting.sort(key=lambda n: (bool(n.jobs), targets.index(n.name)))
    order = [n.name for n in acting]
    out_now = sorted(n.name for n in partition if unavailable(n))
    slots = max_unav - len(out_now)
    refusals: list[str] = []
    conflicts = {n: c for n, c in (held or {}).items() if n in set(order)}
    if conflicts:
        first = sorted(conflicts)[0]
        refusals.append(
            f"{hostlists.collect(conflicts)}: held by campaign {conflicts[first]} "
            "(factoryctl rollout list); nothing started"
        )
    if order and slots <= 0:
        refusals.append(
            f"capacity floor cannot hold: {len(out_now)} of {size} node(s) in the partition are "
            f"already out of service ({hostlists.collect(out_now) if out_now else '-'}), and "
            f"--max-unavailable {spec.max_unavailable} allows {max_unav}; nothing started"
        )
    if not spec.force and order:
        limit = radius.limit(len(nodes))
        if min(slots, len(order)) > limit:
            refusals.append(
                f"blast radius: up to {min(slots, len(order))} node(s) out at once, more than "
                f"the limit of {limit}; lower --max-unavailable or use --force"
            )
    wave = max(1, slots)
    waves = [order[i : i + wave] for i in range(0, len(order), wave)]
    stored = campaign_reason(campaign_id, spec.reason, spec.user)
    failure = campaign_reason(campaign_id, f"<step> failed: {spec.reason}", spec.user)
    on_failure = f"stays drained with reason {failure!r}; the campaign goes on with the others"
    if spec.max_failures is not None:
        on_failure += (
            f"; after {spec.max_failures} failed node(s) no new node starts and the "
            "campaign pauses (factoryctl rollout resume)"
        )
    node_rows = []
    for n in base.nodes:
        node = by[n.name]
        job_users = sorted({j.user for j in jobs if j.job_id in n.jobs})
        node_rows.append(
            {
                "name": n.name,
                "state": n.state.value,
                "reason": n.reason,
                "gpus": n.gpus,
                "jobs": list(n.jobs),
                "users": job_users,
                "step": "rollout" if n.step.value == "act" else n.step.value,
                "note": n.note,
                "wave": next((i + 1 for i, w in enumerate(waves) if n.name in w), None),
                "partitions": list(node.partitions),
            }
        )
    steps = ["drain", "wait DRAINED"]
    if exec_argv:
        steps.append("exec")
    if spec.reboot:
        steps.append("reboot")
    if check_argv:
        steps.append("check")
    steps.append("resume" if spec.next_state == "resume" else "leave down")
    return {
        "kind": "rollout-plan",
        "id": campaign_id,
        "user": spec.user,
        "reason": spec.reason,
        "stored_reason": stored,
        "hostlist": spec.hostlist,
        "order": order,
        "waves": waves,
        "steps": steps,
        "nodes": node_rows,
        "jobs": [
            {"job_id": j.job_id, "user": j.user, "name": j.name, "nodes": list(j.nodes)}
            for j in base.jobs
        ],
        "partition_nodes": size,
        "out_of_service_now": out_now,
        "max_unavailable": max_unav,
        "floor": size - max_unav,
        "on_failure": on_failure,
        "exec": exec_argv,
        "check": check_argv,
        "reboot": spec.reboot,
        "next_state": spec.next_state,
        "drain_timeout": spec.drain_timeout,
        "reboot_timeout": spec.reboot_timeout,
        "step_timeout": spec.step_timeout,
        "max_failures": spec.max_failures,
        "partition": sorted(n.name for n in partition),
        "refusals": refusals,
    }


def refusal(plan: Mapping[str, Any]) -> RefusedError | None:
    refusals = plan.get("refusals") or []
    return RefusedError(str(refusals[0])) if refusals else None


def create(store: Store, plan: Mapping[str, Any], argv: Sequence[str], now: float) -> Campaign:
    """Write the campaign record (the journal's first line). The caller holds the
    registry lock and has re-checked that no other campaign holds these nodes."""
    record = {
        "event": "campaign",
        "time": now,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "argv": list(argv),
        **{k: v for k, v in plan.items() if k not in ("kind", "refusals")},
    }
    journal = store.journal(str(plan["id"]))
    if journal.path.exists():
        raise FactoryctlError(f"campaign {plan['id']} exists already")
    journal.append(record)
    return replay([record])


# -- the runner ---------------------------------------------------------------------------


@dataclass
class Work:
    """A running --exec or --check (its own session, so abort stops all it started)."""

    step: str
    proc: subprocess.Popen[bytes]
    started: float
    log: Path


Emit = Callable[[dict[str, Any]], None]


@dataclass
class Runner:
    store: Store
    campaign: Campaign
    scheduler: Scheduler
    audit: AuditLog
    environ: Mapping[str, str]
    emit: Emit
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    interval: float = 1.0
    work: dict[str, Work] = field(default_factory=dict)
    _nodes: dict[str, Node] = field(default_factory=dict)

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

    # -- Slurm ------------------------------------------------------------------------------
    def _read(self) -> bool:
        try:
            self._nodes = {n.name: n for n in self.scheduler.nodes()}
            return True
        except FactoryctlError as err:
            self.emit({"event": "warning", "campaign": self.campaign.id, "message": err.message})
            return False

    def _ours(self, node: Node) -> bool:
        return owned_by_campaign(node.reason, self.campaign.id)

    def _spec(self, key: str) -> Any:
        return self.campaign.spec.get(key)

    # -- one node ---------------------------------------------------------------------------
    def _fail(self, name: str, step: str, note: str) -> None:
        reason = self.campaign.stored_reason(f"{step} failed")
        self.phase(name, FAILED, step=step, note=note)
        self._set_failed_reason(name, reason)

    def _set_failed_reason(self, name: str, reason: str) -> None:
        try:
            self.scheduler.drain([name], reason)
        except FactoryctlError as err:
            self.emit(
                {
                    "event": "warning",
                    "campaign": self.campaign.id,
                    "node": name,
                    "message": f"could not set the failure reason: {err.message}",
                }
            )

    def _start_work(self, name: str, step: str) -> None:
        template = self._spec(step) or []
        argv = substitute(template, name)
        log = self.store.directory / self.campaign.id / f"{name}.{step}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        rec = self.campaign.nodes[name]
        self.phase(name, EXEC if step == "exec" else CHECK, argv=argv, attempts=rec.attempts + 1)
        with open(log, "ab") as out:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=dict(self.environ),
                    start_new_session=True,
                )
            except OSError as err:
                self._fail(name, step, f"cannot run {argv[0]}: {err.strerror}")
                return
        self.work[name] = Work(step, proc, self.clock(), log)
        # Its PID (and session): whoever cleans up after a kill -9 of this runner can find it.
        self.journal.append(
            {"event": "work", "node": name, "step": step, "pid": proc.pid, "time": self.clock()}
        )

    def _poll_work(self, name: str) -> str | None:
        """'ok', 'failed: ...' or None while it runs."""
        work = self.work[name]
        code = work.proc.poll()
        if code is None:
            if self.clock() - work.started > float(self._spec("step_timeout") or 3600):
                _kill(work.proc)
                del self.work[name]
                return f"timed out after {self._spec('step_timeout'):.0f}s"
            return None
        del self.work[name]
        if code == 0:
            return "ok"
        tail = _last_line(work.log)
        return f"exit status {code}" + (f": {tail}" if tail else "")

    def _after_drained(self, name: str) -> None:
        if self._spec("exec"):
            self._start_work(name, "exec")
        else:
            self._after_exec(name)

    def _after_exec(self, name: str) -> None:
        if self._spec("reboot"):
            self.phase(name, REBOOT)
            self._issue_reboot(name)
        else:
            self._after_reboot(name)

    def _issue_reboot(self, name: str) -> None:
        try:
            self.scheduler.reboot(
                [name], self.campaign.stored_reason("rebooting"), False, NextState.DOWN
            )
        except FactoryctlError as err:
            self._fail(name, "reboot", err.message)
            return
        self.phase(name, REBOOT_ISSUED)

    def _after_reboot(self, name: str) -> None:
        if self._spec("check"):
            self._start_work(name, "check")
        else:
            self._finish(name)

    def _finish(self, name: str) -> None:
        if self._spec("next_state") == "down":
            self.phase(name, DONE, note="left out of service (--next-state down)")
            self._set_failed_reason(name, self.campaign.stored_reason("done, left down"))
            return
        self.phase(name, RESUMING)
        self._issue_resume(name)

    def _issue_resume(self, name: str) -> None:
        try:
            self.scheduler.resume([name])
        except FactoryctlError as err:
            self._fail(name, "resume", err.message)

    def advance(self, name: str) -> None:
        """Move one in-flight node on, from what Slurm says now."""
        rec = self.campaign.nodes[name]
        node = self._nodes.get(name)
        if node is None:
            return  # not in this read (Slurm hiccup): next tick
        now = self.clock()
        state = node.state
        if rec.phase == DRAINING:
            if state in (NodeState.DRAINED, NodeState.DOWN) and self._ours(node):
                self.phase(name, "drained")
                rec.phase = "drained"
                self._after_drained(name)
            elif state is NodeState.DRAINING and self._ours(node):
                if now - rec.drain_since > float(self._spec("drain_timeout")):
                    self._skip_timed_out(name)
            elif state.in_service:
                # The drain never landed (cut off before scontrol ran): issue it again.
                self._drain(name, retry=True)
            else:
                self.phase(
                    name,
                    SKIPPED,
                    note=f"taken out of service by someone else meanwhile: {node.reason or state.value}",
                )
        elif rec.phase in (EXEC, CHECK):
            step = "exec" if rec.phase == EXEC else "check"
            if name not in self.work:
                self._start_work(name, step)  # cut off mid-step: run it again
                return
            verdict = self._poll_work(name)
            if verdict is None:
                return
            if verdict != "ok":
                self._fail(name, step, verdict)
            elif step == "exec":
                self._after_exec(name)
            else:
                self.phase(name, "check-passed")
                rec.phase = "check-passed"
                self._finish(name)
        elif rec.phase == REBOOT:
            # Cut off around scontrol reboot: Slurm says whether it was issued.
            if state is NodeState.REBOOTING:
                self.phase(name, REBOOT_ISSUED, note="reboot was issued before the cut")
            elif state is NodeState.DOWN and self._ours(node):
                self.phase(name, REBOOT_ISSUED, note="reboot done before the cut")
            else:
                self._issue_reboot(name)
        elif rec.phase == REBOOT_ISSUED:
            if state is NodeState.REBOOTING:
                if now - rec.since > float(self._spec("reboot_timeout")):
                    self._fail(name, "reboot", "the node did not come back in time")
                return
            if state is NodeState.UNKNOWN:
                return
            # Back: slurmd registered (Slurm sets DOWN for nextstate=down).
            self.phase(name, "rebooted", state=state.value)
            rec.phase = "rebooted"
            self._after_reboot(name)
        elif rec.phase == RESUMING:
            if state.in_service:
                self.phase(name, DONE)
            elif state is NodeState.DRAINING and not self._ours(node):
                self.phase(name, DONE, note=f"drained by someone else since: {node.reason}")
            else:
                self._issue_resume(name)
        elif rec.phase in ("drained", "rebooted", "check-passed"):
            # Cut off right after one of these: continue from there.
            {"drained": self._after_drained, "rebooted": self._after_reboot}.get(
                rec.phase, self._finish
            )(name)

    def _skip_timed_out(self, name: str) -> None:
        jobs = ", ".join(
            f"{j.job_id} ({j.user})"
            for j in self._jobs()
            if name in j.nodes and j.state.value == "running"
        )
        self.phase(
            name,
            SKIPPED,
            step="drain",
            note=f"jobs outlived --drain-timeout ({jobs or 'still running'}); drain undone, left in service",
        )
        with contextlib.suppress(FactoryctlError):
            self.scheduler.resume([name])

    def _jobs(self) -> list[Any]:
        try:
            return list(self.scheduler.jobs())
        except FactoryctlError:
            return []

    def _drain(self, name: str, retry: bool = False) -> None:
        extra: dict[str, Any] = {"retry": True} if retry else {}
        self.phase(name, DRAINING, **extra)
        try:
            self.scheduler.drain([name], self.campaign.stored_reason())
        except FactoryctlError as err:
            self._fail(name, "drain", err.message)

    # -- reconcile what a cut-off runner left ---------------------------------------------
    def reconcile(self) -> None:
        for name, rec in self.campaign.nodes.items():
            node = self._nodes.get(name)
            if node is None:
                continue
            failure = self.campaign.stored_reason(f"{rec.step} failed")
            if rec.phase == FAILED and self._ours(node) and not node.reason.startswith(failure):
                # Cut off between the record and the reason. A failed node an operator
                # has put back since (not ours any more) is theirs: left alone.
                self._set_failed_reason(name, failure)
            elif rec.phase == SKIPPED and rec.step == "drain" and self._ours(node):
                with contextlib.suppress(FactoryctlError):
                    self.scheduler.resume([name])
            elif (
                rec.phase == DONE
                and self._spec("next_state") == "resume"
                and self._ours(node)
                and not node.state.in_service
            ):
                self._issue_resume(name)

    # -- capacity -------------------------------------------------------------------------
    def out_of_service(self) -> set[str]:
        part = set(self._spec("partition") or self._nodes)
        out = {n for n in part if n in self._nodes and unavailable(self._nodes[n])}
        return out | set(self.campaign.names(*ACTIVE))

    def breaker_tripped(self) -> bool:
        k = self._spec("max_failures")
        return k is not None and self.campaign.count(FAILED) - self.campaign.breaker_base >= int(k)

    def _start_more(self) -> None:
        limit = int(self._spec("max_unavailable"))
        for name in self.campaign.names(PENDING):
            if len(self.out_of_service()) >= limit:
                return
            node = self._nodes.get(name)
            if node is None:
                continue
            if not node.state.in_service:
                self.phase(
                    name,
                    SKIPPED,
                    note=f"out of service by someone else before its turn: {node.reason or node.state.value}",
                )
                continue
            with self.audit.lock():  # a plain drain elsewhere waits for this one
                self._drain(name)

    def _controls(self) -> None:
        records = self.journal.records()
        fresh = replay(records)
        if fresh.controls_seen != self.campaign.controls_seen:
            self.campaign.pause_requested = fresh.pause_requested
            self.campaign.abort_requested = fresh.abort_requested
            self.campaign.controls_seen = fresh.controls_seen

    # -- the loop -----------------------------------------------------------------------------
    def _sync_audit(self) -> None:
        """A runner killed between a journal record and its audit copy left the audit log
        one step short: copy what it lacks, so the two agree."""
        steps = [r for r in self.journal.records() if r.get("event") == "node"]
        audited = sum(
            1
            for r in self.audit.records()
            if r.get("id") == self.campaign.id and r.get("event") == "step"
        )
        for rec in steps[audited:]:
            extra = {k: rec[k] for k in ("step", "note") if k in rec}
            self._audit("step", node=rec["node"], phase=rec["phase"], replayed=True, **extra)

    def run(self) -> ExitStatus:
        self._sync_audit()
        self._audit("resume" if self.campaign.spec.get("resumed") else "run", status=RUNNING)
        while not self._read():
            self.sleep(self.interval)
        self.reconcile()
        left = len(self.campaign.nodes) - self.campaign.count(*TERMINAL)
        self.status(RUNNING, f"{left} node(s) to go")
        try:
            return self._loop()
        except BaseException:
            for work in self.work.values():
                _kill(work.proc)
            raise

    def _loop(self) -> ExitStatus:
        while True:
            self._controls()
            if self.campaign.abort_requested:
                return self._abort()
            if self._read():
                for name in self.campaign.names(*ACTIVE):
                    self.advance(name)
                stop_starting = self.campaign.pause_requested or self.breaker_tripped()
                if not stop_starting:
                    self._start_more()
            in_flight = self.campaign.names(*ACTIVE)
            pending = self.campaign.names(PENDING)
            if not in_flight:
                if self.breaker_tripped() and pending:
                    failed = hostlists.collect(self.campaign.names(FAILED))
                    self.status(
                        BREAKER,
                        f"circuit breaker: {self.campaign.count(FAILED)} node(s) failed ({failed}); "
                        f"{len(pending)} not started; factoryctl rollout resume {self.campaign.id} "
                        "continues",
                    )
                    self._audit("result", status=BREAKER, message=self.campaign.message)
                    return ExitStatus.ROLLOUT_BREAKER
                if self.campaign.pause_requested and pending:
                    self.status(
                        PAUSED,
                        f"paused: {len(pending)} node(s) not started; "
                        f"factoryctl rollout resume {self.campaign.id} continues",
                    )
                    self._audit("result", status=PAUSED, message=self.campaign.message)
                    return ExitStatus.ROLLOUT_PAUSED
                if not pending:
                    return self._finished()
                if self._nodes and len(self.out_of_service()) >= int(self._spec("max_unavailable")):
                    out = hostlists.collect(sorted(self.out_of_service()))
                    self.status(
                        PAUSED,
                        f"paused: no capacity: {out} out of service, --max-unavailable "
                        f"{self._spec('max_unavailable')}; {len(pending)} node(s) not started; "
                        f"factoryctl rollout resume {self.campaign.id} continues",
                    )
                    self._audit("result", status=PAUSED, message=self.campaign.message)
                    return ExitStatus.ROLLOUT_PAUSED
            self.sleep(self.interval)

    def _finished(self) -> ExitStatus:
        failed = self.campaign.names(FAILED)
        skipped = self.campaign.names(SKIPPED)
        done = self.campaign.count(DONE)
        parts = [f"{done} node(s) done"]
        if failed:
            why = "; ".join(f"{n}: {self.campaign.nodes[n].step} failed" for n in failed)
            parts.append(f"{len(failed)} failed and left drained ({why})")
        if skipped:
            parts.append(f"{len(skipped)} skipped ({hostlists.collect(skipped)})")
        self.status(FINISHED, "; ".join(parts))
        self._audit(
            "result", status="partial" if failed or skipped else "ok", message=self.campaign.message
        )
        return ExitStatus.PARTIAL if failed or skipped else ExitStatus.OK

    def _abort(self) -> ExitStatus:
        for work in self.work.values():
            _kill(work.proc)
        self.work.clear()
        self._read()
        left: list[str] = []
        for name in self.campaign.names(*ACTIVE):
            rec = self.campaign.nodes[name]
            if rec.phase == DRAINING:
                # Nothing was done to it yet: give it back.
                self.phase(
                    name, SKIPPED, step="abort", note="aborted before its work: drain undone"
                )
                with contextlib.suppress(FactoryctlError):
                    self.scheduler.resume([name])
            else:
                self._fail(name, "abort", f"aborted during {rec.phase}")
        for name in self.campaign.names(FAILED):
            left.append(
                f"{name} ({self.campaign.nodes[name].step} failed: {self.campaign.nodes[name].note})"
            )
        pending = self.campaign.count(PENDING)
        message = f"aborted: {self.campaign.count(DONE)} done, {pending} not started; " + (
            f"left drained: {'; '.join(left)}" if left else "no node left drained"
        )
        self.status(ABORTED, message)
        self._audit("result", status="aborted", message=message)
        return ExitStatus.ROLLOUT_ABORTED


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 2000))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:200] if lines else ""


def control(
    store: Store, campaign_id: str, action: str, user: str, reason: str, now: float
) -> None:
    store.journal(campaign_id).append(
        {"event": "control", "action": action, "user": user, "reason": reason, "time": now}
    )


def write_events(stream: IO[str]) -> Emit:
    def emit(event: dict[str, Any]) -> None:
        stream.write(json.dumps(event, sort_keys=True, default=str) + "\n")
        stream.flush()

    return emit
