"""The real telemetry stack on 127.0.0.1: Prometheus and VictoriaMetrics scraping exporters.

Everything runs from a state directory (configs, data, logs, a ``pids`` file), listens on
ports the kernel hands out, and is stopped by PID. The integration tests use this; so can
anyone who wants to try factoryctl against real engines (``python -m factoryctl.lab``).
"""

from __future__ import annotations

import functools
import json
import shutil
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from factoryctl.lab.debian import DebianRelease, host_codename, release
from factoryctl.lab.procs import ManagedProcess, free_port, stop_pid, wait_until

# Found on PATH (or in a release's root), never at a fixed path: sites install upstream
# tarballs as often as Debian's packages.
PROMETHEUS_BIN = "prometheus"
VICTORIA_BIN = "victoria-metrics"
ENGINES = ("prometheus", "victoriametrics")
_PROGRAMS = {"prometheus": PROMETHEUS_BIN, "victoriametrics": VICTORIA_BIN}


def engine_spec(spec: str) -> tuple[str, DebianRelease]:
    """``victoriametrics`` (the host's) or ``victoriametrics@trixie`` (that release's)."""
    kind, _, codename = spec.partition("@")
    if kind not in _PROGRAMS:
        raise ValueError(f"unknown engine {kind!r}; choose from {', '.join(ENGINES)}")
    if not codename or codename == host_codename():
        return kind, DebianRelease(host_codename())
    return kind, release(codename, build=False, log=False)


def engine_available(spec: str) -> bool:
    try:
        kind, rel = engine_spec(spec)
    except Exception:
        return False
    return rel.which(_PROGRAMS[kind]) is not None


# The scrape job name of ``factoryctl scheduler-exporter``: the rules tell its ``up`` from the
# node exporters' by it (dashboards/prometheus/alerts.rules.yml).
SCHEDULER_JOB = "factoryctl-scheduler"


def scrape_config(
    targets: Sequence[str],
    interval: str,
    job: str = "factoryctl",
    scheduler_targets: Sequence[str] = (),
    rule_files: Sequence[str] = (),
) -> str:
    # YAML is a superset of JSON: no YAML library needed to write a valid config.
    def scrape(name: str, addresses: Sequence[str]) -> dict[str, object]:
        return {
            "job_name": name,
            # Explicit, because the engines' defaults for it have differed across versions.
            "honor_timestamps": True,
            "static_configs": [{"targets": list(addresses)}],
        }

    jobs = [scrape(job, targets)]
    if scheduler_targets:
        jobs.append(scrape(SCHEDULER_JOB, scheduler_targets))
    glob: dict[str, str] = {"scrape_interval": interval, "scrape_timeout": interval}
    doc: dict[str, object] = {"global": glob, "scrape_configs": jobs}
    if rule_files:  # Prometheus only: VictoriaMetrics' strict parser rejects these keys
        glob["evaluation_interval"] = interval
        doc["rule_files"] = list(rule_files)
    return json.dumps(doc, indent=2) + "\n"


@dataclass
class Engine:
    name: str  # the spec it was started from: "prometheus", "victoriametrics@trixie"
    port: int
    process: ManagedProcess

    @property
    def kind(self) -> str:
        return self.name.partition("@")[0]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get_json(self, path: str) -> dict[str, object]:
        with urllib.request.urlopen(self.url + path, timeout=2) as resp:
            doc = json.loads(resp.read())
        assert isinstance(doc, dict)
        return doc

    def answers(self) -> bool:
        return self.get_json("/api/v1/query?query=1")["status"] == "success"

    def targets_up(self, expected: int) -> bool:
        """True once ``expected`` targets have been scraped successfully (up == 1)."""
        doc = self.get_json("/api/v1/query?query=sum(up)&nocache=1")
        result = doc["data"]["result"]  # type: ignore[index]
        return bool(result) and float(result[0]["value"][1]) >= expected


@dataclass
class Stack:
    state_dir: Path
    targets: list[str]
    engines: Sequence[str] = ENGINES
    scrape_interval: str = "1s"
    # ``factoryctl scheduler-exporter`` targets, scraped as job ``factoryctl-scheduler``.
    scheduler_targets: list[str] = field(default_factory=list)
    # Rule files Prometheus evaluates (VictoriaMetrics needs vmalert for rules: not here).
    rule_files: list[str] = field(default_factory=list)
    running: dict[str, Engine] = field(default_factory=dict)

    def start(self, timeout: float = 30.0) -> Stack:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self.state_dir / "scrape.yml"
        config.write_text(
            scrape_config(
                self.targets, self.scrape_interval, scheduler_targets=self.scheduler_targets
            )
        )
        # Prometheus alone gets the rules (VictoriaMetrics evaluates rules through vmalert).
        prom_config = self.state_dir / "prometheus.yml"
        prom_config.write_text(
            scrape_config(
                self.targets,
                self.scrape_interval,
                scheduler_targets=self.scheduler_targets,
                rule_files=self.rule_files,
            )
        )
        try:
            for name in self.engines:
                kind = name.partition("@")[0]
                self.running[name] = self._start(
                    name, prom_config if kind == "prometheus" else config
                )
            for engine in self.running.values():
                wait_until(
                    engine.answers,
                    timeout,
                    f"{engine.name} on port {engine.port} ({engine.process.log_tail(3)})",
                )
        except BaseException:
            self.stop()
            raise
        self._write_pids()
        return self

    def _start(self, name: str, config: Path) -> Engine:
        port = free_port()
        data = self.state_dir / name.replace("@", "-")
        log = self.state_dir / f"{name.replace('@', '-')}.log"
        kind, rel = engine_spec(name)
        if kind == "prometheus":
            argv = rel.argv(
                PROMETHEUS_BIN,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=2d",
                "--log.level=warn",
            )
        else:
            argv = rel.argv(
                VICTORIA_BIN,
                f"-httpListenAddr=127.0.0.1:{port}",
                f"-storageDataPath={data}",
                f"-promscrape.config={config}",
                "-retentionPeriod=2d",
                "-loggerLevel=WARN",
            )
        return Engine(name, port, ManagedProcess(name, argv, log).start())

    def wait_scraped(self, timeout: float = 30.0) -> None:
        """Poll until every engine has scraped every target (never a blind sleep)."""
        expected = len(self.targets) + len(self.scheduler_targets)
        for engine in self.running.values():
            wait_until(
                functools.partial(engine.targets_up, expected),
                timeout,
                f"{engine.name} to scrape {expected} targets",
                interval=0.2,
            )

    def stop(self) -> None:
        for engine in self.running.values():
            engine.process.stop()
        self.running.clear()
        (self.state_dir / "pids").unlink(missing_ok=True)

    def _write_pids(self) -> None:
        lines = [f"{e.name} {e.process.pid} {e.url}" for e in self.running.values()]
        (self.state_dir / "pids").write_text("\n".join(lines) + "\n")

    def urls(self) -> dict[str, str]:
        return {name: engine.url for name, engine in self.running.items()}


def start_scheduler_exporter(
    state_dir: Path,
    global_args: Sequence[str] = ("--demo",),
    interval: float = 5.0,
    env: Mapping[str, str] | None = None,
) -> tuple[str, ManagedProcess]:
    """Run ``factoryctl GLOBAL_ARGS scheduler-exporter`` on a free port; wait until it
    answers. ``env`` is added to ours (e.g. FACTORYCTL_DEMO_NODES). Returns its scrape
    target and the process (stop it by PID)."""
    import os
    import sys

    from factoryctl.lab.procs import port_open

    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "factoryctl",
        *global_args,
        "scheduler-exporter",
        f"--listen=127.0.0.1:{port}",
        f"--interval={interval}",
    ]
    proc = ManagedProcess(
        "scheduler-exporter",
        argv,
        state_dir / "scheduler-exporter.log",
        env={**os.environ, **env} if env else None,
    )
    proc.start()
    try:
        wait_until(
            lambda: port_open(port) or not proc.alive(),
            30,
            f"scheduler-exporter on port {port}",
        )
        if not proc.alive():
            raise RuntimeError(f"scheduler-exporter exited: {proc.log_tail(3)}")
    except BaseException:
        proc.stop()
        raise
    return f"127.0.0.1:{port}", proc


def stop_from_pidfile(state_dir: Path) -> list[str]:
    """Stop what ``lab up`` started, by the PIDs it recorded; returns what was stopped."""
    pidfile = state_dir / "pids"
    stopped: list[str] = []
    if not pidfile.exists():
        return stopped
    for line in pidfile.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            stop_pid(int(parts[1]))
            stopped.append(f"{parts[0]} (pid {parts[1]})")
    pidfile.unlink()
    return stopped


def wipe(state_dir: Path) -> None:
    shutil.rmtree(state_dir, ignore_errors=True)
