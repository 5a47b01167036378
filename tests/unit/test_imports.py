"""Import hygiene: the exporter, the model and `factoryctl --help` stay light."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from factoryctl.cli.main import COMMANDS

PROBE = """
import sys
{body}
heavy = sorted(m for m in ("textual", "httpx", "rich") if m in sys.modules)
print(",".join(heavy))
"""


def _heavy_modules(body: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


# What `factoryctl --help` must not load: each costs start-up time (together ~100 ms,
# issue 13) and none is needed to print the listing. A name covers its submodules.
NOT_FOR_HELP = (
    "textual",
    "rich",
    "httpx",
    "prometheus_client",
    "http.server",
    "socket",
    "tomllib",
    "hostlist",
    "psutil",
    "factoryctl.actions",
    "factoryctl.config",
    "factoryctl.energy",
    "factoryctl.exporter",
    "factoryctl.lab",
    "factoryctl.model",
    "factoryctl.occupancy",
    "factoryctl.scheduler",
    "factoryctl.sim",
    "factoryctl.telemetry",
    "factoryctl.triage",
    "factoryctl.tui",
    "factoryctl.views",
    *sorted({entry.target.split(":")[0] for entry in COMMANDS.values()}),
)

HELP_PROBE = """
import contextlib, io, json, runpy, sys
sys.argv = ["factoryctl", "--help"]
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
    runpy.run_module("factoryctl", run_name="__main__", alter_sys=True)
print(json.dumps({"help": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def _loaded_by_help() -> tuple[str, list[str]]:
    """`python -m factoryctl --help` in a fresh interpreter: its output and sys.modules."""
    out = subprocess.run(
        [sys.executable, "-c", HELP_PROBE], capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout)
    return result["help"], result["modules"]


def test_help_loads_no_command_module_and_nothing_heavy() -> None:
    text, modules = _loaded_by_help()
    # It did print the whole listing (from the summaries in COMMANDS) ...
    assert "Usage: factoryctl" in text
    for name in COMMANDS:
        assert f"  {name} " in text, name
    # ... without loading what the commands need.
    loaded = sorted(
        m for m in modules for banned in NOT_FOR_HELP if m == banned or m.startswith(banned + ".")
    )
    assert loaded == []
    assert "click" in modules  # the probe saw the modules of a real --help run


def test_help_does_not_import_textual_or_httpx() -> None:
    body = (
        "from factoryctl.cli.main import main\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])"
    )
    assert _heavy_modules(body) == ""


def test_model_sim_and_demo_source_do_not_import_textual_or_httpx() -> None:
    body = "import factoryctl.model, factoryctl.occupancy, factoryctl.energy, factoryctl.sim, factoryctl.telemetry.demo"
    assert _heavy_modules(body) == ""


def test_python_dash_m_works() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "factoryctl", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "factoryctl, version" in out.stdout


def test_import_linter_contracts_hold() -> None:
    lint = shutil.which("lint-imports") or str(
        __import__("pathlib").Path(sys.executable).parent / "lint-imports"
    )
    out = subprocess.run([lint, "--no-cache"], capture_output=True, text=True)
    if "command not found" in out.stderr:
        pytest.skip("import-linter not installed")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "KEPT" in out.stdout and "BROKEN" not in out.stdout


def test_prometheus_client_imports_httpx_without_its_cli() -> None:
    code = (
        "import sys; import factoryctl.telemetry.client as c; "
        "assert c.httpx.Client is not None; "
        "print(sorted(m for m in ('rich', 'pygments', 'httpx._main') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # httpx._main is the stand-in (rich and pygments come only with httpx's own CLI).
    assert out.stdout.strip() == "['httpx._main']"
