"""The Slurm CLI backend: argv lists, validation, one call per hostlist, error mapping."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.scheduler.base import NextState, ReservationRequest
from factoryctl.scheduler.slurm_cli import SlurmCLI

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


class FakeRunner:
    """Answers like scontrol/sinfo/squeue would, recording every argv."""

    def __init__(self, returncode: int = 0, stderr: str = "", stdout: str = "") -> None:
        self.argvs: list[list[str]] = []
        self.returncode, self.stderr, self.stdout = returncode, stderr, stdout

    def __call__(
        self, argv: Sequence[str], env: Mapping[str, str] | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        self.argvs.append(list(argv))
        out = self.stdout
        if argv[0] == "sinfo" or argv[:2] == ["scontrol", "--json"]:
            out = (FIXTURES / "sinfo_drain_scene2_22.05.json").read_text()
        return subprocess.CompletedProcess(list(argv), self.returncode, out, self.stderr)


def test_drain_is_one_argv_call_for_a_thousand_nodes() -> None:
    runner = FakeRunner()
    slurm = SlurmCLI(runner=runner)
    nodes = [f"gpu{i:04d}" for i in range(1, 1001)]
    slurm.drain(nodes, "factoryctl: bad; `rm -rf /` $(id) (alice)")
    assert runner.argvs == [
        [
            "scontrol",
            "update",
            "NodeName=gpu[0001-1000]",
            "State=DRAIN",
            "Reason=factoryctl: bad; `rm -rf /` $(id) (alice)",
        ]
    ]


def test_reboot_and_resume_argv() -> None:
    runner = FakeRunner()
    slurm = SlurmCLI(runner=runner)
    slurm.reboot(["gpu01", "gpu02"], "factoryctl: fw (bob)", asap=True, next_state=NextState.DOWN)
    slurm.resume(["gpu03"])
    assert runner.argvs == [
        [
            "scontrol",
            "reboot",
            "ASAP",
            "nextstate=DOWN",
            "reason=factoryctl: fw (bob)",
            "gpu[01-02]",
        ],
        ["scontrol", "update", "NodeName=gpu03", "State=RESUME"],
    ]


def test_create_reservation_argv() -> None:
    runner = FakeRunner(stdout="Reservation created: m1\n")
    slurm = SlurmCLI(runner=runner)
    name = slurm.create_reservation(
        ReservationRequest("m1", ("gpu01", "gpu02"), start_time=0.0, duration_seconds=7200)
    )
    assert name == "m1"
    argv = runner.argvs[0]
    assert argv[:5] == [
        "scontrol",
        "create",
        "reservation",
        "ReservationName=m1",
        "Nodes=gpu[01-02]",
    ]
    assert "Duration=120" in argv and "Flags=MAINT,IGNORE_JOBS" in argv and "Users=root" in argv


@pytest.mark.parametrize(
    ("call", "status"),
    [
        (lambda s: s.drain(["gpu01"], "line\nbreak"), ExitStatus.USAGE),
        (lambda s: s.drain(["gpu01"], "   "), ExitStatus.USAGE),
        (lambda s: s.drain(["gpu01 State=DOWN"], "x"), ExitStatus.USAGE),
        (lambda s: s.drain(["gpu01;reboot"], "x"), ExitStatus.USAGE),
        (lambda s: s.resume([]), ExitStatus.USAGE),
        (lambda s: s.delete_reservation("a b"), ExitStatus.USAGE),
    ],
)
def test_bad_input_never_reaches_scontrol(call: object, status: ExitStatus) -> None:
    runner = FakeRunner()
    slurm = SlurmCLI(runner=runner)
    with pytest.raises(FactoryctlError) as info:
        call(slurm)  # type: ignore[operator]
    assert info.value.status is status
    assert runner.argvs == []


@pytest.mark.parametrize(
    ("stderr", "status"),
    [
        (
            "slurm_update error: Unable to contact slurm controller (connect failure)",
            ExitStatus.SCHEDULER_UNREACHABLE,
        ),
        ("slurm_update error: Invalid node name specified", ExitStatus.NOT_FOUND),
        (
            "delete_reservation ReservationName=x: Requested reservation is invalid",
            ExitStatus.NOT_FOUND,
        ),
        ("slurm_update error: Access/permission denied", ExitStatus.SCHEDULER_ERROR),
    ],
)
def test_scontrol_errors_map_to_exit_statuses(stderr: str, status: ExitStatus) -> None:
    slurm = SlurmCLI(runner=FakeRunner(returncode=1, stderr=stderr))
    with pytest.raises(FactoryctlError) as info:
        slurm.drain(["gpu01"], "x")
    assert info.value.status is status
    assert "\n" not in info.value.message


def test_missing_binary_and_timeout_are_unreachable() -> None:
    def missing(
        argv: Sequence[str], env: Mapping[str, str] | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(argv[0])

    def slow(
        argv: Sequence[str], env: Mapping[str, str] | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(list(argv), timeout)

    for runner in (missing, slow):
        with pytest.raises(FactoryctlError) as info:
            SlurmCLI(runner=runner).nodes()
        assert info.value.status is ExitStatus.SCHEDULER_UNREACHABLE


def test_a_missing_slurm_conf_fails_at_once_naming_it(tmp_path: Path) -> None:
    """Slurm's clients wait up to 60 s for a missing slurm.conf; we must not wait with them."""
    runner = FakeRunner()
    missing = tmp_path / "missing.conf"
    with pytest.raises(FactoryctlError) as info:
        SlurmCLI(env={"SLURM_CONF": str(missing)}, runner=runner).nodes()
    assert info.value.status is ExitStatus.SCHEDULER_UNREACHABLE
    assert f"SLURM_CONF={missing} is not a file" in info.value.message
    assert runner.argvs == []
    missing.write_text("ClusterName=lab\n")  # once it exists, Slurm is asked
    # JSON reads: the fake answers those (the grouped reads: test_slurm_sinfo).
    assert SlurmCLI(env={"SLURM_CONF": str(missing)}, runner=runner, grouped=False).nodes()
    assert runner.argvs


def test_reads_parse_through_the_backend() -> None:
    slurm = SlurmCLI(runner=FakeRunner(), grouped=False)  # JSON; grouped: test_slurm_sinfo
    assert [n.name for n in slurm.nodes()] == ["gpu01", "gpu02", "gpu03", "gpu04"]


def test_falls_back_to_scontrol_without_json() -> None:
    """Slurm without --json (before 21.08): nodes and jobs come from scontrol -o."""

    def runner(
        argv: Sequence[str], env: Mapping[str, str] | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        if "--json" in argv:
            return subprocess.CompletedProcess(
                list(argv), 1, "", f"{argv[0]}: unrecognized option '--json'"
            )
        name = (
            "show_node_reboot_scene2_22.05.txt"
            if argv[-1] == "node"
            else "show_job_scene2_22.05.txt"
        )
        return subprocess.CompletedProcess(list(argv), 0, (FIXTURES / name).read_text(), "")

    slurm = SlurmCLI(runner=runner, grouped=False)  # the JSON chain alone (test_slurm_sinfo)
    nodes = {n.name: n.state.value for n in slurm.nodes()}
    assert nodes == {"gpu01": "drained", "gpu02": "rebooting", "gpu03": "idle", "gpu04": "drained"}
    assert [j.job_id for j in slurm.jobs()] == ["1", "2", "3"]
    slurm.nodes()
    # scontrol --json, then sinfo --json are each tried once, then never again (a Slurm
    # whose sinfo has no --json has no squeue --json either).
    assert [c[:2] for c in slurm.calls] == [
        ["scontrol", "--json"],
        ["sinfo", "--json"],
        ["scontrol", "-o"],
        ["scontrol", "-o"],
        ["scontrol", "-o"],
    ]


def test_clear_reason_is_a_blank_reason_and_no_state_change() -> None:
    # Slurm ignores an empty Reason=: a blank is what clears a reason 24.11 kept.
    runner = FakeRunner()
    SlurmCLI(runner=runner).clear_reason(["gpu01", "gpu02"])
    assert runner.argvs == [["scontrol", "update", "NodeName=gpu[01-02]", "Reason= "]]
