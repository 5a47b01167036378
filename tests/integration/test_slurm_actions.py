"""drain / resume / reboot / maintenance / audit against a real multi-node Slurm 22.05."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from factoryctl.cli.env import Environment
from factoryctl.cli.main import main
from factoryctl.errors import ExitStatus
from factoryctl.lab.procs import free_port
from factoryctl.lab.slurm import SlurmCluster

pytestmark = [pytest.mark.integration]


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class _Err(io.StringIO):
    def isatty(self) -> bool:
        return False


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def fctl(slurm: SlurmCluster, state_dir: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """factoryctl in-process against the real cluster (SlurmCLI backend, real scontrol)."""

    def run(*argv: str, ratio: str = "0.5", environ: dict[str, str] | None = None) -> Result:
        out, err = io.StringIO(), _Err()
        env = Environment(
            stdout=out,
            stderr=err,
            stdin_isatty=False,
            environ={
                **slurm.env,
                "HOME": str(tmp_path),
                "USER": "erin",
                "XDG_STATE_HOME": str(state_dir),
                "FACTORYCTL_ACTIONS_BLAST_RADIUS_RATIO": ratio,
                **(environ or {}),
            },
        )
        status = main(["--scheduler", "slurm", *argv], env)
        return Result(status, out.getvalue(), err.getvalue())

    return run


def _audit(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "factoryctl" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _sinfo(slurm: SlurmCluster) -> dict[str, dict[str, Any]]:
    """Slurm's own view of each node, in every generation (not through our parsers)."""
    return slurm.node_table()


def test_drain_while_a_job_runs_draining_then_drained_with_wait(
    slurm: SlurmCluster, fctl, state_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    job = slurm.sbatch("-w", "gpu01", "--gres=gpu:2", "-J", "train-x", script="sleep 6")
    slurm.wait_job_running(job)
    r = fctl(
        "-o",
        "json",
        "drain",
        "gpu01",
        "--reason",
        "disk swap",
        "--yes",
        "--wait",
        "--timeout",
        "60s",
    )
    assert r.status == 0, r.stderr
    doc = r.json()
    assert doc["nodes"][0]["state_before"] == "mixed"
    assert doc["nodes"][0]["state"] == "drained" and doc["waited"]
    assert doc["jobs"] == [
        {
            "job_id": job,
            "user": "root",
            "name": "train-x",
            "gpus": 2,
            "effect": doc["jobs"][0]["effect"],
        }
    ]
    assert "waiting: drain 0/1" in r.stderr and "waiting: drain 1/1" in r.stderr
    _start, result, waited = _audit(state_dir)
    assert result["result"]["gpu01"] == {"result": "changed", "state": "draining"}
    assert waited["event"] == "wait" and waited["result"]["gpu01"]["state"] == "drained"
    node = _sinfo(slurm)["gpu01"]
    assert node["state"] == "idle" and "DRAIN" in node["state_flags"]
    assert node["reason"] == "factoryctl: disk swap (erin)"


def test_drain_wait_timeout(slurm: SlurmCluster, fctl) -> None:  # type: ignore[no-untyped-def]
    job = slurm.sbatch("-w", "gpu02", "--gres=gpu:1", script="sleep 120")
    slurm.wait_job_running(job)
    t0 = time.monotonic()
    r = fctl("drain", "gpu02", "--reason", "x", "--yes", "--wait", "--timeout", "2s")
    assert r.status == ExitStatus.TIMEOUT, r.stderr
    assert time.monotonic() - t0 < 15
    assert "timed out" in r.stderr


def test_resume_with_reason_ownership(slurm: SlurmCluster, fctl, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    slurm.scontrol(
        "update", "NodeName=gpu03", "State=DRAIN", "Reason=NHC: check_gpu failed", check=True
    )
    assert fctl("drain", "gpu02", "--reason", "fan", "--yes").status == 0
    r = fctl("resume", "gpu[02-03]", "--yes")
    assert r.status == ExitStatus.REFUSED
    assert "gpu03" in r.stderr and "NHC: check_gpu failed" in r.stderr and "--force" in r.stderr
    nodes = _sinfo(slurm)
    assert "DRAIN" in nodes["gpu02"]["state_flags"] and "DRAIN" in nodes["gpu03"]["state_flags"]
    r = fctl("-o", "json", "resume", "gpu02", "--yes")
    assert r.status == 0, r.stderr
    assert r.json()["nodes"][0]["result"] == "changed"
    r = fctl("-o", "json", "resume", "gpu[02,04]", "--yes")  # idle already: not an error
    assert r.status == 0 and {n["result"] for n in r.json()["nodes"]} == {"unchanged"}
    r = fctl("resume", "gpu03", "--yes", "--force")
    assert r.status == 0, r.stderr
    nodes = _sinfo(slurm)
    assert (
        "DRAIN" not in nodes["gpu02"]["state_flags"]
        and "DRAIN" not in nodes["gpu03"]["state_flags"]
    )
    assert [(r["event"], r["verb"]) for r in _audit(state_dir)] == [
        ("start", "drain"),
        ("result", "drain"),
        ("refused", "resume"),
        ("start", "resume"),
        ("result", "resume"),
        ("start", "resume"),
        ("result", "resume"),
        ("start", "resume"),
        ("result", "resume"),
    ]


def test_blast_radius_refusal(slurm: SlurmCluster, fctl) -> None:  # type: ignore[no-untyped-def]
    r = fctl("drain", "gpu[01-02]", "--reason", "x", "--yes", ratio="0.10")
    assert r.status == ExitStatus.REFUSED and "blast radius" in r.stderr
    assert all(not n["state_flags"] for n in _sinfo(slurm).values())
    r = fctl("drain", "gpu[01-02]", "--reason", "x", "--yes", "--force", ratio="0.10")
    assert r.status == 0, r.stderr


def test_reboot_next_state_resume(slurm: SlurmCluster, fctl) -> None:  # type: ignore[no-untyped-def]
    r = fctl(
        "-o",
        "json",
        "reboot",
        "gpu04",
        "--reason",
        "firmware",
        "--next-state",
        "resume",
        "--yes",
        "--wait",
        "--timeout",
        "60s",
    )
    assert r.status == 0, r.stderr
    assert r.json()["nodes"][0]["state"] == "idle"
    assert "reboot gpu04" in (slurm.dir / "log" / "reboots.log").read_text()
    node = _sinfo(slurm)["gpu04"]
    assert node["state"] == "idle" and not set(node["state_flags"]) & {"DRAIN", "REBOOT_ISSUED"}


def test_maintenance_create_list_delete(slurm: SlurmCluster, fctl, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    r = fctl(
        "maintenance",
        "create",
        "--nodes",
        "gpu[03-04]",
        "--start",
        "now+1h",
        "--duration",
        "2h",
        "--reason",
        "PDU swap",
        "--name",
        "pdu-swap",
        "--yes",
    )
    assert r.status == 0, r.stderr
    shown = slurm.scontrol("-o", "show", "reservation", "pdu-swap", check=True).stdout
    assert "Flags=MAINT,IGNORE_JOBS" in shown and "Nodes=gpu[03-04]" in shown
    items = fctl("-o", "json", "maintenance", "list").json()["items"]
    assert [(i["name"], i["node_list"], i["maintenance"]) for i in items] == [
        ("pdu-swap", ["gpu03", "gpu04"], True)
    ]
    assert round(items[0]["end_time"] - items[0]["start_time"]) == 7200
    assert abs(items[0]["start_time"] - (time.time() + 3600)) < 120
    assert fctl("maintenance", "delete", "pdu-swap", "--yes").status == 0
    assert "No reservations" in slurm.scontrol("-o", "show", "reservation").stdout
    assert fctl("maintenance", "delete", "pdu-swap", "--yes").status == ExitStatus.NOT_FOUND
    verbs = [(r["event"], r["verb"]) for r in _audit(state_dir)]
    assert verbs == [
        ("start", "maintenance"),
        ("result", "maintenance"),
        ("start", "maintenance-delete"),
        ("result", "maintenance-delete"),
    ]


def test_dry_run_changes_nothing(slurm: SlurmCluster, fctl, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    before = {k: (v["state"], v["state_flags"], v["reason"]) for k, v in _sinfo(slurm).items()}
    for argv in (
        ("drain", "gpu01", "--reason", "x", "--dry-run"),
        ("reboot", "gpu02", "--reason", "x", "--dry-run"),
        (
            "maintenance",
            "create",
            "--nodes",
            "gpu03",
            "--duration",
            "1h",
            "--reason",
            "x",
            "--dry-run",
        ),
    ):
        r = fctl(*argv)
        assert r.status == 0, r.stderr
        assert "dry run" in r.stderr
    after = {k: (v["state"], v["state_flags"], v["reason"]) for k, v in _sinfo(slurm).items()}
    assert after == before
    assert "No reservations" in slurm.scontrol("-o", "show", "reservation").stdout
    assert _audit(state_dir) == []


def test_unknown_node_or_bad_hostlist_refused_before_anything_runs(
    slurm: SlurmCluster, fctl, state_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    # Slurm itself would drain gpu01 and then fail on gpu99: we refuse the lot first.
    r = fctl("drain", "gpu[01,99]", "--reason", "x", "--yes")
    assert r.status == ExitStatus.NOT_FOUND and "gpu99" in r.stderr
    r = fctl("drain", "gpu[01-", "--reason", "x", "--yes")
    assert r.status == ExitStatus.USAGE and "malformed hostlist" in r.stderr
    r = fctl("drain", "gpu01;reboot", "--reason", "x", "--yes")
    assert r.status == ExitStatus.USAGE
    assert all(not n["state_flags"] for n in _sinfo(slurm).values())
    assert _audit(state_dir) == []


def test_reason_with_shell_metacharacters_stored_literally(slurm: SlurmCluster, fctl) -> None:  # type: ignore[no-untyped-def]
    reason = """it's "bad"; rm -rf / `id` $(id) $HOME | & > /tmp/x *"""
    r = fctl("drain", "gpu01", "--reason", reason, "--yes")
    assert r.status == 0, r.stderr
    assert _sinfo(slurm)["gpu01"]["reason"] == f"factoryctl: {reason} (erin)"
    assert not Path("/tmp/x").exists() or Path("/tmp/x").stat().st_mtime < time.time() - 60


def test_audit_log_holds_every_action(slurm: SlurmCluster, fctl, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    assert fctl("drain", "gpu01", "--reason", "a", "--yes").status == 0
    assert fctl("drain", "gpu01", "--reason", "again", "--yes").status == 0  # idempotent
    assert fctl("resume", "gpu01", "--yes").status == 0
    assert (
        fctl("drain", "gpu[01-03]", "--reason", "x", "--yes", ratio="0.1").status
        == ExitStatus.REFUSED
    )
    items = fctl("-o", "json", "audit").json()["items"]
    assert [(i["verb"], i["status"]) for i in items] == [
        ("drain", "ok"),
        ("drain", "ok"),
        ("resume", "ok"),
        ("drain", "refused"),
    ]
    assert items[1]["result"]["gpu01"]["result"] == "unchanged"
    assert all(i["user"] == "erin" for i in items)
    text = fctl("audit").stdout
    assert "factoryctl: a (erin)" in text


def test_scheduler_unreachable(slurm: SlurmCluster, fctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "dead.conf"
    conf.write_text(
        slurm.conf_path.read_text().replace(
            f"SlurmctldPort={slurm.ctld_port}", f"SlurmctldPort={free_port()}"
        )
        + "MessageTimeout=2\n"  # Slurm retries a dead controller for MessageTimeout
    )
    r = fctl("drain", "gpu01", "--reason", "x", "--yes", environ={"SLURM_CONF": str(conf)})
    assert r.status == ExitStatus.SCHEDULER_UNREACHABLE, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "slurmctld" in r.stderr
    r = fctl("maintenance", "list", environ={"SLURM_CONF": str(conf)})
    assert r.status == ExitStatus.SCHEDULER_UNREACHABLE, r.stderr


def _cli_subprocess(
    slurm: SlurmCluster, state_dir: Path, *argv: str, user: str = "erin"
) -> subprocess.Popen[str]:
    env = {
        **slurm.env,
        "XDG_STATE_HOME": str(state_dir),
        "USER": user,
        "FACTORYCTL_ACTIONS_BLAST_RADIUS_RATIO": "0.5",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "factoryctl", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_real_binary_no_tty_needs_yes(slurm: SlurmCluster, state_dir: Path) -> None:
    proc = _cli_subprocess(slurm, state_dir, "drain", "gpu01", "--reason", "x")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitStatus.REFUSED and "--yes" in err and "Traceback" not in err
    assert not _sinfo(slurm)["gpu01"]["state_flags"]


def test_two_operators_on_overlapping_nodes(slurm: SlurmCluster, state_dir: Path) -> None:
    a = _cli_subprocess(
        slurm,
        state_dir,
        "-o",
        "json",
        "drain",
        "gpu[01-02]",
        "--reason",
        "psu",
        "--yes",
        user="alice",
    )
    b = _cli_subprocess(
        slurm,
        state_dir,
        "-o",
        "json",
        "drain",
        "gpu[02-03]",
        "--reason",
        "fan",
        "--yes",
        user="bob",
    )
    results = [(*p.communicate(timeout=60), p.returncode) for p in (a, b)]
    assert [rc for _, _, rc in results] == [0, 0], [e for _, e, _ in results]
    nodes = _sinfo(slurm)
    assert all("DRAIN" in nodes[n]["state_flags"] for n in ("gpu01", "gpu02", "gpu03"))
    records = _audit(state_dir)
    results_by_user = {r["user"]: r for r in records if r["event"] == "result"}
    assert set(results_by_user) == {"alice", "bob"}
    assert len([r for r in records if r["event"] == "start"]) == 2
    # gpu02 was drained once, by whoever got the lock first; the other saw it and said so.
    first = min(results_by_user.values(), key=lambda r: r["time"])
    second = max(results_by_user.values(), key=lambda r: r["time"])
    assert first["result"]["gpu02"]["result"] == "changed"
    assert second["result"]["gpu02"]["result"] == "unchanged"
    assert nodes["gpu02"]["reason"] == first["reason"]
    assert os.path.exists(state_dir / "factoryctl" / "audit.jsonl.lock")


def test_reboot_asap_next_state_down_with_a_running_job(slurm: SlurmCluster, fctl) -> None:  # type: ignore[no-untyped-def]
    job = slurm.sbatch("-w", "gpu03", "--gres=gpu:1", script="sleep 3")
    slurm.wait_job_running(job)
    r = fctl(
        "-o",
        "json",
        "reboot",
        "gpu03",
        "--asap",
        "--next-state",
        "down",
        "--reason",
        "bios",
        "--yes",
        "--wait",
        "--timeout",
        "90s",
    )
    assert r.status == 0, r.stderr
    doc = r.json()
    assert doc["jobs"][0]["job_id"] == job and "reboots when it ends" in doc["jobs"][0]["effect"]
    assert doc["nodes"][0]["state"] in ("down", "drained")
    node = _sinfo(slurm)["gpu03"]
    assert node["state"] == "down" or "DRAIN" in node["state_flags"]
    assert node["reason"].startswith("factoryctl: bios (erin)")
    # Back into service is an explicit, owned resume.
    assert fctl("resume", "gpu03", "--yes").status == 0


def test_kill_9_mid_action_leaves_an_incomplete_record(
    slurm: SlurmCluster, state_dir: Path, tmp_path: Path
) -> None:
    # An scontrol that hangs on writes (reads pass through to the real one) stands in
    # for a slurmctld that stops answering while we are killed.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = shutil.which("scontrol", path=slurm.env["PATH"])  # this release's scontrol
    wrapper = bin_dir / "scontrol"
    wrapper.write_text(f'#!/bin/sh\ncase "$1" in update) sleep 60;; esac\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    env = {
        **slurm.env,
        "PATH": f"{bin_dir}:{slurm.env['PATH']}",
        "XDG_STATE_HOME": str(state_dir),
        "USER": "erin",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "factoryctl", "drain", "gpu01", "--reason", "x", "--yes"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not [r for r in _audit(state_dir) if r["event"] == "start"]:
            assert time.monotonic() < deadline, "no start record"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, 9)  # the CLI and its hanging scontrol, nothing else
        proc.wait(timeout=10)
    out = subprocess.run(
        [sys.executable, "-m", "factoryctl", "-o", "json", "audit"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (item,) = json.loads(out)["items"]
    assert item["status"] == "incomplete" and item["result"] is None
    assert item["plan"]["targets"] == ["gpu01"]


def test_whole_hostlist_is_one_scontrol_write(slurm: SlurmCluster, tmp_path: Path) -> None:
    from factoryctl.actions.audit import AuditLog
    from factoryctl.actions.execute import execute
    from factoryctl.actions.guards import BlastRadius
    from factoryctl.actions.outcome import Request
    from factoryctl.actions.plan import Verb
    from factoryctl.scheduler.slurm_cli import SlurmCLI

    backend = SlurmCLI(env=slurm.env)
    request = Request(Verb.DRAIN, "gpu[01-04]", "all of them", "erin", force=True)
    outcome = execute(backend, request, BlastRadius(), AuditLog(tmp_path / "a.jsonl"))
    assert outcome.status is ExitStatus.OK
    # Reads use scontrol too on 23.02+ (scontrol --json show node): writes are updates.
    writes = [c for c in backend.calls if c[:2] == ["scontrol", "update"]]
    assert writes == [
        [
            "scontrol",
            "update",
            "NodeName=gpu[01-04]",
            "State=DRAIN",
            "Reason=factoryctl: all of them (erin)",
        ]
    ]
    assert all("DRAIN" in n["state_flags"] for n in _sinfo(slurm).values())
