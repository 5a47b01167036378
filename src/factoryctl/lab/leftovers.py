"""Finding and stopping what a lab cluster left behind, by PID, never by name.

Job steps (slurmstepd and the job's processes) outlive a killed slurmd, and slurmd
restarted by a simulated reboot is nobody's child. Every such process carries
``FACTORYCTL_LAB_DIR=<the cluster's directory>`` in its environment: that, not a process
name, is how we know it is ours (other clusters run beside us)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def kill_all(pids: list[int]) -> None:
    # Not group leaders (stop_pid signals groups), so signal each PID itself.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(_exists(p) for p in pids):
            time.sleep(0.05)


def _exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def our_processes(directory: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        pid = int(entry.name) if entry.name.isdigit() else 0
        if pid and pid != os.getpid() and is_ours(pid, directory):
            pids.append(pid)
    return pids


def is_ours(pid: int, directory: Path) -> bool:
    """True when ``pid`` is a process started for this cluster (checks its environment).

    A pid file can outlive its process and the PID be reused by someone else's process;
    we only signal a process whose environment names our lab directory.
    """
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"FACTORYCTL_LAB_DIR={directory}".encode() in environ.split(b"\0")
