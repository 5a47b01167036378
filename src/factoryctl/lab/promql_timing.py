"""Time factoryctl commands against curl sending the very PromQL they send.

The baseline for "is factoryctl slow, or is the engine?": the queries a command sends are
recorded through an httpx transport (an in-process ``PrometheusSource`` making the calls
the command makes), then replayed one by one with ``curl``. Both sides are new processes,
as a user or a script runs them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl

import httpx

from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions

Query = dict[str, str]  # the form fields, plus "path"


def recorded_queries(
    url: str, command: str, interval: float, energy_window: float = 3000.0
) -> list[Query]:
    """What ``factoryctl COMMAND -o json`` sends (``nodes``, ``jobs`` or ``energy``, the
    last over the ``energy_window`` seconds up to now), telemetry only."""
    sent: list[Query] = []
    inner = httpx.HTTPTransport()

    class Recorder(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            sent.append({"path": request.url.path, **dict(parse_qsl(request.content.decode()))})
            return inner.handle_request(request)

    client = PromClient(PromConfig(url, timeout=120), transport=Recorder())
    src = PrometheusSource(client, None, SourceOptions(schema="native", scrape_interval=interval))
    if command == "nodes":
        src.node_rows_for_view()  # what `factoryctl nodes` calls
    elif command == "jobs":
        src.job_rows_for_view()  # what `factoryctl jobs` calls (no scheduler)
    elif command == "energy":
        now = time.time()
        src.energy_report(now - energy_window, now)
    else:
        raise ValueError(f"no recording for {command!r}; choose nodes, jobs or energy")
    return sent


def telemetry_only_env(url: str, interval: float) -> dict[str, str]:
    """The environment for ``python -m factoryctl`` to read ``url`` as the recording
    above does: no scheduler, the native schema and the scrape interval given (so no
    detection queries), and a timeout long enough for 100,000 GPUs."""
    return {
        **os.environ,
        "FACTORYCTL_PROMETHEUS_URL": url,
        "FACTORYCTL_SCHEDULER_TYPE": "none",
        "FACTORYCTL_PROMETHEUS_SCHEMA": "native",
        "FACTORYCTL_PROMETHEUS_SCRAPE_INTERVAL": str(interval),
        "FACTORYCTL_PROMETHEUS_TIMEOUT": "120",
    }


def _curl(url: str, q: Query) -> list[str]:
    args = ["curl", "-sf", "-o", "/dev/null", url + q["path"]]
    for k, v in q.items():
        if k != "path":
            args += ["--data-urlencode", f"{k}={v}"]
    return args


def curl_seconds(url: str, queries: Sequence[Query]) -> float:
    """Wall time for curl to send ``queries`` one after the other."""
    t0 = time.perf_counter()
    for q in queries:
        subprocess.run(_curl(url, q), check=True)
    return time.perf_counter() - t0


def curl_parallel_seconds(url: str, queries: Sequence[Query]) -> float:
    """Wall time for one curl per query, all started at once: the engine answering the
    queries as concurrently as factoryctl sends them, and no client work beyond reading
    the bytes (the floor a client of that engine can reach)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(_curl(url, q)) for q in queries]
    failed = [q for q, p in zip(queries, procs, strict=True) if p.wait() != 0]
    if failed:
        raise RuntimeError(f"curl failed on {failed[0].get('query', failed[0]['path'])}")
    return time.perf_counter() - t0


def command_seconds(argv: Sequence[str], env: Mapping[str, str]) -> tuple[float, bytes]:
    """Wall time of one run of ``argv`` and its stdout; a failure raises with its stderr."""
    t0 = time.perf_counter()
    proc = subprocess.run(list(argv), capture_output=True, env=dict(env), check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-500:]
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {tail}")
    return elapsed, proc.stdout
