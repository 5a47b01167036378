"""End to end: the real ``factoryctl top`` in tmux against the real Slurm test cluster.

Keys go in with ``send-keys``, the screen comes back with ``capture-pane``: filter, drill
into a node, go back, mark it, drain it with a reason in the dialog, then check the
node's state in Slurm itself. No Prometheus here: the console reads nodes and jobs from
Slurm (GPU telemetry shows as unknown).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from factoryctl.lab.procs import stop_pid, wait_until
from factoryctl.lab.slurm import SlurmCluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]


@dataclass
class Tmux:
    socket: str
    env: dict[str, str]
    server_pid: int = 0

    def run(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout

    def sessions(self) -> list[str]:
        out = subprocess.run(
            ["tmux", "-L", self.socket, "list-sessions", "-F", "#{session_name}"],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        # The server exits with its last session: no server, no sessions.
        return out.stdout.split() if out.returncode == 0 else []

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "top")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "top", *keys)

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", "top", "-l", text)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        try:
            wait_until(lambda: text in self.screen(), timeout, f"{text!r} on screen")
        except TimeoutError:
            raise AssertionError(f"{text!r} never appeared; screen:\n{self.screen()}") from None
        return self.screen()


@pytest.fixture
def tmux(slurm: SlurmCluster, tmp_path: Path) -> Iterator[Tmux]:
    state = tmp_path / "state"
    env = {
        **slurm.env,
        "HOME": str(tmp_path),
        "USER": "erin",
        "XDG_STATE_HOME": str(state),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "FACTORYCTL_ACTIONS_BLAST_RADIUS_RATIO": "0.5",
        "TERM": "xterm-256color",
    }
    env.pop("TMUX", None)
    t = Tmux(f"factoryctl-e2e-{uuid.uuid4().hex[:8]}", env)
    command = shlex.join(
        [sys.executable, "-m", "factoryctl", "--scheduler", "slurm", "top", "--refresh", "1"]
    )
    t.run("new-session", "-d", "-s", "top", "-x", "120", "-y", "40", command)
    t.server_pid = int(t.run("display-message", "-p", "-t", "top", "#{pid}").strip())
    try:
        yield t
    finally:
        subprocess.run(
            ["tmux", "-L", t.socket, "kill-server"], env=env, capture_output=True, check=False
        )
        stop_pid(t.server_pid)


def test_filter_drill_mark_and_drain_in_tmux(slurm: SlurmCluster, tmux: Tmux) -> None:
    tmux.wait_for("<overview>")
    tmux.wait_for("Nodes  4:")
    tmux.keys(":")
    tmux.type("nodes")
    tmux.keys("Enter")
    tmux.wait_for("4/4 rows")
    tmux.keys("/")
    tmux.type("gpu0[2]")
    tmux.keys("Enter")
    screen = tmux.wait_for("1/4 rows")
    assert "gpu02" in screen and "gpu01" not in screen
    tmux.keys("Enter")
    tmux.wait_for("<node gpu02>")
    tmux.keys("Escape")
    tmux.wait_for("filter /gpu0[2]/")
    tmux.keys("Space")
    tmux.wait_for("marked 1")
    tmux.keys("d")
    screen = tmux.wait_for("Confirm drain")
    assert "drain 1 node(s): gpu02" in screen
    tmux.type("e2e tmux test")
    tmux.keys("Enter")
    tmux.wait_for("drain: 1 node(s) done")
    info = slurm.node_info("gpu02")
    assert "DRAIN" in info["State"], info
    shown = slurm.scontrol("show", "node", "gpu02", check=True).stdout
    assert "Reason=factoryctl: e2e tmux test (erin)" in shown, shown
    assert "DRAIN" not in slurm.node_info("gpu01")["State"]
    # The console shows the new state on its next poll.
    tmux.wait_for("drained")
    tmux.keys("q")
    wait_until(lambda: "top" not in tmux.sessions(), 10, "the console to quit")
