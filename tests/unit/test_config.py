from __future__ import annotations

from pathlib import Path

import pytest

from factoryctl.config import load_settings
from factoryctl.errors import ConfigError


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings, used = load_settings({"HOME": str(tmp_path)})
    assert used is None and settings["output"]["format"] == "table"


def test_xdg_file_then_environment_override(tmp_path: Path) -> None:
    cfg = tmp_path / "xdg" / "factoryctl" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(
        '[prometheus]\nurl = "http://file:9090"\ntimeout = 3\n[actions]\nblast_radius_nodes = 8\n'
    )
    environ = {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "FACTORYCTL_ACTIONS_BLAST_RADIUS_NODES": "16",
    }
    settings, used = load_settings(environ)
    assert used == cfg
    assert settings["prometheus"]["url"] == "http://file:9090"
    assert settings["prometheus"]["timeout"] == 3.0
    assert settings["actions"]["blast_radius_nodes"] == 16


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[prometheus\nurl=1", "invalid TOML"),
        ("[nosuch]\na = 1\n", "unknown section"),
        ("[output]\nformat = 3\n", "wrong type"),
        ("[output]\nbogus = 1\n", "unknown key"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, content: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=message) as err:
        load_settings({}, str(cfg))
    assert "\n" not in str(err.value)


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings({"FACTORYCTL_CONFIG": str(tmp_path / "nope.toml")})


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({}, str(tmp_path))  # a directory


def test_bad_environment_value() -> None:
    with pytest.raises(ConfigError, match="FACTORYCTL_OUTPUT_COLOR"):
        load_settings({"HOME": "/nonexistent", "FACTORYCTL_OUTPUT_COLOR": "maybe"})
