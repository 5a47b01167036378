"""``factoryctl top`` and ``factoryctl demo`` open the console with the right settings."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from factoryctl.errors import ExitStatus
from factoryctl.telemetry.demo import DemoSource

Run = Callable[..., Any]


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Capture the app the command builds instead of taking over the terminal."""
    import factoryctl.cli.top as top

    apps: list[Any] = []
    monkeypatch.setattr(top, "run_app", apps.append)
    return apps


def test_top_on_the_demo_opens_with_actions_and_live_source(
    run_cli: Run, demo_source: DemoSource, opened: list[Any]
) -> None:
    from factoryctl.scheduler.demo import DemoScheduler
    from factoryctl.tui.layer_backend import ActionLayerBackend
    from factoryctl.tui.sources import LiveDemoSource

    res = run_cli("top", source=demo_source, tty=True)
    assert res.status == 0, res.stderr
    (app,) = opened
    assert isinstance(app.source, LiveDemoSource)
    backend = app.actions_backend
    # The CLI's action layer, acting on the very simulator the console shows.
    assert isinstance(backend, ActionLayerBackend)
    assert isinstance(backend.scheduler, DemoScheduler)
    assert backend.scheduler.sim is demo_source.sim
    assert backend.lock is app.source.lock
    assert backend.radius.limit(16) == 1  # [actions] defaults: 10% of 16 nodes
    assert app.readonly is False
    assert app.refresh_seconds == 2.0


def test_top_readonly_and_refresh(run_cli: Run, demo_source: DemoSource, opened: list[Any]) -> None:
    res = run_cli("top", "--readonly", "--refresh", "5", source=demo_source, tty=True)
    assert res.status == 0, res.stderr
    (app,) = opened
    assert app.readonly is True
    assert app.actions_backend is None
    assert app.refresh_seconds == 5.0


def test_top_needs_a_terminal(run_cli: Run, demo_source: DemoSource, opened: list[Any]) -> None:
    res = run_cli("top", source=demo_source, tty=False)
    assert res.status == ExitStatus.USAGE
    assert "needs a terminal" in res.stderr
    assert "Traceback" not in res.stderr
    assert opened == []


def test_bindings_come_from_the_config(
    run_cli: Run, demo_source: DemoSource, opened: list[Any], tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[tui.bindings]\ndrain = "x"\n')
    res = run_cli("--config", str(config), "top", source=demo_source, tty=True)
    assert res.status == 0, res.stderr
    assert opened[0]._keymap == {"drain": "x"}


def test_unknown_binding_id_is_a_config_error(
    run_cli: Run, demo_source: DemoSource, opened: list[Any], tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[tui.bindings]\nexplode = "x"\n')
    res = run_cli("--config", str(config), "top", source=demo_source, tty=True)
    assert res.status == ExitStatus.CONFIG
    assert "[tui.bindings] explode: unknown binding id" in res.stderr
    assert opened == []


def test_demo_opens_the_console_on_a_terminal(run_cli: Run, opened: list[Any]) -> None:
    res = run_cli("demo", "--nodes", "4", "--readonly", tty=True)
    assert res.status == 0, res.stderr
    (app,) = opened
    assert app.readonly is True
    assert len(app.source.snapshot().nodes) == 4


def test_demo_without_a_terminal_still_prints_the_summary(run_cli: Run, opened: list[Any]) -> None:
    res = run_cli("demo", "--nodes", "4", tty=False)
    assert res.status == 0
    assert res.stdout.startswith("factory  4 nodes")
    assert opened == []


def test_top_help_does_not_import_textual() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from factoryctl.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['top', '--help'])\n"
        "print('textual' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_top_without_prometheus_reads_nodes_and_jobs_from_the_scheduler(
    run_cli: Run, demo_source: DemoSource, opened: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from factoryctl.cli.env import Environment
    from factoryctl.scheduler.demo import DemoScheduler
    from factoryctl.telemetry.scheduler_source import SchedulerSource

    scheduler = DemoScheduler(demo_source.sim)
    monkeypatch.setattr(Environment, "scheduler", lambda self: scheduler)
    res = run_cli("top", tty=True)
    assert res.status == 0, res.stderr
    assert "no GPU telemetry" in res.stderr
    (app,) = opened
    assert isinstance(app.source, SchedulerSource)
    snap = app.source.snapshot()
    assert len(snap.nodes) == 16 and snap.gpus == ()
    assert "gpu_telemetry" in snap.unavailable
    assert app.actions_backend is not None
