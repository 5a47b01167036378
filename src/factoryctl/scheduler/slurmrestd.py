"""Slurm over slurmrestd: reads over HTTP (JWT or the local unix socket), writes via scontrol.

Slurm 22.05 serves OpenAPI v0.0.36-v0.0.38: nodes, jobs and reservations can be read,
but nodes cannot be updated (that arrives with v0.0.39 in 23.02) and reboots have no
REST endpoint at all. So every write here goes through the scontrol backend; only the
reads, which the console makes far more often, use slurmrestd. The plugin version is
detected from ``/openapi/v3`` (the newest one both sides know is used). The JSON bodies
are the ones ``sinfo --json`` / ``squeue --json`` print, so one parser serves both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factoryctl.telemetry import httpx_import  # noqa: F401  (must come before httpx)

# isort: split
import httpx

from factoryctl.errors import ConfigError, ExitStatus, FactoryctlError
from factoryctl.model import Job, Node
from factoryctl.scheduler.base import NextState, Reservation, ReservationRequest
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.scheduler.slurm_json import parse_jobs, parse_nodes, parse_reservations

# Versions whose node/job JSON matches the parser (the 22.05 shapes); v0.0.39+ changed
# the node and job schemas and would need their own mapping.
SUPPORTED = ("v0.0.36", "v0.0.37", "v0.0.38")
_VERSION = re.compile(r"^/slurm/(v\d+\.\d+\.\d+)/")


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.lstrip("v").split("."))


def detect_version(openapi: Mapping[str, Any]) -> str:
    """The newest slurm plugin version that the server offers and we understand."""
    offered = {m.group(1) for p in openapi.get("paths", {}) if (m := _VERSION.match(p))}
    usable = sorted(offered & set(SUPPORTED), key=_key)
    if not usable:
        raise FactoryctlError(
            f"slurmrestd offers no supported API version (offered: {', '.join(sorted(offered)) or 'none'})",
            ExitStatus.SCHEDULER_ERROR,
        )
    return usable[-1]


@dataclass
class SlurmRestd:
    client: httpx.Client
    writer: SlurmCLI  # writes (and reboots) always go through scontrol on 22.05
    name: str = "slurmrestd"
    version: str = ""
    calls: list[str] = field(default_factory=list)

    def _get(self, path: str) -> dict[str, Any]:
        self.calls.append(path)
        try:
            response = self.client.get(path)
        except httpx.TransportError as err:
            raise FactoryctlError(
                f"slurmrestd unreachable: {err}", ExitStatus.SCHEDULER_UNREACHABLE
            ) from None
        if response.status_code in (401, 403):
            raise FactoryctlError(
                f"slurmrestd refused the request ({response.status_code}): check the JWT",
                ExitStatus.SCHEDULER_ERROR,
            )
        try:
            data = response.json()
        except json.JSONDecodeError:
            raise FactoryctlError(
                f"slurmrestd {path}: HTTP {response.status_code}, not JSON",
                ExitStatus.SCHEDULER_ERROR,
            ) from None
        if response.status_code >= 400 or not isinstance(data, dict):
            raise FactoryctlError(
                f"slurmrestd {path}: HTTP {response.status_code}", ExitStatus.SCHEDULER_ERROR
            )
        return data

    def detect(self) -> str:
        if not self.version:
            self.version = detect_version(self._get("/openapi/v3"))
        return self.version

    def _read(self, what: str) -> str:
        return json.dumps(self._get(f"/slurm/{self.detect()}/{what}"))

    def nodes(self) -> list[Node]:
        return parse_nodes(self._read("nodes"), f"slurmrestd {self.version} nodes")

    def jobs(self) -> list[Job]:
        return parse_jobs(self._read("jobs"), f"slurmrestd {self.version} jobs")

    def reservations(self) -> list[Reservation]:
        return parse_reservations(
            self._read("reservations"), f"slurmrestd {self.version} reservations"
        )

    # Writes: scontrol (see the module docstring).
    def drain(self, nodes: Sequence[str], reason: str) -> None:
        self.writer.drain(nodes, reason)

    def resume(self, nodes: Sequence[str]) -> None:
        self.writer.resume(nodes)

    def reboot(self, nodes: Sequence[str], reason: str, asap: bool, next_state: NextState) -> None:
        self.writer.reboot(nodes, reason, asap, next_state)

    def create_reservation(self, request: ReservationRequest) -> str:
        return self.writer.create_reservation(request)

    def delete_reservation(self, name: str) -> None:
        self.writer.delete_reservation(name)


def open_slurmrestd(settings: Mapping[str, Any], environ: Mapping[str, str]) -> SlurmRestd:
    """``slurmrestd_url`` is ``unix:/path/to/socket`` (local auth) or ``http(s)://host:port``
    (JWT from ``jwt_file`` or ``$SLURM_JWT``, user from ``$USER``)."""
    url = str(settings.get("slurmrestd_url") or "")
    if not url:
        raise ConfigError("scheduler type slurmrestd needs [scheduler] slurmrestd_url")
    headers: dict[str, str] = {}
    if url.startswith("unix:"):
        transport = httpx.HTTPTransport(uds=url.removeprefix("unix:"))
        client = httpx.Client(transport=transport, base_url="http://slurmrestd", timeout=30.0)
    else:
        token = environ.get("SLURM_JWT", "")
        jwt_file = str(settings.get("jwt_file") or "")
        if jwt_file:
            try:
                token = Path(jwt_file).expanduser().read_text().strip()
            except OSError as err:
                raise ConfigError(f"cannot read jwt_file {jwt_file}: {err.strerror}") from None
        if token:
            headers["X-SLURM-USER-TOKEN"] = token
            headers["X-SLURM-USER-NAME"] = environ.get("USER", "")
        client = httpx.Client(base_url=url, headers=headers, timeout=30.0)
    # scontrol must not see SLURM_JWT unless the site uses JWT for its CLI too: it then
    # switches every Slurm binary to JWT auth.
    cli_env = {k: v for k, v in environ.items() if k != "SLURM_JWT"}
    return SlurmRestd(client=client, writer=SlurmCLI(env=cli_env))
