"""The one gate between a scheduler backend and the commands: fail loudly, never emptily.

A backend turns what it understands into the domain and raises ``FactoryctlError`` for
what it does not. Anything else it raises (a ``KeyError`` or ``TypeError`` from output of
a shape nobody foresaw, a parser bug) would otherwise end a command in a traceback, or
be mistaken for an empty cluster by whoever catches it. ``checked`` wraps the scheduler
the environment opens, so every command (and the sources that join the scheduler with
telemetry) sees such a failure as one line naming the backend and the command it ran,
with ``SCHEDULER_ERROR``. Errors of our own code outside the backend are not touched.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Job, Node
from factoryctl.scheduler.base import NextState, Reservation, ReservationRequest, Scheduler

T = TypeVar("T")
# Reads a backend may lack: ``jobs_between`` (Slurm's accounting: sacct, or slurmrestd's
# /slurmdb/ endpoints).
_OPTIONAL_READS = ("jobs_between",)
_MAX_DETAIL = 200


class CheckedScheduler:
    """A ``Scheduler`` whose every call raises nothing but ``FactoryctlError``.

    Other attributes (``calls``, ``sim``, ``version``) are the backend's own."""

    def __init__(self, inner: Scheduler) -> None:
        self.inner = inner
        self.name = str(getattr(inner, "name", "") or type(inner).__name__)

    def __getattr__(self, attr: str) -> Any:
        if attr == "inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(attr)
        found = getattr(self.inner, attr)
        if attr in _OPTIONAL_READS and callable(found):
            # A read only some backends have (hasattr says which), behind the gate too.
            return functools.partial(self._call, attr, found)
        return found

    def __repr__(self) -> str:
        return f"CheckedScheduler({self.inner!r})"

    def _call(self, method: str, fn: Callable[..., T], *args: Any) -> T:
        made = _calls_made(self.inner)
        try:
            return fn(*args)
        except FactoryctlError:
            raise
        except Exception as err:  # the point: nothing else gets through
            command = _last_command(self.inner, made)
            where = f"{_short(command)}: output not understood" if command else f"{method}() failed"
            detail = _short(f"{type(err).__name__}: {err}")
            raise FactoryctlError(
                f"scheduler {self.name}: {where} ({detail})", ExitStatus.SCHEDULER_ERROR
            ) from err

    # -- reads ----------------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        return self._call("nodes", self.inner.nodes)

    def jobs(self) -> list[Job]:
        return self._call("jobs", self.inner.jobs)

    def running_jobs(self) -> list[Job]:
        """The running jobs, read cheaply where the backend can (``SlurmCLI``), else
        every job (a plan keeps the running ones either way)."""
        read = getattr(self.inner, "running_jobs", None)
        return self._call("jobs", read if callable(read) else self.inner.jobs)

    def reservations(self) -> list[Reservation]:
        return self._call("reservations", self.inner.reservations)

    # -- writes ---------------------------------------------------------------------------
    def drain(self, nodes: Sequence[str], reason: str) -> None:
        self._call("drain", self.inner.drain, nodes, reason)

    def resume(self, nodes: Sequence[str]) -> None:
        self._call("resume", self.inner.resume, nodes)

    def clear_reason(self, nodes: Sequence[str]) -> None:
        self._call("clear_reason", self.inner.clear_reason, nodes)

    def reboot(self, nodes: Sequence[str], reason: str, asap: bool, next_state: NextState) -> None:
        self._call("reboot", self.inner.reboot, nodes, reason, asap, next_state)

    def create_reservation(self, request: ReservationRequest) -> str:
        return self._call("create_reservation", self.inner.create_reservation, request)

    def delete_reservation(self, name: str) -> None:
        self._call("delete_reservation", self.inner.delete_reservation, name)

    def set_admin_comment(self, job_id: str, comment: str) -> None:
        """Only backends that can write a job's AdminComment have it (Slurm's CLI)."""
        write = getattr(self.inner, "set_admin_comment", None)
        if write is None:
            raise FactoryctlError(
                f"scheduler {self.name} cannot write a job's AdminComment (use --scheduler slurm)",
                ExitStatus.CONFIG,
            )
        self._call("set_admin_comment", write, job_id, comment)

    def accounted_job(self, job_id: str) -> Job | None:
        read = getattr(self.inner, "accounted_job", None)
        if read is None:
            return None  # no accounting reader: slurmctld's copy is all there is
        result: Job | None = self._call("accounted_job", read, job_id)
        return result


def checked(scheduler: Scheduler) -> CheckedScheduler:
    """``scheduler`` behind the gate (once: a checked scheduler is returned as it is)."""
    return scheduler if isinstance(scheduler, CheckedScheduler) else CheckedScheduler(scheduler)


def _short(text: str) -> str:
    one = " ".join(text.split())
    return one if len(one) <= _MAX_DETAIL else one[: _MAX_DETAIL - 3] + "..."


def _calls_made(backend: object) -> int:
    calls = getattr(backend, "calls", None)
    return len(calls) if isinstance(calls, list) else 0


def _last_command(backend: object, made_before: int) -> str:
    """The command (argv or REST path) the failing call ran, where the backend records
    them (``SlurmCLI.calls``, ``SlurmRestd.calls``); "" when it ran none."""
    calls = getattr(backend, "calls", None)
    if not isinstance(calls, list) or len(calls) <= made_before:
        return ""
    last = calls[-1]
    if isinstance(last, str):
        return last
    if isinstance(last, list | tuple) and all(isinstance(a, str) for a in last):
        return " ".join(last)
    return ""
