"""A scheduler we cannot read fails loudly, never emptily (issue 11, part 2).

Whatever a backend raises (an unexpected KeyError or TypeError from Slurm's output, not
only a FactoryctlError) is one line on stderr naming the backend and command, exit 12,
no traceback, for every command; the Prometheus source degrades to telemetry with a
warning; triage reports the scheduler as a critical problem, never "healthy".
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from factoryctl.cli.env import Environment
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Job, Node
from factoryctl.scheduler.base import NextState, Reservation, ReservationRequest
from factoryctl.scheduler.checked import CheckedScheduler, checked
from factoryctl.scheduler.demo import DemoScheduler
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.sim import SimConfig, SimFactory
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions
from tests.unit.test_prometheus_source import FakeDcgmProm, T
from tests.unit.test_scheduler_only import assert_one_line_error, run

FIXTURES = Path(__file__).parent.parent / "fixtures" / "slurm"


class TypeErrorScheduler:
    """A backend that trips over its own input: every call raises a raw TypeError."""

    name = "fake"

    def _boom(self) -> Any:
        raise TypeError("'NoneType' object is not subscriptable")

    def nodes(self) -> list[Node]:
        return self._boom()  # type: ignore[no-any-return]

    def jobs(self) -> list[Job]:
        return self._boom()  # type: ignore[no-any-return]

    def reservations(self) -> list[Reservation]:
        return self._boom()  # type: ignore[no-any-return]

    def drain(self, nodes: Sequence[str], reason: str) -> None:
        self._boom()

    def resume(self, nodes: Sequence[str]) -> None:
        self._boom()

    def clear_reason(self, nodes: Sequence[str]) -> None:
        self._boom()

    def reboot(self, nodes: Sequence[str], reason: str, asap: bool, next_state: NextState) -> None:
        self._boom()

    def create_reservation(self, request: ReservationRequest) -> str:
        return self._boom()  # type: ignore[no-any-return]

    def delete_reservation(self, name: str) -> None:
        self._boom()


class UnreachableScheduler(TypeErrorScheduler):
    def _boom(self) -> Any:
        raise FactoryctlError(
            "scheduler unreachable (scontrol --json): Unable to contact slurm controller",
            ExitStatus.SCHEDULER_UNREACHABLE,
        )


def slurm_runner(outputs: Mapping[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """A SlurmCLI runner answering each command ("squeue --json") with a fixed stdout."""

    def run(
        argv: Sequence[str], env: Mapping[str, str] | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        for command, stdout in outputs.items():
            if list(argv[: len(command.split())]) == command.split():
                return subprocess.CompletedProcess(list(argv), 0, stdout, "")
        return subprocess.CompletedProcess(list(argv), 1, "", f"unexpected {argv}")

    return run


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def squeue_with_allocation(value: object) -> str:
    """24.11's squeue --json with one job's per-node allocation replaced by ``value``."""
    doc = json.loads(fixture("squeue_24.11.json"))
    job = next(j for j in doc["jobs"] if j.get("job_resources"))
    job["job_resources"]["nodes"]["allocation"] = value
    return json.dumps(doc)


def grouped_sinfo_slurm() -> SlurmCLI:
    # 24.11's sinfo --json lists node groups: fed where scontrol's nodes are expected (the
    # JSON list alone: grouped=False, as where sinfo -O lacks a field).
    return SlurmCLI(
        grouped=False,
        split_jobs=False,
        runner=slurm_runner(
            {
                "scontrol --json show node": fixture("sinfo_24.11.json"),
                "squeue --json": fixture("squeue_24.11.json"),
            }
        ),
    )


def bad_allocation_slurm() -> SlurmCLI:
    return SlurmCLI(
        grouped=False,
        split_jobs=False,
        runner=slurm_runner(
            {
                "scontrol --json show node": fixture("scontrol_node_24.11.json"),
                "squeue --json": squeue_with_allocation(1),
                "scontrol -o show reservation": "",
            }
        ),
    )


# -- the gate -------------------------------------------------------------------------------
def test_checked_scheduler_turns_anything_a_backend_raises_into_one_line() -> None:
    sched = checked(TypeErrorScheduler())  # type: ignore[arg-type]
    assert checked(sched) is sched
    assert sched.name == "fake"
    with pytest.raises(FactoryctlError) as info:
        sched.nodes()
    assert info.value.status is ExitStatus.SCHEDULER_ERROR
    assert info.value.message == (
        "scheduler fake: nodes() failed (TypeError: 'NoneType' object is not subscriptable)"
    )
    assert isinstance(info.value.__cause__, TypeError)  # kept for whoever debugs it
    with pytest.raises(FactoryctlError, match=r"drain\(\) failed"):
        sched.drain(["gpu001"], "x")


def test_checked_scheduler_names_the_command_and_keeps_factoryctl_errors() -> None:
    slurm = bad_allocation_slurm()
    sched = CheckedScheduler(slurm)
    assert sched.calls is slurm.calls  # the backend's own attributes stay reachable
    with pytest.raises(FactoryctlError) as info:
        sched.jobs()
    assert info.value.status is ExitStatus.SCHEDULER_ERROR
    assert "squeue --json" in info.value.message and "\n" not in info.value.message
    # A FactoryctlError of the backend passes as it is (its status and message).
    unreachable = CheckedScheduler(UnreachableScheduler())  # type: ignore[arg-type]
    with pytest.raises(FactoryctlError) as info:
        unreachable.jobs()
    assert info.value.status is ExitStatus.SCHEDULER_UNREACHABLE
    assert info.value.message.startswith("scheduler unreachable (scontrol --json)")


def test_interrupts_are_not_scheduler_errors() -> None:
    class Interrupted(TypeErrorScheduler):
        def _boom(self) -> Any:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checked(Interrupted()).nodes()  # type: ignore[arg-type]


# -- every command --------------------------------------------------------------------------
COMMANDS = [
    ("nodes",),
    ("nodes", "-o", "json"),
    ("node", "gpu001"),
    ("jobs",),
    ("jobs", "-o", "json"),
    ("job", "7"),
    ("gpus",),
    ("drain", "gpu001", "--reason", "fan", "--yes"),
    ("resume", "gpu001", "--yes"),
    ("reboot", "gpu001", "--reason", "driver", "--yes"),
    ("maintenance", "list"),
    ("maintenance", "create", "--nodes", "gpu001", "--start", "2026-06-01T08:00",
     "--duration", "1h", "--reason", "PDU", "--yes"),
]  # fmt: skip


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_a_backend_type_error_is_one_line_exit_12_for_every_command(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    res = run(tmp_path, *argv, scheduler=TypeErrorScheduler())
    assert_one_line_error(res, ExitStatus.SCHEDULER_ERROR, "scheduler fake", "TypeError")
    assert res.stdout == ""


@pytest.mark.parametrize(
    "argv", [("nodes",), ("node", "gpu01"), ("jobs", "-o", "json")], ids=" ".join
)
def test_slurm_printing_a_shape_we_do_not_know_is_one_line_exit_12(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    res = run(tmp_path, *argv, scheduler=grouped_sinfo_slurm())
    assert_one_line_error(
        res, ExitStatus.SCHEDULER_ERROR, "scontrol --json show node", "node groups"
    )


@pytest.mark.parametrize(
    "argv", [("jobs",), ("job", "7"), ("node", "gpu01", "-o", "json")], ids=" ".join
)
def test_a_raw_error_inside_the_slurm_mapping_is_one_line_exit_12(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    # An allocation that is not a list: whatever the mapping raises, the command says
    # which Slurm command's output it could not read.
    res = run(tmp_path, *argv, scheduler=bad_allocation_slurm())
    assert_one_line_error(res, ExitStatus.SCHEDULER_ERROR, "squeue --json")


def test_a_write_that_trips_is_a_failed_action_not_a_traceback(tmp_path: Path) -> None:
    class WriteTrips(DemoScheduler):
        def drain(self, nodes: Sequence[str], reason: str) -> None:
            raise KeyError("node_state")

    sim = SimFactory(SimConfig(nodes=10, gpus_per_node=8, jobs=False))
    res = run(tmp_path, "drain", "gpu001", "--reason", "fan", "--yes", scheduler=WriteTrips(sim))
    assert res.status == ExitStatus.SCHEDULER_ERROR, res
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "scheduler demo: drain() failed (KeyError: 'node_state')" in res.stderr
    audit = (tmp_path / "state" / "factoryctl" / "audit.jsonl").read_text().splitlines()
    assert json.loads(audit[-1])["status"] == "scheduler_error"  # audited as a failure


def test_our_own_bugs_outside_the_scheduler_still_surface(tmp_path: Path) -> None:
    class BuggySource:
        def snapshot(self) -> Any:
            raise TypeError("a bug in factoryctl, not in Slurm's output")

    with pytest.raises(TypeError, match="a bug in factoryctl"):
        run(tmp_path, "nodes", source=lambda _env: BuggySource())


# -- Prometheus joined with a scheduler we cannot read ----------------------------------------
def prometheus_with(env: Environment) -> PrometheusSource:
    """The dcgm fake behind a source joined with the environment's (checked) scheduler."""
    fake = FakeDcgmProm()

    def answer(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/api/v1/alerts":
            return httpx.Response(200, json={"status": "success", "data": {"alerts": []}})
        return fake(req)

    client = PromClient(PromConfig("http://prom:9090"), transport=httpx.MockTransport(answer))
    return PrometheusSource(client, env.scheduler(), SourceOptions(), clock=lambda: T)


@pytest.mark.parametrize("scheduler", [TypeErrorScheduler, grouped_sinfo_slurm])
def test_prometheus_degrades_to_telemetry_when_the_scheduler_is_not_understood(
    tmp_path: Path, scheduler: Callable[[], object]
) -> None:
    res = run(tmp_path, "-o", "json", "gpus", scheduler=scheduler(), source=prometheus_with)
    assert res.status == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [(g["node"], g["gpu"]) for g in doc["items"]] == [
        ("dgx01", 0), ("dgx01", 1), ("dgx02", 0), ("dgx02", 1)
    ]  # fmt: skip
    (warning,) = doc["warnings"]
    assert warning.startswith("scheduler could not be read, showing telemetry only")
    assert res.stderr == f"factoryctl: warning: {warning}\n"


@pytest.mark.parametrize("scheduler", [TypeErrorScheduler, UnreachableScheduler])
def test_triage_on_prometheus_says_the_scheduler_could_not_be_read(
    tmp_path: Path, scheduler: Callable[[], object]
) -> None:
    res = run(tmp_path, "triage", "--exit-code", scheduler=scheduler(), source=prometheus_with)
    assert res.status == ExitStatus.TRIAGE_CRITICAL, res
    assert "healthy" not in res.stdout
    first = res.stdout.splitlines()[1]
    assert first.startswith("critical") and "could not read the scheduler" in first
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    doc = json.loads(
        run(tmp_path, "-o", "json", "triage", scheduler=scheduler(), source=prometheus_with).stdout
    )
    assert doc["status"] == "critical"
    assert doc["items"][0]["kind"] == "scheduler_unreadable"


# -- triage on the scheduler alone ----------------------------------------------------------
@pytest.mark.parametrize(
    ("scheduler", "cause"),
    [(TypeErrorScheduler, "TypeError"), (UnreachableScheduler, "Unable to contact")],
)
def test_triage_without_prometheus_reports_an_unreadable_scheduler_as_critical(
    tmp_path: Path, scheduler: Callable[[], object], cause: str
) -> None:
    res = run(tmp_path, "triage", "--exit-code", scheduler=scheduler())
    assert res.status == ExitStatus.TRIAGE_CRITICAL, res
    assert "healthy" not in res.stdout and "could not read the scheduler" in res.stdout
    assert cause in res.stdout
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "could not read the scheduler" in res.stderr
    # Without --exit-code triage still reports (exit 0), and says so.
    res = run(tmp_path, "-o", "json", "triage", scheduler=scheduler())
    assert res.status == 0
    doc = json.loads(res.stdout)
    assert doc["status"] == "critical"
    assert doc["items"][0]["kind"] == "scheduler_unreadable"
