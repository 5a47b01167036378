"""Fixtures for the console tests."""

from __future__ import annotations

import pytest
from tui_fakes import FakeClock, demo

from factoryctl.telemetry.demo import DemoSource


@pytest.fixture
def source() -> DemoSource:
    return demo()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
