"""Slurm over its command-line tools: reads as JSON, writes with scontrol.

Nodes come from ``scontrol --json show node`` (23.02 and later), else ``sinfo --json``
(21.08-22.05; from 23.02 on it prints node groups, not nodes), else ``scontrol -o -d``
text; each step down is taken once, when Slurm says the option is unknown. Jobs come from
``squeue --json --states=all`` (finished jobs too, in every generation). Whatever the JSON's generation, ``slurm_json`` maps it from its meta.

Every command is an argv list (never a shell string), so a reason such as
``bad DIMM; see `dmesg` $(id)`` reaches slurmctld byte for byte. Node names and reasons
are validated here as well as by the caller: this is the last gate before a production
scheduler. A whole node set goes to scontrol as one hostlist: one call for 1,000 nodes.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from factoryctl import hostlists
from factoryctl.errors import ExitStatus, FactoryctlError, NotFoundError, UsageError
from factoryctl.model import Job, JobState, Node
from factoryctl.scheduler.base import NextState, NodeStatus, Reservation, ReservationRequest
from factoryctl.scheduler.slurm_json import SlurmShapeError, parse_jobs, parse_nodes
from factoryctl.scheduler.slurm_parse import (
    SINFO_STATES_FORMAT,
    parse_reservations,
    parse_scontrol_jobs,
    parse_scontrol_nodes,
    parse_sinfo_states,
)

Runner = Callable[
    [Sequence[str], Mapping[str, str] | None, float], "subprocess.CompletedProcess[str]"
]

MAX_REASON = 512
_RESERVATION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")

# Messages Slurm prints when it cannot reach slurmctld (or munge): these are "unreachable",
# which scripts retry, rather than "the scheduler said no", which they must not.
_UNREACHABLE = (
    "unable to contact slurm controller",
    "connection refused",
    "socket timed out",
    "zero bytes were transmitted",
    "munge",
    "authentication failure",
    "unable to establish",
    "communication connection failure",
)
_NOT_FOUND = ("invalid node name specified", "not found", "requested reservation is invalid")


def subprocess_runner(
    argv: Sequence[str], env: Mapping[str, str] | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


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


@dataclass
class SlurmCLI:
    """The default backend. ``env`` is the environment for every Slurm command."""

    env: Mapping[str, str] | None = None
    timeout: float = 30.0
    runner: Runner = subprocess_runner
    name: str = "slurm"
    calls: list[list[str]] = field(default_factory=list)  # every argv run, for tests/bench
    # Slurm before 21.08 (or built without the JSON plugins) has no --json: fall back to
    # ``scontrol -o`` once and remember it. Before 23.02 scontrol has no --json.
    json_unsupported: bool = False
    scontrol_json_unsupported: bool = False

    def _run(self, argv: list[str]) -> str:
        self.calls.append(argv)
        try:
            result = self.runner(argv, self.env, self.timeout)
        except FileNotFoundError:
            raise FactoryctlError(
                f"{argv[0]} not found: is Slurm installed on this host?",
                ExitStatus.SCHEDULER_UNREACHABLE,
            ) from None
        except subprocess.TimeoutExpired:
            raise FactoryctlError(
                f"{argv[0]} did not answer within {self.timeout:.0f}s",
                ExitStatus.SCHEDULER_UNREACHABLE,
            ) from None
        if result.returncode != 0:
            raise classify_error(argv, (result.stderr or result.stdout).strip())
        return result.stdout

    # -- reads ----------------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        if not self.scontrol_json_unsupported and not self.json_unsupported:
            argv = ["scontrol", "--json", "show", "node"]
            try:
                return parse_nodes(self._run(argv), "scontrol --json show node")
            except FactoryctlError as err:
                if not _no_json(err):
                    raise
                self.scontrol_json_unsupported = True
        if not self.json_unsupported:
            try:
                return parse_nodes(self._run(["sinfo", "--json"]), "sinfo --json")
            except FactoryctlError as err:
                if not _no_json(err):
                    raise
                self.json_unsupported = True
        nodes = parse_scontrol_nodes(self._run(["scontrol", "-o", "-d", "show", "node"]))
        if not nodes:
            raise FactoryctlError(
                "scontrol -o show node listed no nodes", ExitStatus.SCHEDULER_ERROR
            )
        return nodes

    def node_states(self) -> dict[str, NodeStatus]:
        """Every node's state, reason and allocated GPUs, without its configuration: one
        grouped ``sinfo`` (0.06 s at 12,500 nodes, where the JSON node list takes 0.6 s
        in Slurm and as long again to parse). ``node_cache`` reads this every poll."""
        argv = ["sinfo", "--noheader", "--all", "-O", SINFO_STATES_FORMAT]
        return parse_sinfo_states(self._run(argv))

    def jobs(self) -> list[Job]:
        if not self.json_unsupported:
            try:
                # --states=all: from 23.02 on squeue --json leaves out finished jobs
                # (22.05 listed every job slurmctld still holds), and a job that just
                # ended is the one whose energy is asked for.
                argv = ["squeue", "--json", "--states=all"]
                return parse_jobs(self._run(argv), "squeue --json")
            except FactoryctlError as err:
                if not _no_json(err):
                    raise
                self.json_unsupported = True
        return parse_scontrol_jobs(self._run(["scontrol", "-o", "-d", "show", "job"]))

    def running_jobs(self) -> list[Job]:
        """The jobs an action's plan names: those holding nodes. From 23.02 on squeue
        --json honours --states, and leaves out the pending ones (2,936 of the 3,000 in
        benchmarks/scheduler_scale.py: 23 MB of JSON); 22.05 ignores it and prints all,
        so the filter is applied here as well."""
        if self.json_unsupported:
            return [j for j in self.jobs() if j.state is JobState.RUNNING]
        try:
            # Every Slurm state that maps onto RUNNING (slurm_parse.JOB_STATES).
            argv = ["squeue", "--json", "--states=RUNNING,SUSPENDED,COMPLETING,CONFIGURING"]
            jobs = parse_jobs(self._run(argv), "squeue --json")
        except FactoryctlError as err:
            if not _no_json(err):
                raise
            self.json_unsupported = True
            return self.running_jobs()
        return [j for j in jobs if j.state is JobState.RUNNING]

    def reservations(self) -> list[Reservation]:
        text = self._run(["scontrol", "-o", "show", "reservation"])
        return parse_reservations(text)

    # -- writes ---------------------------------------------------------------------------
    def drain(self, nodes: Sequence[str], reason: str) -> None:
        hl = validate_nodes(nodes)
        text = validate_reason(reason)
        self._run(["scontrol", "update", f"NodeName={hl}", "State=DRAIN", f"Reason={text}"])

    def resume(self, nodes: Sequence[str]) -> None:
        hl = validate_nodes(nodes)
        self._run(["scontrol", "update", f"NodeName={hl}", "State=RESUME"])

    def reboot(self, nodes: Sequence[str], reason: str, asap: bool, next_state: NextState) -> None:
        hl = validate_nodes(nodes)
        text = validate_reason(reason)
        argv = ["scontrol", "reboot"]
        if asap:
            argv.append("ASAP")
        argv += [f"nextstate={next_state.value.upper()}", f"reason={text}", hl]
        self._run(argv)

    def create_reservation(self, request: ReservationRequest) -> str:
        name = validate_reservation_name(request.name)
        hl = validate_nodes(request.nodes)
        start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(request.start_time))
        minutes = max(1, round(request.duration_seconds / 60))
        users = ",".join(reservation_users(request.users))
        self._run(
            [
                "scontrol",
                "create",
                "reservation",
                f"ReservationName={name}",
                f"Nodes={hl}",
                f"StartTime={start}",
                f"Duration={minutes}",
                f"Users={users}",
                "Flags=MAINT,IGNORE_JOBS",
            ]
        )
        return name

    def delete_reservation(self, name: str) -> None:
        self._run(["scontrol", "delete", f"ReservationName={validate_reservation_name(name)}"])


def _no_json(err: FactoryctlError) -> bool:
    """Slurm said it has no such JSON option (not: it printed JSON we do not understand)."""
    if isinstance(err, SlurmShapeError):
        return False
    text = err.message.lower()
    return err.status is ExitStatus.SCHEDULER_ERROR and (
        "unrecognized option" in text or ("json" in text and "plugin" in text)
    )


def classify_error(argv: Sequence[str], message: str) -> FactoryctlError:
    first = message.splitlines()[0] if message else f"exit status {argv[0]} failed"
    lowered = message.lower()
    # The command without its Key=value arguments (a reason can be 512 characters).
    what = " ".join(a for a in argv[:4] if "=" not in a)
    if any(m in lowered for m in _UNREACHABLE):
        hint = "" if "slurmctld" in lowered else " (is slurmctld running, and SLURM_CONF right?)"
        return FactoryctlError(
            f"scheduler unreachable ({what}): {first}{hint}", ExitStatus.SCHEDULER_UNREACHABLE
        )
    if any(m in lowered for m in _NOT_FOUND):
        return NotFoundError(f"{what}: {first}")
    return FactoryctlError(f"{what}: {first}", ExitStatus.SCHEDULER_ERROR)
