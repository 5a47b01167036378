"""A Prometheus HTTP API client (httpx): queries, series, alerts and targets.

Works against Prometheus, Thanos, Mimir and VictoriaMetrics, which share the API but not
its corners:

* every instant query carries an explicit ``time`` and ``nocache=1``: VictoriaMetrics
  evaluates a query at now - 30 s (``-search.latencyOffset``) yet labels the result
  "now", without ``time`` and (measured on 1.79) even with ``time`` close to now;
* queries go as POST forms, so a long selector never hits a URL length limit;
* an engine on this machine (``loopback``) is asked for plain answers, any other for gzip:
  compressing bytes that never cross a network only costs both sides CPU;
* errors become one line and an exit status: unreachable or timed out ->
  TELEMETRY_UNREACHABLE; 4xx/5xx, non-JSON and API errors -> TELEMETRY_ERROR. Prometheus
  says ``400 bad_data`` / ``422 execution``; VictoriaMetrics says ``422`` with errorType
  "422" and has its own series-limit errors, which get a hint;
* reads are retried with bounded exponential backoff on connection failures and on
  429/502/503/504; a request that timed out is not retried (it would time out again).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from factoryctl.telemetry import httpx_import  # noqa: F401  (must come before httpx)

# isort: split
import httpx

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.telemetry.auth import PromAuth
from factoryctl.telemetry.results import (
    GC_PAUSE_BYTES,
    Columns,
    QueryResult,
    UnexpectedSeries,
    gc_paused,
    loads,
    parse_columns,
    parse_query_data,
)

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
_SERIES_LIMIT = re.compile(
    r"maxUniqueTimeseries|maxSeries|too many (unique )?time ?series|maxSamplesPerQuery|"
    r"max-series|exceeded the limit",
    re.IGNORECASE,
)


class TelemetryUnreachable(FactoryctlError):
    status = ExitStatus.TELEMETRY_UNREACHABLE


class TelemetryError(FactoryctlError):
    status = ExitStatus.TELEMETRY_ERROR

    def __init__(self, message: str, error_type: str = "", http_status: int | None = None):
        super().__init__(message)
        self.error_type = error_type
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class PromConfig:
    url: str
    timeout: float = 10.0
    retries: int = 2  # extra attempts for reads; total wait is bounded by backoff * 2**retries
    backoff: float = 0.25
    auth: PromAuth = field(default_factory=PromAuth)


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``http://user:pw@host`` -> (``http://host``, (user, pw)): keep them out of messages."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, (parts.username, parts.password or "")


def loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine (localhost, 127.0.0.0/8 or ::1)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fmt_time(t: float) -> str:
    # Millisecond precision is what both engines store.
    return f"{t:.3f}"


class PromClient:
    def __init__(self, config: PromConfig, transport: httpx.BaseTransport | None = None) -> None:
        url, url_auth = split_credentials(config.url.rstrip("/"))
        if not urlsplit(url).scheme:
            url = "http://" + url
        self.url = url
        self.config = config
        self.warnings: list[str] = []
        basic = config.auth.basic() or url_auth
        verify = config.auth.ssl_context()
        if urlsplit(url).scheme == "http" and verify is True:
            # Loading the system CA store costs ~80 ms, a fifth of a whole `factoryctl
            # energy`; plain HTTP never uses it (a redirect to https would then go
            # unverified, which is no weaker than the plain HTTP it was asked over).
            verify = False
        headers = {"Accept": "application/json"}
        if loopback(url):
            # Compressing an answer that never leaves the machine is CPU for nothing, on
            # the cores the engine shares with us: at 100,000 GPUs Prometheus 2.42 spent
            # ~40-140 ms more per `factoryctl nodes` gzipping its ~9 MB of answers, and
            # we then inflated them (docs/benchmarks.md). Over a network gzip stays.
            headers["Accept-Encoding"] = "identity"
        self._http = httpx.Client(
            base_url=url,
            timeout=config.timeout,
            headers={**headers, **config.auth.headers()},
            auth=httpx.BasicAuth(*basic) if basic else None,
            verify=verify,
            transport=transport,
            follow_redirects=True,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PromClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- API ---------------------------------------------------------------------------
    def query(self, promql: str, at: float, timeout: float | None = None) -> QueryResult:
        # nocache=1: VictoriaMetrics moves any evaluation time within -search.latencyOffset
        # (30 s) of now back to now-30s unless told not to, explicit ``time`` or not:
        # a job started 4 s ago is then invisible. Prometheus ignores the parameter.
        form = {"query": promql, "time": fmt_time(at), "nocache": "1"}
        if timeout is not None:
            form["timeout"] = f"{timeout:g}s"
        return self._result(*self._call("POST", "/api/v1/query", form, promql))

    def query_columns(
        self,
        promql: str,
        at: float,
        names: Collection[str],
        keys: tuple[str, ...],
        carry: str | None = None,
    ) -> Columns:
        """``query`` of rollups (series named ``names``), as ``results.Columns``: the JSON is
        parsed, reduced to one dict per name and dropped with the GC paused throughout, so
        no collection walks 175,000 label dicts on the way."""
        form = {"query": promql, "time": fmt_time(at), "nocache": "1"}

        def columns(data: Any) -> Columns:
            if not isinstance(data, dict):
                raise TelemetryError(f"Prometheus at {self.url} returned no query result")
            try:
                return parse_columns(data, names, keys, carry)
            except UnexpectedSeries as exc:
                raise TelemetryError(f"Prometheus at {self.url}: {exc}") from None
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise TelemetryError(
                    f"Prometheus at {self.url} returned a malformed query result ({exc})"
                ) from None

        got, _ = self._call("POST", "/api/v1/query", form, promql, columns)
        assert isinstance(got, Columns)
        return got

    def query_range(self, promql: str, start: float, end: float, step: float) -> QueryResult:
        form = {
            "query": promql,
            "start": fmt_time(start),
            "end": fmt_time(end),
            "step": f"{step:g}",
            "nocache": "1",
        }
        return self._result(*self._call("POST", "/api/v1/query_range", form, promql))

    def series(
        self, match: Sequence[str], start: float | None = None, end: float | None = None
    ) -> list[dict[str, str]]:
        form: dict[str, str | list[str]] = {"match[]": list(match)}
        if start is not None:
            form["start"] = fmt_time(start)
        if end is not None:
            form["end"] = fmt_time(end)
        data, _ = self._call("POST", "/api/v1/series", form, " ".join(match))
        return list(data) if isinstance(data, list) else []

    def label_values(
        self,
        label: str,
        match: Iterable[str] = (),
        start: float | None = None,
        end: float | None = None,
    ) -> list[str]:
        params: dict[str, str | list[str]] = {"match[]": list(match)}
        if start is not None:
            params["start"] = fmt_time(start)
        if end is not None:
            params["end"] = fmt_time(end)
        data, _ = self._call("GET", f"/api/v1/label/{label}/values", params, label)
        if not isinstance(data, list):  # not understood: never an empty list
            raise TelemetryError(
                f"Prometheus at {self.url} answered the values of label {label!r} with"
                f" {type(data).__name__}, not a list"
            )
        return [str(v) for v in data]

    def alerts(self) -> list[dict[str, Any]]:
        data, _ = self._call("GET", "/api/v1/alerts", None, "alerts")
        return list(data.get("alerts", [])) if isinstance(data, dict) else []

    def targets(self, state: str = "active") -> list[dict[str, Any]]:
        data, _ = self._call("GET", "/api/v1/targets", {"state": state}, "targets")
        if not isinstance(data, dict):
            return []
        return list(data.get("activeTargets", [])) + list(data.get("droppedTargets", []) or [])

    def self_metrics(self) -> str | None:
        """The engine's own /metrics text, or None where it is not served to us (a proxy,
        an auth realm of its own, Mimir): only hints are read from it, never data."""
        try:
            resp = self._http.get("/metrics")
        except httpx.HTTPError:
            return None
        return resp.text if resp.status_code == 200 else None

    # -- plumbing ----------------------------------------------------------------------
    def _result(self, data: Any, warnings: tuple[str, ...]) -> QueryResult:
        if not isinstance(data, dict):
            raise TelemetryError(f"Prometheus at {self.url} returned no query result")
        try:
            return parse_query_data(data, warnings)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise TelemetryError(
                f"Prometheus at {self.url} returned a malformed query result ({exc})"
            ) from None

    def _call(
        self,
        method: str,
        path: str,
        payload: Any,
        what: str,
        then: Callable[[Any], Any] | None = None,
    ) -> tuple[Any, tuple[str, ...]]:
        """One API read with bounded retries: ``data`` and ``warnings`` of a success reply
        (``then(data)`` where given, applied before the parsed document is dropped)."""
        attempts = 1 + max(0, self.config.retries)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                if method == "POST":
                    resp = self._http.post(path, data=payload)
                else:
                    resp = self._http.get(path, params=payload)
            except httpx.TimeoutException:
                raise TelemetryUnreachable(
                    f"Prometheus at {self.url} did not answer within {self.config.timeout:g}s"
                    f" ({path})"
                ) from None
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if last:
                    raise TelemetryUnreachable(
                        f"cannot reach Prometheus at {self.url}: {_reason(exc)}"
                    ) from None
                self._sleep(attempt)
                continue
            except httpx.HTTPError as exc:
                raise TelemetryUnreachable(
                    f"cannot reach Prometheus at {self.url}: {_reason(exc)}"
                ) from None
            if resp.status_code in RETRY_STATUSES and not last:
                log.debug("retrying %s after HTTP %s", path, resp.status_code)
                self._sleep(attempt)
                continue
            return self._unwrap(resp, path, what, then)
        raise AssertionError("unreachable")  # pragma: no cover

    def _sleep(self, attempt: int) -> None:
        time.sleep(self.config.backoff * (2**attempt))

    def _unwrap(
        self,
        resp: httpx.Response,
        path: str,
        what: str,
        then: Callable[[Any], Any] | None = None,
    ) -> tuple[Any, tuple[str, ...]]:
        if then is not None and len(resp.content) >= GC_PAUSE_BYTES:
            # The document and what ``then`` builds from it, with no collection between:
            # it is garbage by the time the GC runs again, freed by reference counts.
            with gc_paused():
                return self._document(resp, path, what, then)
        return self._document(resp, path, what, then)

    def _document(
        self,
        resp: httpx.Response,
        path: str,
        what: str,
        then: Callable[[Any], Any] | None,
    ) -> tuple[Any, tuple[str, ...]]:
        body = resp.content
        try:
            doc = loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or "status" not in doc:
            kind = resp.headers.get("content-type", "unknown content").split(";")[0]
            if resp.status_code >= 400:
                raise TelemetryError(
                    f"Prometheus at {self.url} answered HTTP {resp.status_code} to {path}"
                    f" ({kind}, not Prometheus API JSON): {_snippet(body)}",
                    http_status=resp.status_code,
                )
            raise TelemetryError(
                f"{self.url} did not answer {path} with Prometheus API JSON (got {kind});"
                " is this the Prometheus base URL?",
                http_status=resp.status_code,
            )
        warnings = tuple(str(w) for w in doc.get("warnings") or ())
        self.warnings.extend(warnings)
        if doc.get("status") == "success" and resp.status_code < 400:
            data = doc.get("data")
            return (data if then is None else then(data)), warnings
        error_type = str(doc.get("errorType", ""))
        error = " ".join(str(doc.get("error", "")).split())
        raise TelemetryError(
            self._describe(resp.status_code, error_type, error, what),
            error_type=error_type,
            http_status=resp.status_code,
        )

    def _describe(self, status: int, error_type: str, error: str, what: str) -> str:
        short = what if len(what) <= 120 else what[:117] + "..."
        if status in (401, 403):
            return (
                f"Prometheus at {self.url} refused the credentials (HTTP {status}): {error}"
            ).rstrip(": ")
        if _SERIES_LIMIT.search(error):
            return (
                f"Prometheus at {self.url} hit a series limit (HTTP {status}): {error}."
                " Narrow the query, or raise the engine's limit"
                " (VictoriaMetrics: -search.maxUniqueTimeseries)"
            )
        label = {
            "bad_data": "rejected the query",
            "execution": "failed to execute the query",
            "timeout": "timed out executing the query",
            "canceled": "canceled the query",
            "422": "failed to execute the query",
            "400": "rejected the query",
        }.get(error_type, "answered with an error")
        return f"Prometheus at {self.url} {label} (HTTP {status} {error_type}): {error} [{short}]"


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    # httpx wraps errno strings like "[Errno 111] Connection refused"
    return text.split("] ", 1)[-1]


def _snippet(body: bytes) -> str:
    text = body[:2000].decode("utf-8", "replace")
    # An HTML error page (proxy, Grafana, an exporter) says more without its markup.
    text = " ".join(re.sub(r"<[^>]*>", " ", text).split())
    return (text[:160] + "...") if len(text) > 160 else (text or "(empty body)")


def label_matcher(values: Iterable[str]) -> str:
    """A regex alternation of literal values, for ``label=~"..."``."""
    return "|".join(re.escape(v).replace("\\", "\\\\").replace('"', '\\"') for v in values)


# VictoriaMetrics refuses queries over 16 KiB (``-search.maxQueryLen``, 422): a 1,500-node
# job's node alternation alone is ~15 KB. Alternations stay under this many characters.
MATCHER_BUDGET = 6000


def label_matchers(values: Iterable[str], budget: int = MATCHER_BUDGET) -> list[str]:
    """``label_matcher`` split into alternations of at most ``budget`` characters each
    (one value longer than that gets its own), for one query per part."""
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for value in values:
        one = label_matcher([value])
        if current and size + 1 + len(one) > budget:
            parts.append("|".join(current))
            current, size = [], 0
        current.append(one)
        size += len(one) + (1 if size else 0)
    if current:
        parts.append("|".join(current))
    return parts
