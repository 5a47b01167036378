"""One error base class carrying a user-facing message and an exit status.

Anything raised as ``FactoryctlError`` is printed as one line on stderr, never with a
traceback. Scripts rely on the exit statuses: they are stable, never renumbered.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1  # unexpected failure
    USAGE = 2  # bad flags or arguments (click's own usage errors use 2 as well)
    NOT_FOUND = 3  # unknown node, job, GPU or reservation
    CONFIG = 4  # missing, unreadable or invalid config file
    REFUSED = 5  # a guard refused the action (blast radius, reason ownership, no --yes)
    PARTIAL = 6  # an action succeeded on some nodes and failed on others
    TIMEOUT = 7  # --wait ran out of time
    SCHEDULER_UNREACHABLE = 8  # Slurm (scontrol, slurmrestd) could not be reached
    TELEMETRY_UNREACHABLE = 9  # Prometheus could not be reached or timed out
    TELEMETRY_ERROR = 10  # Prometheus answered with an error or with garbage
    SCHEMA_UNDETECTED = 11  # no known GPU metric schema found in Prometheus
    SCHEDULER_ERROR = 12  # the scheduler refused or failed a command
    NO_GPU = 13  # the exporter could not initialise NVML
    ADDRESS_IN_USE = 14  # the exporter's listen address is taken
    TRIAGE_WARNING = 20  # triage --exit-code: warnings, nothing critical
    TRIAGE_CRITICAL = 21  # triage --exit-code: at least one critical problem
    INTERRUPTED = 130


class FactoryctlError(Exception):
    """An error the user can act on. ``str(err)`` is the one line we print."""

    status: ExitStatus = ExitStatus.ERROR

    def __init__(self, message: str, status: ExitStatus | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self.args[0])


class UsageError(FactoryctlError):
    status = ExitStatus.USAGE


class NotFoundError(FactoryctlError):
    status = ExitStatus.NOT_FOUND


class ConfigError(FactoryctlError):
    status = ExitStatus.CONFIG
