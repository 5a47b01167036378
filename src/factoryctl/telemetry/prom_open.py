"""Build the Prometheus source (client, auth, options, scheduler) from settings."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from factoryctl.errors import ConfigError
from factoryctl.telemetry.auth import PromAuth
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.prom_context import SourceOptions
from factoryctl.telemetry.prometheus_source import PrometheusSource
from factoryctl.telemetry.scheduler_view import SchedulerView

ROLLUP_MODES = ("auto", "on", "off")


def open_prometheus_source(
    settings: Mapping[str, Mapping[str, Any]], scheduler: SchedulerView | None = None
) -> PrometheusSource:
    """The source the CLI uses: client from ``[prometheus]`` settings, joined with
    ``scheduler`` (the caller opens it from ``[scheduler]``; None: telemetry alone)."""
    p = settings["prometheus"]

    def path(key: str) -> Path | None:
        return Path(str(p[key])).expanduser() if p.get(key) else None

    auth = PromAuth(
        bearer_token_file=path("bearer_token_file"),
        bearer_token_env=p.get("bearer_token_env") or None,
        username=p.get("username") or None,
        password_file=path("password_file"),
        password_env=p.get("password_env") or None,
        ca_bundle=path("ca_file"),
        client_cert=path("cert_file"),
        client_key=path("key_file"),
    )
    client = PromClient(
        PromConfig(
            url=str(p["url"]),
            timeout=float(p.get("timeout", 10.0)),
            retries=int(p.get("retries", 2)),
            auth=auth,
        )
    )
    rollups = str(p.get("rollups", "auto"))
    if rollups not in ROLLUP_MODES:
        raise ConfigError(
            f"[prometheus] rollups must be one of {', '.join(ROLLUP_MODES)}, not {rollups!r}"
        )
    options = SourceOptions(
        schema=str(p.get("schema", "auto")),
        scrape_interval=float(p["scrape_interval"]) if p.get("scrape_interval") else None,
        search_delay=None if float(p.get("search_delay", -1.0)) < 0 else float(p["search_delay"]),
        rollups=rollups,
    )
    return PrometheusSource(client, scheduler, options)
