"""The environment a command runs in: streams, settings, clock and sources.

Commands never reach for sys.stdout, os.environ or time.time() directly; tests replace
this object (httpie's pattern) to run commands in-process with fakes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from factoryctl.scheduler import Scheduler
    from factoryctl.telemetry.source import FactorySource

# The config, the scheduler and the sources are imported where they are used, so that
# `factoryctl --help` (which builds an Environment but never runs a command) loads none.


@dataclass
class Environment:
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    stdin_isatty: bool = field(default_factory=lambda: sys.stdin.isatty())
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    clock: Callable[[], float] = time.time
    # Set by the global options:
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    config_path: Path | None = None
    demo: bool = False
    output: str = "table"
    color: bool = True
    _source: FactorySource | None = None
    source_factory: Callable[[Environment], FactorySource] | None = None
    _scheduler: Scheduler | None = None
    scheduler_factory: Callable[[Environment], Scheduler] | None = None

    @property
    def stdout_isatty(self) -> bool:
        return bool(getattr(self.stdout, "isatty", lambda: False)())

    def load(self, config_path: str | None) -> None:
        from factoryctl.config import load_settings

        self.settings, self.config_path = load_settings(self.environ, config_path)

    def use_color(self) -> bool:
        return self.color and self.stdout_isatty and "NO_COLOR" not in self.environ

    def source(self) -> FactorySource:
        if self._source is None:
            from factoryctl.telemetry.source import open_source

            factory = self.source_factory
            if factory is not None:
                self._source = factory(self)
            elif self.demo:
                self._source = open_source(self.settings, demo=True)
            else:
                # The views read the checked scheduler through a node cache (configuration
                # kept across polls, state fresh at each); actions read it directly.
                joined = None
                if self.settings["scheduler"]["type"] != "none":
                    from factoryctl.scheduler.node_cache import node_cache

                    joined = node_cache(self.scheduler())
                self._source = open_source(self.settings, False, joined, clock=self.clock)
        return self._source

    def scheduler(self) -> Scheduler:
        """The configured scheduler behind ``checked``: whatever its backend raises, a
        command sees one ``FactoryctlError`` (see ``factoryctl.scheduler.checked``)."""
        if self._scheduler is None:
            factory = self.scheduler_factory
            opened: Scheduler
            if factory is not None:
                opened = factory(self)
            elif self.demo:
                # The demo scheduler acts on the very factory the views show.
                from factoryctl.scheduler.demo import DemoScheduler

                opened = DemoScheduler(self.source().sim)  # type: ignore[attr-defined]
            else:
                from factoryctl.scheduler import open_scheduler

                opened = open_scheduler(self.settings, self.demo, self.environ)
            from factoryctl.scheduler.checked import checked

            self._scheduler = checked(opened)
        return self._scheduler

    def write(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def warn(self, text: str) -> None:
        self.stderr.write(f"factoryctl: {text}\n")
