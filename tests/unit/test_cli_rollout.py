"""factoryctl rollout through the CLI, over the fake Slurm of test_rollout (no lab needed)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from factoryctl.cli.env import Environment
from factoryctl.cli.main import main
from factoryctl.errors import ExitStatus
from tests.unit.test_rollout import FakeSlurm


class _Stream(io.StringIO):
    def __init__(self, tty: bool = False) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class CLI:
    def __init__(self, tmp_path: Path) -> None:
        self.slurm = FakeSlurm()
        self.state = tmp_path / "state"
        self.tmp = tmp_path

    def __call__(self, *argv: str, tty: bool = False, stdin: str = "") -> tuple[int, str, str]:
        out, err = _Stream(), _Stream(tty)
        env = Environment(
            stdout=out,
            stderr=err,
            stdin_isatty=tty,
            environ={
                "HOME": str(self.tmp),
                "USER": "erin",
                "PATH": "/usr/bin:/bin",
                "XDG_STATE_HOME": str(self.state),
                "FACTORYCTL_ACTIONS_BLAST_RADIUS_RATIO": "0.5",
                "FACTORYCTL_ROLLOUT_INTERVAL": "0.01",
            },
        )
        env.scheduler_factory = lambda _env: self.slurm  # type: ignore[assignment,return-value]
        status = main(list(argv), env)
        return status, out.getvalue(), err.getvalue()

    def journals(self) -> list[Path]:
        return sorted((self.state / "factoryctl" / "rollouts").glob("*.jsonl"))


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path)


def test_no_terminal_without_yes_is_refused_and_nothing_starts(cli: CLI) -> None:
    status, out, err = cli("rollout", "start", "n[01-02]", "--reason", "fw")
    assert status == ExitStatus.REFUSED and "--yes" in err
    assert "rollout" in out and "at least 7 stay in service" in out
    assert cli.journals() == [] and cli.slurm.calls == []


def test_dry_run_json_is_one_plan_line(cli: CLI) -> None:
    status, out, err = cli(
        "-o",
        "json",
        "rollout",
        "start",
        "n[01-04]",
        "--reason",
        "fw",
        "--max-unavailable",
        "2",
        "--dry-run",
    )
    assert status == 0 and "dry run" in err
    (line,) = out.splitlines()
    plan = json.loads(line)
    assert plan["event"] == "plan" and plan["waves"] == [["n01", "n02"], ["n03", "n04"]]
    assert plan["dry_run"] is True and cli.journals() == [] and cli.slurm.calls == []


def test_run_then_status_and_list(cli: CLI) -> None:
    status, out, err = cli(
        "rollout",
        "start",
        "n[01-03]",
        "--reason",
        "fw",
        "--yes",
        "--max-unavailable",
        "2",
        "--check",
        "sh -c 'test {node} != n02'",
    )
    assert status == ExitStatus.PARTIAL, err
    assert "n02 failed (check failed: exit status 1)" in err
    assert err.strip().splitlines()[-1].startswith("factoryctl: error: rollout ")
    status, out, _ = cli("rollout", "status")
    assert status == 0 and "finished" in out and "n02   failed" in out
    status, out, _ = cli("-o", "json", "rollout", "list")
    (item,) = json.loads(out)["items"]
    assert (item["user"], item["done"], item["failed"], item["status"]) == (
        "erin",
        2,
        1,
        "finished",
    )
    status, _, err = cli("rollout", "resume", item["id"], "--yes")
    assert status == ExitStatus.REFUSED and "finished" in err


def test_json_events_one_per_line(cli: CLI) -> None:
    status, out, _ = cli("rollout", "start", "n[01-02]", "--reason", "fw", "--yes", "-o", "json")
    assert status == 0
    events: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines()]
    assert events[0]["event"] == "plan"
    assert [e["phase"] for e in events if e.get("node") == "n01"] == [
        "draining",
        "drained",
        "resuming",
        "done",
    ]
    assert events[-1]["status"] == "finished"


def test_unknown_campaign_and_no_campaign(cli: CLI) -> None:
    status, _, err = cli("rollout", "status")
    assert status == ExitStatus.NOT_FOUND and "no campaigns" in err
    status, _, err = cli("rollout", "status", "deadbeef")
    assert status == ExitStatus.NOT_FOUND and "unknown campaign" in err
    status, _, err = cli("rollout", "pause", "../x")
    assert status == ExitStatus.USAGE
    status, out, _ = cli("rollout", "list")
    assert status == 0 and "No campaigns" in out


def test_pause_of_a_campaign_nobody_runs_then_abort(cli: CLI) -> None:
    from factoryctl.actions.rollout_journal import Store
    from factoryctl.actions.rollout_plan import RolloutSpec, build_rollout_plan, create

    store = Store(cli.state / "factoryctl" / "rollouts")
    plan = build_rollout_plan(
        RolloutSpec("n[01-02]", "fw", "erin"),
        cli.slurm,
        __import__("factoryctl.actions.guards", fromlist=["BlastRadius"]).BlastRadius(0.5),
        {"PATH": "/bin"},
        "abcd0001",
        {},
    )
    create(store, plan, [], 0.0)
    assert cli("rollout", "list")[1].count("interrupted") == 1
    assert cli("rollout", "pause", "abcd0001")[0] == 0
    assert "paused" in cli("rollout", "status", "abcd0001")[1]
    status, _, err = cli("rollout", "abort", "abcd0001", "--yes")
    assert status == ExitStatus.ROLLOUT_ABORTED and "no node left drained" in err
    assert cli.slurm.calls == []


def test_failed_nodes_use_up_the_capacity_and_the_campaign_pauses(cli: CLI) -> None:
    # One at a time (the default): n01 fails and stays drained, so nothing else may start.
    status, _, err = cli(
        "rollout", "start", "n[01-03]", "--reason", "fw", "--yes", "--exec", "false {node}"
    )
    assert status == ExitStatus.ROLLOUT_PAUSED
    assert "no capacity: n01 out of service" in err and "2 node(s) not started" in err
    assert "paused: paused" not in err
    cli.slurm.resume(["n01"])  # an operator repairs it
    status, _, err = cli("rollout", "resume", "--yes", "--reason", "n01 fixed")
    assert status == ExitStatus.ROLLOUT_PAUSED  # n02 fails the same way: consistent
    assert "n02 out of service" in err


def test_list_shows_campaigns_of_other_state_directories_from_slurm(cli: CLI) -> None:
    cli.slurm.drain(["n07", "n08"], "factoryctl rollout 0bad0bad: bios (bob) : reboot issued")
    status, out, _ = cli("-o", "json", "rollout", "list")
    (item,) = json.loads(out)["items"]
    assert (item["id"], item["user"], item["status"], item["nodes"]) == (
        "0bad0bad",
        "bob",
        "elsewhere",
        "n[07-08]",
    )
    status, out, _ = cli("rollout", "list")
    assert status == 0 and "elsewhere" in out and "bob" in out


def test_plan_says_whether_the_telemetry_gate_is_on(cli: CLI) -> None:
    start = ("rollout", "start", "n01", "--reason", "fw", "--dry-run")
    _, out, _ = cli(*start)
    assert "telemetry gate: off (no Prometheus configured): GPU telemetry is not checked" in out
    _, out, _ = cli("--prometheus", "http://127.0.0.1:9", *start, "--no-telemetry-gate")
    assert "telemetry gate: off (--no-telemetry-gate)" in out
    _, out, _ = cli("--prometheus", "http://127.0.0.1:9", *start, "--gpu-wait", "90s")
    assert "telemetry gate: before resuming, the GPUs Slurm expects report (Prometheus at " in out
    assert "waiting up to 90s" in out and "-> check" not in out and "-> telemetry gate ->" in out


def test_unreachable_telemetry_fails_the_node_and_resume_needs_prometheus(cli: CLI) -> None:
    from factoryctl.lab.procs import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: every read is refused
    status, _, err = cli(
        "--prometheus", url, "rollout", "start", "n[01-03]", "--reason", "fw",
        "--gpu-wait", "1s", "--max-failures", "1", "--yes",
    )  # fmt: skip
    assert status == ExitStatus.ROLLOUT_BREAKER, err
    assert "n01 failed (gpus failed: cannot read GPU telemetry: cannot reach Prometheus" in err
    assert cli.slurm.n["n01"].reason.startswith("factoryctl rollout ")
    assert ": gpus failed: fw (erin)" in cli.slurm.n["n01"].reason
    status, _, err = cli("rollout", "resume", "--yes")
    assert status == ExitStatus.REFUSED and len(err.strip().splitlines()) == 1
    assert "gates on GPU telemetry" in err and "--prometheus URL" in err
    (journal,) = cli.journals()
    assert not [r for r in journal.read_text().splitlines() if '"control"' in r]  # untouched
    status, _, err = cli("rollout", "abort", "--yes")  # abort needs no telemetry
    assert status == ExitStatus.ROLLOUT_ABORTED, err
