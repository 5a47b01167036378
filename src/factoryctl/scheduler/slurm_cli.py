"""Slurm over its command-line tools: reads as JSON or grouped sinfo, writes with scontrol.

Nodes come from the grouped ``sinfo -O`` checked against ``scontrol -o show node``
(``slurm_sinfo``; a tenth of the JSON's time at 12,500 nodes). Where those two disagree,
or sinfo is too old for the fields: ``scontrol --json show node`` (23.02 and later), else
``sinfo --json`` (21.08-22.05; from 23.02 on it prints node groups, not nodes), else
``scontrol -o -d`` text; each step down is taken once, when Slurm says the option is
unknown. Jobs come from ``squeue --json --states=all`` (finished jobs too, in every
generation). Whatever the JSON's generation, ``slurm_json`` maps it from its meta.

Every command is an argv list (never a shell string), so a reason such as
``bad DIMM; see `dmesg` $(id)`` reaches slurmctld byte for byte. Node names and reasons
are validated here (``slurm_validate``) as well as by the caller: this is the last gate
before a production scheduler. A whole node set goes to scontrol as one hostlist: one call
for 1,000 nodes. Running a command and mapping its failure live in ``slurm_run``, a job's
AdminComment and accounting record in ``slurm_job_record``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Job, JobState, Node
from factoryctl.scheduler import slurm_job_record
from factoryctl.scheduler.base import NextState, NodeStatus, Reservation, ReservationRequest
from factoryctl.scheduler.slurm_json import parse_jobs, parse_nodes
from factoryctl.scheduler.slurm_parse import (
    parse_reservations,
    parse_scontrol_jobs,
    parse_scontrol_nodes,
)
from factoryctl.scheduler.slurm_run import (
    Runner,
    check_conf,
    classify_error,
    no_format,
    no_json,
    subprocess_runner,
)
from factoryctl.scheduler.slurm_sinfo import (
    SCONTROL_NODES_ARGV,
    SINFO_NODES_ARGV,
    SINFO_STATES_FORMAT,
    parse_grouped_nodes,
    parse_sinfo_states,
)
from factoryctl.scheduler.slurm_squeue import (
    SCONTROL_JOBS_ARGV,
    SQUEUE_JSON_NOT_PENDING_ARGV,
    SQUEUE_LIST_ARGV,
    commented_jobs,
    merge_jobs,
    parse_job_rows,
)
from factoryctl.scheduler.slurm_validate import (
    MAX_REASON,
    reservation_users,
    validate_nodes,
    validate_reason,
    validate_reservation_name,
)


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
    # Nodes from the grouped sinfo where it agrees with scontrol; False: from the JSON list
    # alone (set once sinfo's -O does not know a field of SINFO_NODES_FORMAT; tests of the
    # JSON mapping). grouped_fallbacks: reads where the two disagreed (tests, benchmark).
    grouped: bool = True
    grouped_fallbacks: int = 0
    # Jobs as pending rows from squeue's text plus the others' JSON (slurm_squeue); False:
    # every job's JSON (tests of the JSON mapping). split_fallbacks: as grouped_fallbacks.
    split_jobs: bool = True
    split_fallbacks: int = 0

    def _run(self, argv: list[str], extra_env: Mapping[str, str] | None = None) -> str:
        self.calls.append(argv)
        env = self.env
        if extra_env:
            env = {**(os.environ if env is None else env), **extra_env}
        check_conf(os.environ if env is None else env)
        try:
            result = self.runner(argv, env, self.timeout)
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
        """Every node: from the grouped ``sinfo -O`` and the ``scontrol -o`` index where
        the two agree (``slurm_sinfo``: 0.2 s at 12,500 nodes), else from Slurm's JSON."""
        if self.grouped:
            try:
                grouped = self._run(list(SINFO_NODES_ARGV), {"SLURM_TIME_FORMAT": "%s"})
            except FactoryctlError as err:
                if not no_format(err):
                    raise
                self.grouped = False
            else:
                nodes = parse_grouped_nodes(grouped, self._run(list(SCONTROL_NODES_ARGV)))
                if nodes is not None:
                    return nodes
                self.grouped_fallbacks += 1
        return self.json_nodes()

    def json_nodes(self) -> list[Node]:
        """Every node from Slurm's JSON (``scontrol --json``, ``sinfo --json``), else from
        ``scontrol -o -d`` text: the full record, at 1 to 2 s for 12,500 nodes."""
        if not self.scontrol_json_unsupported and not self.json_unsupported:
            argv = ["scontrol", "--json", "show", "node"]
            try:
                return parse_nodes(self._run(argv), "scontrol --json show node")
            except FactoryctlError as err:
                if not no_json(err):
                    raise
                self.scontrol_json_unsupported = True
        if not self.json_unsupported:
            try:
                return parse_nodes(self._run(["sinfo", "--json"]), "sinfo --json")
            except FactoryctlError as err:
                if not no_json(err):
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
        grouped ``sinfo`` (0.06 to 0.13 s at 12,500 nodes, where the full list takes
        two reads and 0.3 s, or 1 to 3 s as JSON). ``node_cache`` reads this every poll."""
        argv = ["sinfo", "--noheader", "--all", "-O", SINFO_STATES_FORMAT]
        return parse_sinfo_states(self._run(argv))

    def jobs(self) -> list[Job]:
        """Every job slurmctld holds: the pending ones from squeue's text and the rest from
        its JSON (``slurm_squeue``), else every job's JSON."""
        if self.split_jobs and not self.json_unsupported:
            try:
                jobs = self._split_jobs()
            except FactoryctlError as err:
                if not no_json(err):
                    raise
                self.json_unsupported = True
            else:
                if jobs is not None:
                    return jobs
                self.split_fallbacks += 1
        return self.json_jobs()

    def _split_jobs(self) -> list[Job] | None:
        rows = parse_job_rows(self._run(list(SQUEUE_LIST_ARGV)))
        jobs = parse_jobs(self._run(list(SQUEUE_JSON_NOT_PENDING_ARGV)), "squeue --json")
        if any(j.state is JobState.PENDING for j in jobs):
            # This squeue ignores --states (22.05): its JSON is every job already, and the
            # text read would only add its own time from the next read on.
            self.split_jobs = False
        have = {j.job_id for j in jobs}
        pending = {r.job_id for r in rows if r.state == "PENDING"} - have
        if pending:  # 22.05's JSON holds every job already: nothing to ask
            commented = sorted(commented_jobs(self._run(list(SCONTROL_JOBS_ARGV))) & pending)
            if commented:
                argv = ["squeue", "--json", "--states=all", f"--jobs={','.join(commented)}"]
                jobs += parse_jobs(self._run(argv), "squeue --json")
        return merge_jobs(rows, jobs)

    def json_jobs(self) -> list[Job]:
        """Every job from ``squeue --json`` (23 MB and 1.4 s at 3,000 jobs on 24.11)."""
        if not self.json_unsupported:
            try:
                # --states=all: from 23.02 on squeue --json leaves out finished jobs
                # (22.05 listed every job slurmctld still holds), and a job that just
                # ended is the one whose energy is asked for.
                argv = ["squeue", "--json", "--states=all"]
                return parse_jobs(self._run(argv), "squeue --json")
            except FactoryctlError as err:
                if not no_json(err):
                    raise
                self.json_unsupported = True
        return parse_scontrol_jobs(self._run(["scontrol", "-o", "-d", "show", "job"]))

    def jobs_between(self, since: float, until: float) -> list[Job]:
        """Jobs that were eligible or ran in [since, until] from Slurm's accounting
        (``sacct``, slurmdbd): finished ones long after squeue forgot them."""
        from factoryctl.scheduler.slurm_accounting import parse_sacct, sacct_argv

        return parse_sacct(self._run(sacct_argv(since, until)))

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
            if not no_json(err):
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

    def clear_reason(self, nodes: Sequence[str]) -> None:
        # Slurm ignores an empty Reason= (it sets only a non-empty one): a blank is the
        # closest to "none" scontrol allows on a node in service.
        hl = validate_nodes(nodes)
        self._run(["scontrol", "update", f"NodeName={hl}", "Reason= "])

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

    def set_admin_comment(self, job_id: str, comment: str) -> None:
        """Replace the job's AdminComment: see ``slurm_job_record.set_admin_comment``."""
        slurm_job_record.set_admin_comment(self._run, job_id, comment)

    def accounted_job(self, job_id: str) -> Job | None:
        """The job as the accounting database holds it (None: it holds no such job): see
        ``slurm_job_record.accounted_job``."""
        return slurm_job_record.accounted_job(self._run, job_id)


# What callers took from here before the helpers had modules of their own.
__all__ = [
    "MAX_REASON",
    "Runner",
    "SlurmCLI",
    "classify_error",
    "reservation_users",
    "subprocess_runner",
    "validate_nodes",
    "validate_reason",
    "validate_reservation_name",
]
