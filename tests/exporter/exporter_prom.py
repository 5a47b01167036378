"""A real Prometheus or VictoriaMetrics for the exporter's integration tests, of any Debian
generation the lab runs (``prometheus@trixie``): temp dir, free port, stop by PID."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from factoryctl.lab.debian import RELEASES, DebianRelease, host_codename
from factoryctl.lab.procs import ManagedProcess, free_port, port_open, wait_until
from factoryctl.lab.stack import engine_available, engine_spec

PROMETHEUS = "prometheus"  # on PATH or in a release's root, never a fixed path
VICTORIA = "victoria-metrics"


class Prometheus:
    """Debian's Prometheus scraping the given targets every second."""

    binary = PROMETHEUS

    def argv(self, config: Path, workdir: Path) -> list[str]:
        return self.release.argv(
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        )

    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        interval: str = "1s",
        release: DebianRelease | None = None,
    ) -> None:
        self.release = release or DebianRelease(host_codename())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        target_list = ", ".join(f"'{t}'" for t in targets)
        config.write_text(
            "global:\n"
            f"  scrape_interval: {interval}\n"
            f"  scrape_timeout: {interval}\n"
            "scrape_configs:\n"
            "  - job_name: factoryctl\n"
            f"    static_configs:\n      - targets: [{target_list}]\n"
        )
        self.proc = ManagedProcess(
            type(self).__name__, self.argv(config, workdir), workdir / "tsdb.log"
        )

    def start(self) -> Prometheus:
        self.proc.start()
        wait_until(lambda: port_open(self.port), 30, "Prometheus's port")
        wait_until(self.ready, 30, "Prometheus ready")
        return self

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
            return bool(resp.status == 200)

    def stop(self) -> None:
        self.proc.stop()

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def vector(self, promql: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(promql)}

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_all_up(self, count: int, timeout: float = 60) -> None:
        """Poll until every target has been scraped successfully (never a blind sleep)."""
        wait_until(
            lambda: (
                self.vector("up", "instance") and len(self.vector("up == 1", "instance")) == count
            ),
            timeout,
            f"{count} targets up in Prometheus ({self.proc.log_tail(5)})",
            interval=0.2,
        )


class VictoriaMetrics(Prometheus):
    """VictoriaMetrics scraping the same config, answering the same HTTP API."""

    binary = VICTORIA

    def argv(self, config: Path, workdir: Path) -> list[str]:
        return self.release.argv(
            self.binary,
            f"-promscrape.config={config}",
            f"-storageDataPath={workdir / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-search.latencyOffset=0s",  # default 30 s hides the newest samples
            "-search.disableCache",
            "-loggerLevel=WARN",
        )

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
            return bool(resp.status == 200)


_KINDS: dict[str, type[Prometheus]] = {"prometheus": Prometheus, "victoriametrics": VictoriaMetrics}
# Every engine of every generation ("prometheus@bookworm", ..., "victoriametrics@forky"),
# and the host's own two, for the tests that measure the exporter rather than the engine.
ENGINES = tuple(f"{kind}@{codename}" for codename in RELEASES for kind in sorted(_KINDS))
HOST_ENGINES = tuple(e for e in ENGINES if e.endswith("@" + host_codename()))


def engine(spec: str, workdir: Path, targets: list[str], interval: str = "1s") -> Prometheus:
    """The engine ``spec`` names, not started; call ``available(spec)`` first."""
    kind, release = engine_spec(spec)
    return _KINDS[kind](workdir, targets, interval, release)


def available(spec: str) -> bool:
    return engine_available(spec)
