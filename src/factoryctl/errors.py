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
    SCHEDULER_ERROR = 12  # the scheduler refused or failed a command, or output not understood
    NO_GPU = 13  # the exporter could not initialise NVML
    ADDRESS_IN_USE = 14  # the exporter's listen address is taken
    ROLLOUT_BREAKER = 15  # rollout: --max-failures reached; the campaign paused
    ROLLOUT_ABORTED = 16  # rollout: the campaign was aborted
    ROLLOUT_PAUSED = 17  # rollout: paused (rollout pause, or no capacity left)
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


# One line each, for --help, the man pages and docs. Kept beside the enum so they agree.
EXIT_STATUS_HELP: dict[ExitStatus, str] = {
    ExitStatus.OK: "Success (an action that had nothing to do also succeeds).",
    ExitStatus.ERROR: "Unexpected failure.",
    ExitStatus.USAGE: "Bad flags or arguments: unknown option, malformed hostlist, bad value.",
    ExitStatus.NOT_FOUND: "Unknown node, job, GPU or reservation.",
    ExitStatus.CONFIG: "Missing, unreadable or invalid config file or environment value; no data source.",
    ExitStatus.REFUSED: "A guard refused the action (blast radius, reason ownership, no --yes without a TTY).",
    ExitStatus.PARTIAL: "The action succeeded on some nodes and failed on others.",
    ExitStatus.TIMEOUT: "--wait ran out of time.",
    ExitStatus.SCHEDULER_UNREACHABLE: "The scheduler (scontrol, slurmrestd) could not be reached.",
    ExitStatus.TELEMETRY_UNREACHABLE: "Prometheus could not be reached or did not answer in time.",
    ExitStatus.TELEMETRY_ERROR: "Prometheus answered with an error or a reply that is not JSON.",
    ExitStatus.SCHEMA_UNDETECTED: "No known GPU metric schema (factoryctl or dcgm-exporter) was found.",
    ExitStatus.SCHEDULER_ERROR: "The scheduler refused or failed a command, or printed output factoryctl does not understand.",
    ExitStatus.NO_GPU: "factoryctl-exporter could not initialise NVML.",
    ExitStatus.ADDRESS_IN_USE: "factoryctl-exporter's listen address is already in use.",
    ExitStatus.ROLLOUT_BREAKER: "rollout: the circuit breaker tripped (--max-failures); the campaign paused.",
    ExitStatus.ROLLOUT_ABORTED: "rollout: the campaign was aborted; failed nodes stay drained.",
    ExitStatus.ROLLOUT_PAUSED: "rollout: the campaign paused (rollout pause, or no capacity left).",
    ExitStatus.TRIAGE_WARNING: "triage --exit-code: warnings, nothing critical.",
    ExitStatus.TRIAGE_CRITICAL: "triage --exit-code: at least one critical problem.",
    ExitStatus.INTERRUPTED: "Interrupted (Ctrl-C).",
}
