"""PollGc: no collections while a frame is built, the built frame frozen, one full
collection every ``full_every`` polls after the paint, nothing left frozen at exit."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from factoryctl.tui.gcpolicy import PollGc


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.enable()


def test_a_built_frame_is_frozen_and_a_failed_one_is_not() -> None:
    policy = PollGc(full_every=3)
    with policy.building():
        assert not gc.isenabled()  # nothing collected while the frame is made
        made = [[i] for i in range(1000)]
    assert gc.isenabled() and policy.frozen
    assert gc.get_freeze_count() >= len(made)
    policy.release()
    assert gc.get_freeze_count() == 0 and not policy.frozen

    with pytest.raises(RuntimeError), policy.building():
        raise RuntimeError("source down")
    assert gc.isenabled() and not policy.frozen and gc.get_freeze_count() == 0


def test_full_collection_every_n_paints_unfreezes_and_frees_cycles() -> None:
    policy = PollGc(full_every=3)
    for _ in range(2):
        with policy.building():
            cycle: list[object] = []
            cycle.append(cycle)
        del cycle
        policy.painted()
        assert policy.frozen and policy.last_full_seconds is None
    with policy.building():
        pass
    policy.painted()  # the third poll: one full pass, nothing stays frozen
    assert not policy.frozen and gc.get_freeze_count() == 0
    assert policy.last_full_seconds is not None


def test_a_disabled_collector_is_left_alone() -> None:
    gc.disable()
    policy = PollGc()
    with policy.building():
        pass
    assert not gc.isenabled() and not policy.frozen and gc.get_freeze_count() == 0
