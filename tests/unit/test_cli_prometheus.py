"""CLI pieces of the Prometheus path with fakes: energy report, --watch, --schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from factoryctl.cli.energy import time_range
from factoryctl.durations import parse_duration
from factoryctl.errors import ExitStatus, UsageError
from factoryctl.model import Allocation, FactorySnapshot, Job, JobState
from factoryctl.telemetry.job_energy import JobEnergy
from factoryctl.telemetry.prom_reports import parse_rfc3339
from tests.conftest import FROZEN_NOW, Result

Run = Callable[..., Result]


class FakeEnergySource:
    """What ``factoryctl energy`` needs from a source: ``energy_report(since, until)``,
    which adds what limited the report to ``warnings`` (``limits``: accounting down)."""

    def __init__(self, limits: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[float, float]] = []
        self.limits = limits

    def snapshot(self) -> FactorySnapshot:
        return FactorySnapshot(time=FROZEN_NOW)

    def energy_report(
        self,
        since: float,
        until: float,
        warnings: list[str] | None = None,
        unavailable: set[str] | None = None,
    ) -> tuple[list[Job], dict[str, JobEnergy]]:
        self.calls.append((since, until))
        if warnings is not None:
            warnings.extend(self.limits)
        jobs = [
            Job("1", "ada", "proj-llm", "gpu", allocations=(Allocation("n1", (0, 1)),)),
            Job("2", "ada", "proj-llm", "debug", allocations=(Allocation("n1", (2,)),)),
            Job("3", "ben", "proj-vision", state=JobState.COMPLETED),
        ]
        energy = {
            "1": JobEnergy("1", 7_200_000.0, "job-counter"),
            "2": JobEnergy("2", 3_600_000.0, "gpu-counter"),
            "3": JobEnergy("3", None, "gpu-counter", "no energy samples (older than retention)"),
        }
        return jobs, energy


def test_energy_by_job_json(run_cli: Run) -> None:
    src = FakeEnergySource()
    res = run_cli("energy", "--since", "2h", "-o", "json", source=src)
    assert res.status == 0, res.stderr
    doc = json.loads(res.stdout)
    assert src.calls == [(FROZEN_NOW - 7200, FROZEN_NOW)]
    items = {i["job_id"]: i for i in doc["items"]}
    assert items["1"]["energy_kwh"] == pytest.approx(2.0)
    assert items["3"]["energy_joules"] is None  # unknown stays unknown, never 0
    # A total over an unknown value is unknown; what was measured is beside it.
    assert doc["total_kwh"] is None and doc["total_joules"] is None
    assert doc["measured_joules"] == pytest.approx(10_800_000.0)
    assert doc["unknown_jobs"] == 1
    assert {"kind", "time", "source", "unavailable", "warnings", "items"} <= set(doc)
    assert doc["time"] == FROZEN_NOW and doc["unavailable"] == ["cost", "co2_kg"]
    assert "older than retention" in res.stderr  # said, on stderr


def test_energy_report_that_could_not_read_accounting_says_so(run_cli: Run) -> None:
    down = "accounting unavailable (scheduler unreachable (sacct --json -X): slurmdbd down)"
    res = run_cli("energy", "--since", "30d", "-o", "json", source=FakeEnergySource((down,)))
    assert res.status == 0, res.stderr
    assert json.loads(res.stdout)["warnings"][0] == down
    assert f"factoryctl: warning: {down}" in res.stderr.splitlines()
    res = run_cli("energy", "--since", "30d", "--by", "account", source=FakeEnergySource((down,)))
    assert res.status == 0 and "proj-llm" in res.stdout
    assert f"factoryctl: warning: {down}" in res.stderr.splitlines()


def test_energy_by_user_with_cost_and_co2(run_cli: Run) -> None:
    env = {"FACTORYCTL_ENERGY_PRICE_PER_KWH": "0.30", "FACTORYCTL_ENERGY_CO2_G_PER_KWH": "250"}
    res = run_cli("energy", "--by", "user", source=FakeEnergySource(), environ=env)
    assert res.status == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["USER", "JOBS", "ENERGY", "COST", "CO2", "KG"]
    assert lines[1].split()[:6] == ["ada", "2", "3.00", "kWh", "0.90", "EUR"]
    assert lines[1].split()[-1] == "0.75"


def test_energy_by_partition_csv(run_cli: Run) -> None:
    res = run_cli("energy", "--by", "partition", "-o", "csv", source=FakeEnergySource())
    assert res.status == 0, res.stderr
    lines = res.stdout.splitlines()
    head = lines[0].split(",")
    rows = {r[head.index("partition")]: r for r in (ln.split(",") for ln in lines[1:])}
    assert rows["gpu"][head.index("energy_kwh")] == "2.0"
    assert rows["debug"][head.index("energy_kwh")] == "1.0"
    # Job 3 has no partition and an unknown energy: its group's total is unknown, not 0.
    assert rows["(unknown)"][head.index("energy_kwh")] == ""


def test_energy_on_demo_is_a_usage_error(run_cli: Run) -> None:
    res = run_cli("--demo", "energy")
    assert res.status == ExitStatus.USAGE
    assert "--prometheus" in res.stderr


@pytest.mark.parametrize(
    ("since", "until", "needle"),
    [
        ("2099-01-01", "now", "in the future"),
        ("2h", "2099-01-01", "in the future"),
        ("1h", "2h", "empty time range"),
        ("yesterday", "now", "invalid --since"),
    ],
)
def test_bad_time_ranges(since: str, until: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        time_range(since, until, FROZEN_NOW)


class CountingSource:
    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.calls = 0

    def snapshot(self) -> FactorySnapshot:
        self.calls += 1
        if self.calls > self.rounds:
            raise KeyboardInterrupt
        return FactorySnapshot(time=FROZEN_NOW + self.calls)


def test_watch_redraws_until_ctrl_c_and_exits_zero(run_cli: Run) -> None:
    src = CountingSource(rounds=3)
    res = run_cli("nodes", "--watch", "0.01", "-o", "json", source=src)
    assert res.status == 0, res.stderr
    docs = [json.loads(d) for d in res.stdout.replace("}\n{", "}\x00{").split("\x00")]
    assert [d["time"] for d in docs] == [FROZEN_NOW + 1, FROZEN_NOW + 2, FROZEN_NOW + 3]


def test_watch_rejects_non_positive_interval(run_cli: Run) -> None:
    res = run_cli("jobs", "--watch", "0", source=CountingSource(1))
    assert res.status == ExitStatus.USAGE and "--watch" in res.stderr


def test_schema_option_reaches_settings_before_and_after_the_command(run_cli: Run) -> None:
    seen: list[Any] = []

    def capture(env: Any) -> CountingSource:
        seen.append(env.settings["prometheus"]["schema"])
        return CountingSource(5)

    from factoryctl.cli.env import Environment
    from factoryctl.cli.main import main

    for argv in (["--schema", "dcgm", "nodes"], ["nodes", "--schema", "dcgm"]):
        env = Environment(environ={"HOME": "/nonexistent"}, stdin_isatty=False)
        env.source_factory = capture
        import io

        env.stdout, env.stderr = io.StringIO(), io.StringIO()
        assert main(argv, env) == 0
    assert seen == ["dcgm", "dcgm"]


def test_duration_and_time_parsers() -> None:
    assert parse_duration("15s") == 15
    assert parse_duration("1m30s") == 90
    assert parse_duration("500ms") == 0.5
    assert parse_rfc3339("2026-01-01T00:00:00.123456789Z") == pytest.approx(1767225600.123456)
    assert parse_rfc3339("garbage") is None
