"""drain/resume/reboot/maintenance/audit in-process over the demo scheduler."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from factoryctl.cli.env import Environment
from factoryctl.cli.main import main
from factoryctl.errors import ExitStatus
from factoryctl.model import NodeState
from factoryctl.scheduler.demo import DemoScheduler
from factoryctl.sim import SimConfig, SimFactory
from factoryctl.sim.workload import Workload


class _Out(io.StringIO):
    def __init__(self, tty: bool = False) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


@pytest.fixture
def sched() -> DemoScheduler:
    sim = SimFactory(SimConfig(nodes=10, gpus_per_node=8, jobs=False))
    sim.assign("7", "carol", "gpu001", [0, 1, 2], Workload.TRAINING)
    return DemoScheduler(sim)


@pytest.fixture
def cli(sched: DemoScheduler, tmp_path: Path):  # type: ignore[no-untyped-def]
    def run(*argv: str, tty: bool = False) -> Result:
        out, err = _Out(tty), _Out()
        env = Environment(
            stdout=out,
            stderr=err,
            stdin_isatty=tty,
            environ={"HOME": str(tmp_path), "USER": "dave", "XDG_STATE_HOME": str(tmp_path / "st")},
            clock=lambda: 1_767_240_000.0,
        )
        env.scheduler_factory = lambda _env: sched  # type: ignore[assignment,return-value]
        status = main(list(argv), env)
        return Result(status, out.getvalue(), err.getvalue())

    return run


def test_no_tty_needs_yes(cli, sched: DemoScheduler) -> None:  # type: ignore[no-untyped-def]
    r = cli("drain", "gpu001", "--reason", "x")
    assert r.status == ExitStatus.REFUSED and "--yes" in r.stderr
    assert sched.calls == []
    assert "gpu001" in r.stdout and "carol" in r.stdout  # the plan was shown first


def test_drain_json_per_node_results(cli, sched: DemoScheduler) -> None:  # type: ignore[no-untyped-def]
    r = cli("-o", "json", "drain", "gpu001", "--reason", "fan", "--yes")
    assert r.status == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["status"] == "ok" and doc["reason"] == "factoryctl: fan (dave)"
    assert doc["nodes"] == [
        {
            "name": "gpu001",
            "step": "act",
            "state_before": "mixed",
            "note": "",
            "result": "changed",
            "state": "draining",
        }
    ]
    assert doc["jobs"][0]["user"] == "carol" and doc["gpus_out_of_service"] == 8


def test_dry_run_changes_nothing(cli, sched: DemoScheduler, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("-o", "json", "reboot", "gpu002", "--reason", "fw", "--dry-run")
    assert r.status == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["kind"] == "plan" and plan["targets"] == ["gpu002"]
    assert sched.calls == [] and not (tmp_path / "st" / "factoryctl" / "audit.jsonl").exists()


def test_blast_radius_refusal_is_audited(cli, sched: DemoScheduler) -> None:  # type: ignore[no-untyped-def]
    r = cli("drain", "gpu[001-003]", "--reason", "x", "--yes")
    assert r.status == ExitStatus.REFUSED and "blast radius" in r.stderr
    assert sched.calls == []
    audit = cli("-o", "json", "audit")
    items = json.loads(audit.stdout)["items"]
    assert [i["status"] for i in items] == ["refused"]


def test_resume_refuses_foreign_reason_then_force(cli, sched: DemoScheduler) -> None:  # type: ignore[no-untyped-def]
    sched.sim.set_admin("gpu004", drain=True, reason="NHC: gpu lost")
    r = cli("resume", "gpu004", "--yes")
    assert r.status == ExitStatus.REFUSED and "NHC: gpu lost" in r.stderr and "--force" in r.stdout
    r = cli("resume", "gpu004", "--yes", "--force")
    assert r.status == 0, r.stderr
    assert {n.name: n.state for n in sched.nodes()}["gpu004"] is NodeState.IDLE


def test_bad_input_exit_statuses(cli, sched: DemoScheduler) -> None:  # type: ignore[no-untyped-def]
    assert cli("drain", "gpu[001-", "--reason", "x", "--yes").status == ExitStatus.USAGE
    assert cli("drain", "gpu077", "--reason", "x", "--yes").status == ExitStatus.NOT_FOUND
    assert cli("drain", "gpu001", "--yes").status == ExitStatus.USAGE  # --reason is required
    r = cli("drain", "gpu001", "--reason", "a\nb", "--yes")
    assert r.status == ExitStatus.USAGE and "Traceback" not in r.stderr
    assert (
        cli("drain", "gpu001", "--reason", "x", "--wait", "--timeout", "soon").status
        == ExitStatus.USAGE
    )
    assert sched.calls == []


def test_maintenance_commands(cli, sched: DemoScheduler) -> None:  # type: ignore[no-untyped-def]
    r = cli(
        "maintenance",
        "create",
        "--nodes",
        "gpu005",
        "--start",
        "now+1h",
        "--duration",
        "2h",
        "--reason",
        "psu",
        "--name",
        "psu-swap",
        "--yes",
    )
    assert r.status == 0, r.stderr
    listed = json.loads(cli("-o", "json", "maintenance", "list").stdout)["items"]
    assert [(i["name"], i["node_list"], i["end_time"] - i["start_time"]) for i in listed] == [
        ("psu-swap", ["gpu005"], 7200.0)
    ]
    assert cli("maintenance", "delete", "psu-swap", "--yes").status == 0
    assert cli("maintenance", "delete", "psu-swap", "--yes").status == ExitStatus.NOT_FOUND
    table = cli("audit").stdout
    assert "maintenance " in table and "maintenance-delete" in table


def test_wait_progress_quiet_without_tty(cli, sched: DemoScheduler) -> None:  # type: ignore[no-untyped-def]
    r = cli("drain", "gpu003", "--reason", "x", "--yes", "--wait", "--timeout", "5s")
    assert r.status == 0, r.stderr
    assert "waiting: drain 1/1 node(s) done" in r.stderr and "\r" not in r.stderr


@pytest.mark.parametrize(
    ("answer", "status"), [("n\n", ExitStatus.REFUSED), ("y\n", ExitStatus.OK)]
)
def test_tty_asks_for_confirmation(
    cli, sched: DemoScheduler, monkeypatch: pytest.MonkeyPatch, answer: str, status: ExitStatus
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    r = cli("drain", "gpu003", "--reason", "x", tty=True)
    assert r.status == status, r.stderr
    assert len(sched.calls) == (1 if status is ExitStatus.OK else 0)


def test_refusal_as_json_says_why_per_node(cli, sched: DemoScheduler) -> None:  # type: ignore[no-untyped-def]
    sched.sim.set_admin("gpu004", drain=True, reason="NHC: gpu lost")
    r = cli("-o", "json", "resume", "gpu004", "--yes")
    assert r.status == ExitStatus.REFUSED
    doc = json.loads(r.stdout)
    assert doc["status"] == "refused" and doc["exit_status"] == 5
    assert doc["nodes"][0]["step"] == "refuse" and "NHC: gpu lost" in doc["nodes"][0]["note"]


def test_demo_actions_act_on_the_factory_the_views_show(tmp_path: Path) -> None:
    out, err = _Out(), _Out()
    env = Environment(
        stdout=out,
        stderr=err,
        stdin_isatty=False,
        environ={"HOME": str(tmp_path), "USER": "dave", "FACTORYCTL_DEMO_NODES": "16"},
    )
    assert main(["--demo", "drain", "gpu001", "--reason", "demo", "--yes"], env) == 0, (
        err.getvalue()
    )
    node = env.source().snapshot().node("gpu001")
    assert node is not None and node.state in (NodeState.DRAINING, NodeState.DRAINED)
    assert node.reason == "factoryctl: demo (dave)"
