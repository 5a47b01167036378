"""Rule engines for the rules' live tests: Prometheus evaluating a rules file, and
VictoriaMetrics with vmalert evaluating the same file where both are on PATH, each scraping
the given targets every second, started on free loopback ports and stopped by PID on the
way out (a failing test included)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from factoryctl.lab.procs import ManagedProcess, free_port
from factoryctl.lab.stack import scrape_config

PROMETHEUS = shutil.which("prometheus")
VICTORIA = shutil.which("victoria-metrics")
VMALERT = shutil.which("vmalert")


@contextlib.contextmanager
def rule_engines(tmp: Path, addresses: list[str], rules: Path) -> Iterator[dict[str, str]]:
    """The engines' base URLs by name (``prometheus``, ``victoriametrics+vmalert``); skips
    the test where Prometheus is not installed."""
    if PROMETHEUS is None:
        pytest.skip("prometheus is not on PATH")
    (tmp / "prometheus.yml").write_text(scrape_config(addresses, "1s", rule_files=[str(rules)]))
    (tmp / "scrape.yml").write_text(scrape_config(addresses, "1s"))
    procs: list[ManagedProcess] = []
    urls: dict[str, str] = {}
    try:
        port = free_port()
        procs.append(
            ManagedProcess(
                "prometheus",
                [
                    PROMETHEUS,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'prom'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                tmp / "prometheus.log",
            ).start()
        )
        urls["prometheus"] = f"http://127.0.0.1:{port}"
        if VICTORIA is not None and VMALERT is not None:
            port = free_port()
            vm = f"http://127.0.0.1:{port}"
            procs.append(
                ManagedProcess(
                    "victoria-metrics",
                    [
                        VICTORIA,
                        f"-httpListenAddr=127.0.0.1:{port}",
                        f"-storageDataPath={tmp / 'vm'}",
                        f"-promscrape.config={tmp / 'scrape.yml'}",
                        "-search.latencyOffset=1s",
                        "-search.disableCache",
                        "-loggerLevel=WARN",
                    ],
                    tmp / "victoria-metrics.log",
                ).start()
            )
            procs.append(
                ManagedProcess(
                    "vmalert",
                    [
                        VMALERT,
                        f"-rule={rules}",
                        f"-datasource.url={vm}",
                        f"-remoteWrite.url={vm}",
                        "-remoteWrite.flushInterval=1s",
                        "-evaluationInterval=1s",
                        f"-httpListenAddr=127.0.0.1:{free_port()}",
                        "-loggerLevel=WARN",
                    ],
                    tmp / "vmalert.log",
                ).start()
            )
            urls["victoriametrics+vmalert"] = vm
        yield urls
    finally:
        for proc in reversed(procs):
            proc.stop()
