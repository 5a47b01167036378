"""Shared fixtures: a small deterministic simulated factory and an in-process CLI runner."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from factoryctl.cli.env import Environment
from factoryctl.cli.main import main
from factoryctl.lab.debian import RELEASES, DebianRelease, available
from factoryctl.telemetry.demo import DemoSource

# Local time is UTC in every test (and in what they start): "today" and naive ISO times are
# local, and the SVG snapshots show local clock times.
os.environ["TZ"] = "UTC"
time.tzset()

FROZEN_NOW = 1_767_240_000.0  # 2026-01-01T04:00:00Z: a fixed clock for reproducible tests


@pytest.fixture(scope="session", params=RELEASES)
def slurm_release(request: pytest.FixtureRequest) -> DebianRelease:
    """Each Slurm generation the lab runs (22.05, 24.11, 26.05): every test that touches
    Slurm runs once per release, against that release's own daemons and clients."""
    from factoryctl.lab.slurm import slurm_available

    rel = available(request.param)
    if rel is None or not slurm_available(rel):
        pytest.skip(f"Slurm of Debian {request.param} is not here (./dev test builds it)")
    return rel


@pytest.fixture(scope="session")
def demo_source() -> DemoSource:
    return DemoSource.create(nodes=16, gpus_per_node=8, seed=7, now=FROZEN_NOW, warmup=3 * 3600)


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


class _Out(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.fixture
def run_cli(
    tmp_path: pytest.TempPathFactory,
) -> Callable[..., Result]:
    """Run factoryctl in-process with a replaced Environment (no real HOME, fixed clock)."""

    def run(
        *argv: str,
        source: object | None = None,
        environ: dict[str, str] | None = None,
        tty: bool = False,
    ) -> Result:
        out, err = _Out(tty), _Out(False)
        env = Environment(
            stdout=out,
            stderr=err,
            stdin_isatty=tty,
            environ={"HOME": str(tmp_path), **(environ or {})},
            clock=lambda: FROZEN_NOW,
        )
        if source is not None:
            env.source_factory = lambda _env: source  # type: ignore[assignment,return-value]
        status = main(list(argv), env)
        return Result(status, out.getvalue(), err.getvalue())

    return run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The matrix, counted: tests per Debian generation (Slurm 22.05/24.11/26.05 and the
    engines of each release), from the ids the release fixtures give (``[trixie]``,
    ``[victoriametrics@forky]``). A generation whose tests were skipped shows it here."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if getattr(report, "when", "call") not in ("call", "setup") or "[" not in nodeid:
                continue
            if outcome == "passed" and report.when != "call":
                continue
            params = nodeid.rsplit("[", 1)[1]
            for codename in RELEASES:
                if any(
                    p in (codename,) or p.endswith("@" + codename)
                    for p in params.rstrip("]").split("-")
                ):
                    row = counts.setdefault(codename, {})
                    row[outcome] = row.get(outcome, 0) + 1
    if counts:
        terminalreporter.section("tests per Debian generation")
        for codename in RELEASES:
            row = counts.get(codename, {})
            text = ", ".join(f"{n} {k}" for k, n in row.items() if n) or "none ran"
            terminalreporter.write_line(f"{codename}: {text}")
