"""Rule engines for the rules' live tests: Prometheus evaluating rule files, and
VictoriaMetrics with vmalert evaluating the same files where both are on PATH, each scraping
the given targets every second, started on free loopback ports and stopped by PID on the
way out (a failing test included). VictoriaMetrics answers /api/v1/alerts from its vmalert,
so the same `factoryctl --prometheus URL triage` works on both engines."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from factoryctl.lab.procs import ManagedProcess, free_port
from factoryctl.lab.stack import scrape_config

# On PATH, never at a fixed path (sites install upstream tarballs as often as packages).
PROMETHEUS = shutil.which("prometheus")
VICTORIA = shutil.which("victoria-metrics")
VMALERT = shutil.which("vmalert")


@contextlib.contextmanager
def rule_engines(
    tmp: Path,
    addresses: Sequence[str],
    rules: Sequence[Path],
    scheduler_targets: Sequence[str] = (),
) -> Iterator[dict[str, str]]:
    """The engines' base URLs by name (``prometheus``, ``victoriametrics``); skips the
    test where Prometheus is not installed."""
    if PROMETHEUS is None:
        pytest.skip("prometheus is not on PATH")
    files = [str(path) for path in rules]
    with_rules = scrape_config(
        addresses, "1s", scheduler_targets=scheduler_targets, rule_files=files
    )
    (tmp / "prometheus.yml").write_text(with_rules)
    (tmp / "scrape.yml").write_text(
        scrape_config(addresses, "1s", scheduler_targets=scheduler_targets)
    )
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
            port, alert_port = free_port(), free_port()
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
                        f"-vmalert.proxyURL=http://127.0.0.1:{alert_port}",
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
                        *(f"-rule={path}" for path in files),
                        f"-datasource.url={vm}",
                        f"-remoteWrite.url={vm}",
                        "-remoteWrite.flushInterval=1s",
                        "-evaluationInterval=1s",
                        f"-httpListenAddr=127.0.0.1:{alert_port}",
                        f"-notifier.url=http://127.0.0.1:{free_port()}",  # nobody: alerts stay
                        "-loggerLevel=WARN",
                    ],
                    tmp / "vmalert.log",
                ).start()
            )
            urls["victoriametrics"] = vm
        yield urls
    finally:
        for proc in reversed(procs):
            proc.stop()
