"""The shipped EpilogSlurmctld wrapper on its own: whatever factoryctl does (hangs, fails,
is missing), the script exits 0, is bounded in time, and logs one line. A stand-in
program plays factoryctl; the real one, in real Slurm, is tests/integration/
test_energy_epilog.py. Cost: about 4 s (one 2-second hard timeout)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "exporters" / "slurm" / "factoryctl-energy-epilog.sh"


def _run(tmp_path: Path, program: str, **env: str) -> tuple[int, float, str]:
    fake = tmp_path / "factoryctl"
    fake.write_text(f"#!/bin/sh\n{program}\n")
    fake.chmod(0o755)
    log = tmp_path / "epilog.log"
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "FACTORYCTL": str(fake),
        "FACTORYCTL_EPILOG_LOG": str(log),
        "FACTORYCTL_EPILOG_DETACH": "0",
        "SLURM_JOB_ID": "4242",
        **env,
    }
    began = time.monotonic()
    rc = subprocess.run([str(SCRIPT)], env=environ, timeout=30).returncode
    took = time.monotonic() - began
    return rc, took, log.read_text() if log.exists() else ""


def test_a_recorded_job_is_logged(tmp_path: Path) -> None:
    rc, _, log = _run(tmp_path, 'echo "job $4: recorded: factoryctl:v1 job=$4"')
    assert rc == 0
    assert log.endswith("job 4242: recorded: factoryctl:v1 job=4242\n"), log
    # The command's own --timeout is under the hard one, so it can give up cleanly.
    rc, _, log = _run(tmp_path, 'echo "args: $*"', FACTORYCTL_EPILOG_TIMEOUT="30")
    assert "args: job-epilog --timeout 27 4242" in log


@pytest.mark.parametrize(
    ("program", "env", "said"),
    [
        ("echo 'factoryctl: error: cannot reach Prometheus' >&2; exit 9", {},
         "job 4242: nothing recorded (exit 9): factoryctl: error: cannot reach Prometheus"),
        ("exec sleep 60", {"FACTORYCTL_EPILOG_TIMEOUT": "2"},
         "job 4242: killed after 2s; nothing recorded"),
        ("exit 0", {"SLURM_JOB_ID": "12; rm -rf /"}, "no usable SLURM_JOB_ID (12; rm -rf /)"),
        ("exit 0", {"FACTORYCTL": "/nonexistent/factoryctl"}, "nothing recorded (exit 127)"),
    ],
)  # fmt: skip
def test_every_failure_exits_0_bounded_and_logged(
    tmp_path: Path, program: str, env: dict[str, str], said: str
) -> None:
    rc, took, log = _run(tmp_path, program, **env)
    assert rc == 0
    assert said in log, log
    assert took < 8, took  # the hard bound (2 s here) plus the kill grace


def test_detached_it_returns_at_once(tmp_path: Path) -> None:
    """Slurm waits for EpilogSlurmctld: the work goes to its own session."""
    rc, took, _ = _run(tmp_path, "sleep 3; echo late", FACTORYCTL_EPILOG_DETACH="1")
    assert rc == 0 and took < 2, took
    log = tmp_path / "epilog.log"
    deadline = time.monotonic() + 10
    while not (log.exists() and "late" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "late" in log.read_text()
