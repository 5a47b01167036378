"""Running a Slurm command and mapping its failure to our exit statuses.

``SlurmCLI`` runs every command through a ``Runner`` (``subprocess_runner``, or a fake in
tests); a non-zero exit becomes a ``FactoryctlError`` here (``classify_error``): "the
scheduler cannot be reached", which scripts retry, or "the scheduler said no", which they
must not. ``no_json`` and ``no_format`` tell a Slurm too old for an option from one that
printed something we do not understand.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence

from factoryctl.errors import ExitStatus, FactoryctlError, NotFoundError
from factoryctl.scheduler.slurm_json import SlurmShapeError

Runner = Callable[
    [Sequence[str], Mapping[str, str] | None, float], "subprocess.CompletedProcess[str]"
]

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
    # sacct when slurmdbd is down or unreachable.
    "problem talking to the database",
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


def check_conf(env: Mapping[str, str]) -> None:
    """Fail at once on a SLURM_CONF that names no file.

    Slurm's clients wait for a missing slurm.conf to appear ("retrying in 1sec up to 60sec"),
    so without this check an operator with a mistyped SLURM_CONF waits out our whole timeout
    and is told only that the command did not answer.
    """
    conf = env.get("SLURM_CONF")
    if conf and not os.path.isfile(conf):
        raise FactoryctlError(
            f"scheduler unreachable: SLURM_CONF={conf} is not a file",
            ExitStatus.SCHEDULER_UNREACHABLE,
        )


def no_json(err: FactoryctlError) -> bool:
    """Slurm said it has no such JSON option (not: it printed JSON we do not understand)."""
    if isinstance(err, SlurmShapeError):
        return False
    text = err.message.lower()
    return err.status is ExitStatus.SCHEDULER_ERROR and (
        "unrecognized option" in text or ("json" in text and "plugin" in text)
    )


def no_format(err: FactoryctlError) -> bool:
    """sinfo said it does not know a field of ``-O`` (a Slurm older than the lab's)."""
    text = err.message.lower()
    return (
        err.status is ExitStatus.SCHEDULER_ERROR
        and "format" in text
        and ("invalid" in text or "unknown" in text or "unrecognized" in text)
    )


def classify_error(argv: Sequence[str], message: str) -> FactoryctlError:
    first = message.splitlines()[0] if message else f"exit status {argv[0]} failed"
    lowered = message.lower()
    # The command without its Key=value arguments (a reason can be 512 characters).
    what = " ".join(a for a in argv[:4] if "=" not in a)
    if any(m in lowered for m in _UNREACHABLE):
        daemon = "slurmdbd" if argv[0] == "sacct" else "slurmctld"  # sacct asks slurmdbd
        hint = "" if daemon in lowered else f" (is {daemon} running, and SLURM_CONF right?)"
        return FactoryctlError(
            f"scheduler unreachable ({what}): {first}{hint}", ExitStatus.SCHEDULER_UNREACHABLE
        )
    if any(m in lowered for m in _NOT_FOUND):
        return NotFoundError(f"{what}: {first}")
    return FactoryctlError(f"{what}: {first}", ExitStatus.SCHEDULER_ERROR)
