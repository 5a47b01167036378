"""Import httpx without its command-line tool.

httpx's ``__init__`` imports ``httpx._main`` (its ``httpx`` CLI: click, rich, pygments)
whenever those are installed, and they are, beside textual. That costs ~55 ms of every
``factoryctl`` command that reads Prometheus (measured: ``import httpx`` 127 ms, 75 ms
without it), and factoryctl never runs that CLI. Importing this module first registers a
stand-in for ``httpx._main``; nothing else of httpx changes. In a process that already
imported httpx it does nothing.
"""

from __future__ import annotations

import sys
import types


def _no_cli() -> None:
    raise SystemExit("the httpx command-line tool is not available inside factoryctl")


if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    _stub = types.ModuleType("httpx._main")
    _stub.main = _no_cli  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = _stub
