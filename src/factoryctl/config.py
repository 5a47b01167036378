"""Settings: built-in defaults < TOML config file < FACTORYCTL_* environment < flags.

The file is ``$XDG_CONFIG_HOME/factoryctl/config.toml`` (``~/.config/...``) unless
``--config`` or ``FACTORYCTL_CONFIG`` names another. A missing default file is fine; a
named file that is missing, unreadable or not valid TOML is a one-line error.

Environment variables map onto ``[section] key`` as ``FACTORYCTL_SECTION_KEY``, e.g.
``FACTORYCTL_PROMETHEUS_URL`` or ``FACTORYCTL_ACTIONS_BLAST_RADIUS_NODES``. Values are
coerced to the type of the default they replace.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from factoryctl.errors import ConfigError

ENV_PREFIX = "FACTORYCTL_"

DEFAULTS: dict[str, dict[str, Any]] = {
    "prometheus": {
        "url": "",
        "schema": "auto",  # auto | native | dcgm
        "timeout": 10.0,
        "retries": 2,
        "bearer_token_file": "",
        "bearer_token_env": "",
        "username": "",
        "password_file": "",
        "password_env": "",
        "scrape_interval": 0.0,  # seconds; 0: detect from the targets API or the data
        # seconds from scrape to searchable; -1: ask the engine (VictoriaMetrics >= 1.112: 5)
        "search_delay": -1.0,
        # the node/job rollups (issue 13): auto (use them where the engine has them) | on | off
        "rollups": "auto",
        "ca_file": "",
        "cert_file": "",
        "key_file": "",
    },
    "scheduler": {
        "type": "slurm",  # slurm | slurmrestd | none
        "slurmrestd_url": "",
        "jwt_file": "",
    },
    "output": {"format": "table", "color": True},
    "energy": {"price_per_kwh": 0.0, "currency": "EUR", "co2_g_per_kwh": 0.0},
    "actions": {
        "blast_radius_ratio": 0.10,
        "blast_radius_nodes": 64,
        "audit_log": "",
    },
    "demo": {"nodes": 64, "gpus_per_node": 8, "seed": 0, "faults_per_node_day": 2.0},
    "tui": {"refresh": 2.0, "bindings": {}},
}


def xdg_config_home(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")) / ".config")
    return Path(base).expanduser()


def xdg_state_home(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME", "~")) / ".local" / "state")
    return Path(base).expanduser()


def default_config_path(environ: Mapping[str, str]) -> Path:
    return xdg_config_home(environ) / "factoryctl" / "config.toml"


def _coerce(value: str, default: Any, name: str) -> Any:
    if isinstance(default, bool):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    try:
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    return value


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"invalid TOML in {path}: {err}") from None


def _merge_file(settings: dict[str, dict[str, Any]], data: Mapping[str, Any], path: Path) -> None:
    for section, values in data.items():
        if section not in settings:
            raise ConfigError(f"{path}: unknown section [{section}]")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key, value in values.items():
            if key not in settings[section]:
                raise ConfigError(f"{path}: unknown key {key!r} in [{section}]")
            default = settings[section][key]
            if (
                isinstance(default, bool) != isinstance(value, bool)
                or (isinstance(default, (int, float)) and not isinstance(value, (int, float)))
                or (isinstance(default, str) and not isinstance(value, str))
                or (isinstance(default, dict) and not isinstance(value, dict))
            ):
                raise ConfigError(f"{path}: [{section}] {key} has the wrong type")
            settings[section][key] = float(value) if isinstance(default, float) else value


def load_settings(
    environ: Mapping[str, str], config_path: str | None = None
) -> tuple[dict[str, dict[str, Any]], Path | None]:
    """Return the merged settings and the file they came from (None: defaults only)."""
    settings = copy.deepcopy(DEFAULTS)
    explicit = config_path or environ.get(ENV_PREFIX + "CONFIG")
    path = Path(explicit).expanduser() if explicit else default_config_path(environ)
    used: Path | None = None
    if explicit or path.exists():
        _merge_file(settings, _read_file(path), path)
        used = path
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section in settings and key in settings[section]:
            default = settings[section][key]
            if isinstance(default, dict):
                continue
            settings[section][key] = _coerce(value, default, name)
    return settings, used
