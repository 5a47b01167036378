"""The commands a rollout runs per node (``--exec``, ``--check``): each in its own session
with its output in a log beside the journal, so that abort, a timeout or the cleanup after
a ``kill -9`` of the runner stops everything it started, by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Work:
    """A running --exec or --check."""

    step: str
    proc: subprocess.Popen[bytes]
    started: float
    log: Path


def start(argv: Sequence[str], log: Path, environ: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` with its output appended to ``log``; raises OSError if it cannot run."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(environ),
            start_new_session=True,
        )


def verdict(work: Work, now: float, timeout: float) -> str | None:
    """'ok', why it failed, or None while it runs (a run past ``timeout`` is killed)."""
    code = work.proc.poll()
    if code is None:
        if now - work.started > timeout:
            kill_session(work.proc)
            return f"timed out after {timeout:.0f}s"
        return None
    if code == 0:
        return "ok"
    tail = last_line(work.log)
    return f"exit status {code}" + (f": {tail}" if tail else "")


def kill_session(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def last_line(path: Path) -> str:
    """The last non-empty line of a log (what a failed check said last), at most 200 chars."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 2000))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:200] if lines else ""
