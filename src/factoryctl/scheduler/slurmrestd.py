"""Slurm over slurmrestd: reads and, where the API has them, writes over HTTP.

``slurmrestd_url`` is ``unix:/path`` (``rest_auth/local``: slurmrestd trusts the socket's
peer) or ``http(s)://host:port`` (``rest_auth/jwt``: a token from ``scontrol token``).

The API version is chosen from the server's own ``/openapi/v3``: the newest ``/slurm/vX``
that both the server offers and factoryctl knows (``SUPPORTED``). Real servers offer:

* Slurm 22.05: v0.0.36-v0.0.38 (the lab's bookworm serves v0.0.38 only)
* Slurm 24.11: v0.0.40, v0.0.41, v0.0.42
* Slurm 26.05: v0.0.42, v0.0.43, v0.0.44, v0.0.45

A server offering none of ours is a one-line error that lists what it offers (exit 12).
Reads (nodes, jobs, reservations) always go over REST; their bodies are the data parser's
output that ``scontrol --json`` prints too, so ``slurm_json`` maps them from their meta.

Writes go over REST where the chosen version's spec has the endpoint, else through
scontrol exactly as the ``slurm`` backend does. What the real servers' specs have:

* drain/resume: ``POST nodes/`` with the whole hostlist in one call (24.11 and 26.05 in
  every version they serve), else one ``POST node/{name}`` per node (a server whose spec
  has only that; it exists from v0.0.39 on), else scontrol (22.05: no node updates).
* maintenance create: ``POST reservation`` (v0.0.43 on, i.e. 26.05), else scontrol. That
  endpoint creates *or updates*, so an existing name is refused first, as scontrol does.
* maintenance delete: ``DELETE reservation/{name}`` (26.05, even in its v0.0.42), else
  scontrol (24.11 has no reservation writes at all).
* reboot: always scontrol: no version has a reboot endpoint.

Finished jobs (``jobs_between``) come from ``/slurmdb/vX/jobs``, served where slurmrestd
loads the slurmdbd plugin too (``openapi/slurmdbd``; 22.05: ``openapi/dbv0.0.38``) and
slurmdbd accepts the same JWT (``AuthAltTypes=auth/jwt`` in slurmdbd.conf). The newest
such version we know is used, with the parameters its spec lists
(``slurm_accounting.slurmdb_query``); a server without one is a one-line error (exit 12),
which ``factoryctl energy`` reports as accounting unavailable.

Node names and reasons are validated (``validate_nodes``, ``validate_reason``) before any
write, REST or not. Slurm's ``errors`` list in a reply becomes one line: unknown node or
reservation exits 3, slurmctld unreachable 8, refused credentials and anything else 12.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from factoryctl.telemetry import httpx_import  # noqa: F401  (must come before httpx)

# isort: split
import httpx

from factoryctl import hostlists
from factoryctl.errors import ConfigError, ExitStatus, FactoryctlError, NotFoundError
from factoryctl.model import Job, Node
from factoryctl.scheduler.base import NextState, Reservation, ReservationRequest
from factoryctl.scheduler.slurm_cli import (
    SlurmCLI,
    reservation_users,
    validate_nodes,
    validate_reason,
    validate_reservation_name,
)
from factoryctl.scheduler.slurm_json import parse_jobs, parse_nodes, parse_reservations

# API versions whose bodies slurm_json maps: 22.05's scalar shapes and 23.11-26.05's flag
# lists. v0.0.39 (23.02) is left out: no real server of it was read; a 23.02 server still
# offers v0.0.38, which is then used.
SUPPORTED = (
    "v0.0.36",
    "v0.0.37",
    "v0.0.38",
    "v0.0.40",
    "v0.0.41",
    "v0.0.42",
    "v0.0.43",
    "v0.0.44",
    "v0.0.45",
)
_VERSION = re.compile(r"^/slurm/(v\d+\.\d+\.\d+)/(.*?)/?$")
_DB_JOBS = re.compile(r"^/slurmdb/(v\d+\.\d+\.\d+)/jobs/?$")
_PARAM = re.compile(r"\{[^}]*\}")
MAINT_FLAGS = ("MAINT", "IGNORE_JOBS")

# Slurm's error numbers (slurm_errno.h) that mean "no such thing" and "cannot reach it".
_NOT_FOUND_ERRNO = {2018, 2053}  # ESLURM_INVALID_NODE_NAME, ESLURM_RESERVATION_INVALID
_UNREACHABLE_ERRNO = {1800, 1801, 1802, 1803, 1804, 5004}  # controller comms, timeout
_AUTH_ERRNO = {1007}  # SLURM_PROTOCOL_AUTHENTICATION_ERROR: slurmctld refused the token
_NOT_FOUND_TEXT = ("invalid node name", "not found", "requested reservation is invalid",
                   "unable to find")  # fmt: skip
_UNREACHABLE_TEXT = ("unable to contact slurm controller", "connection refused",
                     "socket timed out", "zero bytes were transmitted")  # fmt: skip


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.lstrip("v").split("."))


@dataclass(frozen=True)
class RestApi:
    """One version of one server's API: each operation as the server spells its path
    (22.05 without a trailing slash, 23.02 on with one) and the methods it allows."""

    version: str
    offered: tuple[str, ...]
    # "nodes", "node/{}", "reservation/{}", ...: (path as spelled, methods in lower case)
    operations: Mapping[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    # /slurmdb/vX/jobs of the newest such version we know: (version, path as spelled, the
    # GET's query parameter names); None where the server has no slurmdbd plugin loaded.
    db_jobs: tuple[str, str, frozenset[str]] | None = None

    def has(self, method: str, op: str) -> bool:
        entry = self.operations.get(op)
        return entry is not None and method.lower() in entry[1]

    def path(self, op: str, arg: str = "") -> str:
        """The server's path for ``op``; ``arg`` fills its one ``{parameter}``."""
        entry = self.operations.get(op)
        if entry is None:
            raise FactoryctlError(
                f"slurmrestd {self.version} has no /{op} endpoint", ExitStatus.SCHEDULER_ERROR
            )
        return _PARAM.sub(lambda _: arg, entry[0], count=1)

    @property
    def node_update(self) -> str:
        """How drain/resume are sent: ``batch``, ``per-node`` or ``scontrol``."""
        if self.has("post", "nodes"):
            return "batch"
        if self.has("post", "node/{}"):
            return "per-node"
        return "scontrol"

    @property
    def reservation_create(self) -> bool:
        return self.has("post", "reservation")

    @property
    def reservation_delete(self) -> bool:
        return self.has("delete", "reservation/{}")


def detect_api(openapi: Mapping[str, Any]) -> RestApi:
    """The newest version that the server offers and we understand, with its endpoints."""
    paths = openapi.get("paths")
    paths = paths if isinstance(paths, Mapping) else {}
    by_version: dict[str, dict[str, tuple[str, frozenset[str]]]] = {}
    for path, item in paths.items():
        m = _VERSION.match(str(path))
        if not m:
            continue
        methods = frozenset(str(k).lower() for k in item) if isinstance(item, Mapping) else ()
        op = _PARAM.sub("{}", m.group(2))
        by_version.setdefault(m.group(1), {})[op] = (str(path), frozenset(methods))
    offered = tuple(sorted(by_version, key=_key))
    usable = [v for v in offered if v in SUPPORTED]
    if not usable:
        raise FactoryctlError(
            "slurmrestd offers no API version factoryctl knows (offered: "
            f"{', '.join(offered) or 'none'}; known: {', '.join(SUPPORTED)})",
            ExitStatus.SCHEDULER_ERROR,
        )
    version = usable[-1]
    return RestApi(version, offered, by_version[version], _db_jobs(paths))


def _db_jobs(paths: Mapping[str, Any]) -> tuple[str, str, frozenset[str]] | None:
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for path, item in paths.items():
        m = _DB_JOBS.match(str(path))
        get = item.get("get") if isinstance(item, Mapping) else None
        if not m or m.group(1) not in SUPPORTED or not isinstance(get, Mapping):
            continue
        params = get.get("parameters")
        names = frozenset(
            str(p.get("name")) for p in (params if isinstance(params, list) else [])
            if isinstance(p, Mapping) and p.get("in") == "query"
        )  # fmt: skip
        found[m.group(1)] = (str(path), names)
    if not found:
        return None
    version = max(found, key=_key)
    return (version, *found[version])


def detect_version(openapi: Mapping[str, Any]) -> str:
    """The newest slurm plugin version that the server offers and we understand."""
    return detect_api(openapi).version


def _errors(data: Any) -> list[dict[str, Any]]:
    items = data.get("errors") if isinstance(data, Mapping) else None
    if not isinstance(items, list):
        return []
    return [e if isinstance(e, dict) else {"error": str(e)} for e in items]


def rest_error(method: str, path: str, status: int, data: Any) -> FactoryctlError:
    """One line for a failed request, with the exit status scripts rely on."""
    errors = _errors(data)
    numbers = {e.get("error_number") for e in errors}
    texts = []
    for e in errors:
        parts = [str(e.get(k)) for k in ("error", "description") if e.get(k)]
        texts.append(": ".join(dict.fromkeys(parts)))
    detail = " ".join("; ".join(t for t in texts if t).split()) or f"HTTP {status}"
    what = f"slurmrestd {method} {path}"
    lowered = detail.lower()
    if status in (401, 403, 511) or numbers & _AUTH_ERRNO:
        return FactoryctlError(
            f"{what}: refused the credentials ({detail}): check the JWT",
            ExitStatus.SCHEDULER_ERROR,
        )
    empty = isinstance(data, Mapping) and not any(
        data.get(k) for k in ("nodes", "jobs", "reservations")
    )
    legacy_unknown = lowered == "unspecified error" and empty  # 22.05 says only this
    if (
        status in (502, 503, 504)
        or numbers & _UNREACHABLE_ERRNO
        or any(m in lowered for m in _UNREACHABLE_TEXT)
        or legacy_unknown
    ):
        hint = " (is slurmctld reachable, and the JWT valid?)" if legacy_unknown else ""
        return FactoryctlError(
            f"scheduler unreachable ({what}): {detail}{hint}", ExitStatus.SCHEDULER_UNREACHABLE
        )
    if numbers & _NOT_FOUND_ERRNO or any(m in lowered for m in _NOT_FOUND_TEXT):
        return NotFoundError(f"{what}: {detail}")
    return FactoryctlError(f"{what}: {detail}", ExitStatus.SCHEDULER_ERROR)


@dataclass
class SlurmRestd:
    client: httpx.Client
    writer: SlurmCLI  # what the API lacks (reboots always) goes through scontrol
    name: str = "slurmrestd"
    version: str = ""
    api_info: RestApi | None = None
    calls: list[str] = field(default_factory=list)  # "GET /openapi/v3", "POST /slurm/..."

    # -- HTTP -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None,
                 params: Mapping[str, str] | None = None) -> Any:  # fmt: skip
        self.calls.append(f"{method} {path}?{urlencode(params)}" if params else f"{method} {path}")
        try:
            response = self.client.request(method, path, json=body, params=params)
        except httpx.TransportError as err:
            raise FactoryctlError(
                f"slurmrestd unreachable: {err}", ExitStatus.SCHEDULER_UNREACHABLE
            ) from None
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        status = response.status_code
        if status >= 400 or (method != "GET" and _errors(data)):
            raise rest_error(method, path, status, data)
        if not isinstance(data, dict):
            raise FactoryctlError(
                f"slurmrestd {method} {path}: HTTP {status}, not a JSON object",
                ExitStatus.SCHEDULER_ERROR,
            )
        return data

    def api(self) -> RestApi:
        if self.api_info is None:
            self.api_info = detect_api(self._request("GET", "/openapi/v3"))
            self.version = self.api_info.version
        return self.api_info

    def detect(self) -> str:
        return self.api().version

    def _read(self, op: str) -> str:
        # A 200 with Slurm's errors inside is slurm_json's to judge (22.05 answers so).
        return json.dumps(self._request("GET", self.api().path(op)))

    # -- reads ----------------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        return parse_nodes(self._read("nodes"), f"slurmrestd {self.version} nodes")

    def jobs(self) -> list[Job]:
        return parse_jobs(self._read("jobs"), f"slurmrestd {self.version} jobs")

    def reservations(self) -> list[Reservation]:
        return parse_reservations(
            self._read("reservations"), f"slurmrestd {self.version} reservations"
        )

    def jobs_between(self, since: float, until: float) -> list[Job]:
        """Jobs eligible or running in [since, until] from slurmdbd through slurmrestd: the
        jobs ``SlurmCLI.jobs_between`` reads with sacct, finished ones included."""
        from factoryctl.scheduler.slurm_accounting import parse_slurmdb_jobs, slurmdb_query

        api = self.api()
        if api.db_jobs is None:
            raise FactoryctlError(
                "slurmrestd serves no /slurmdb/ jobs endpoint of a version factoryctl knows"
                " (is it started with openapi/slurmdbd, 22.05: openapi/dbv0.0.38?)",
                ExitStatus.SCHEDULER_ERROR,
            )
        version, path, params = api.db_jobs
        what = f"slurmrestd {version} /slurmdb/ jobs"
        query = slurmdb_query(params, since, until, what)
        return parse_slurmdb_jobs(self._request("GET", path, params=query), what)

    # -- writes ---------------------------------------------------------------------------
    def _update_nodes(
        self, hostlist: str, body: Mapping[str, Any], fallback: Callable[[], None]
    ) -> None:
        api = self.api()
        route = api.node_update
        if route == "batch":
            # The schema's hostlist is a list of names or ranges: the compact form is one.
            self._request("POST", api.path("nodes"), {"name": [hostlist], **body})
        elif route == "per-node":
            for name in hostlists.expand(hostlist):
                self._request("POST", api.path("node/{}", name), body)
        else:
            fallback()

    def drain(self, nodes: Sequence[str], reason: str) -> None:
        hl = validate_nodes(nodes)
        text = validate_reason(reason)
        self._update_nodes(
            hl,
            {"state": ["DRAIN"], "reason": text},
            lambda: self.writer.drain(nodes, reason),
        )

    def resume(self, nodes: Sequence[str]) -> None:
        hl = validate_nodes(nodes)
        self._update_nodes(hl, {"state": ["RESUME"]}, lambda: self.writer.resume(nodes))

    def clear_reason(self, nodes: Sequence[str]) -> None:
        hl = validate_nodes(nodes)  # a blank, as with scontrol: an empty reason is ignored
        self._update_nodes(hl, {"reason": " "}, lambda: self.writer.clear_reason(nodes))

    def reboot(self, nodes: Sequence[str], reason: str, asap: bool, next_state: NextState) -> None:
        self.writer.reboot(nodes, reason, asap, next_state)

    def create_reservation(self, request: ReservationRequest) -> str:
        name = validate_reservation_name(request.name)
        hl = validate_nodes(request.nodes)
        users = reservation_users(request.users)
        api = self.api()
        if not api.reservation_create:
            return self.writer.create_reservation(request)
        # POST reservation creates or *updates*: an existing name must stay untouched, as
        # scontrol's "Duplicate reservation name" leaves it.
        if any(r.name == name for r in self.reservations()):
            raise FactoryctlError(
                f"slurmrestd: reservation {name} already exists", ExitStatus.SCHEDULER_ERROR
            )
        minutes = max(1, round(request.duration_seconds / 60))
        body = {
            "name": name,
            "node_list": [hl],
            "start_time": {"set": True, "infinite": False, "number": int(request.start_time)},
            "duration": {"set": True, "infinite": False, "number": minutes},
            "users": list(users),
            "flags": list(MAINT_FLAGS),
        }
        self._request("POST", api.path("reservation"), body)
        return name

    def delete_reservation(self, name: str) -> None:
        checked = validate_reservation_name(name)
        api = self.api()
        if not api.reservation_delete:
            self.writer.delete_reservation(name)
            return
        self._request("DELETE", api.path("reservation/{}", checked))


def open_slurmrestd(settings: Mapping[str, Any], environ: Mapping[str, str]) -> SlurmRestd:
    """``slurmrestd_url`` is ``unix:/path/to/socket`` (local auth) or ``http(s)://host:port``
    (JWT from ``jwt_file`` or ``$SLURM_JWT``; user from ``$USER``, which 23.02 and later
    do not need: the token names its user)."""
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
            if environ.get("USER"):
                headers["X-SLURM-USER-NAME"] = environ["USER"]
        client = httpx.Client(base_url=url, headers=headers, timeout=30.0)
    # scontrol must not see SLURM_JWT unless the site uses JWT for its CLI too: it then
    # switches every Slurm binary to JWT auth.
    cli_env = {k: v for k, v in environ.items() if k != "SLURM_JWT"}
    return SlurmRestd(client=client, writer=SlurmCLI(env=cli_env))
