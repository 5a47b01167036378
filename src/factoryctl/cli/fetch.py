"""Take a snapshot for one view: sources that can fetch less for it are told which."""

from __future__ import annotations

from factoryctl.cli.env import Environment
from factoryctl.model import FactorySnapshot


def snapshot(env: Environment, view: str) -> FactorySnapshot:
    source = env.source()
    # Optional capability: the Prometheus source skips metrics a view does not show.
    take = getattr(source, "snapshot_for_view", None)
    if callable(take):
        snap = take(view)
        assert isinstance(snap, FactorySnapshot)
        return snap
    return source.snapshot()
