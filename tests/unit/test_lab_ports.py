"""The lab's ports: one process never hands the same port out twice.

A CI run once failed at setup because slurmctld was given its own node's port
("slurmctld is talking with itself"): the kernel returns a probed port as soon as the probe
closes, so two daemons of one cluster could be named the same port before either bound.
"""

from __future__ import annotations

import itertools
import socket

import pytest

from factoryctl.lab import procs
from factoryctl.lab.procs import free_port


@pytest.fixture(autouse=True)
def given(monkeypatch) -> None:
    """A fresh record of ports handed out: the thousands these tests take must not count
    against the lab's daemons started later in the same pytest process."""
    monkeypatch.setattr(procs, "_GIVEN", set())


def test_two_thousand_ports_in_a_row_are_all_different():
    # The kernel's bind(0) repeated about 7 % of 2,000 probes here.
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)


def test_ports_stay_below_the_ephemeral_range(monkeypatch):
    # An outgoing connection takes its local port from the ephemeral range; a daemon's
    # port chosen there could be taken between its choice and its bind.
    monkeypatch.setattr(procs, "_ephemeral_low", lambda: 32768)
    assert all(20000 <= free_port() < 32768 for _ in range(200))


def test_a_port_in_use_is_never_handed_out(monkeypatch):
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    try:
        busy = listening.getsockname()[1]
        # The busy port comes up first, twice; it must be skipped for the next candidate.
        picks = itertools.chain([busy, busy], range(20000, 32768))
        monkeypatch.setattr(procs.random.SystemRandom, "randint", lambda self, a, b: next(picks))
        assert free_port() != busy
    finally:
        listening.close()


def test_a_wide_ephemeral_range_still_yields_ports(monkeypatch):
    monkeypatch.setattr(procs, "_ephemeral_low", lambda: 1024)
    port = free_port()
    assert 1024 <= port <= 65535
