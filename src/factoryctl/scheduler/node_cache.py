"""The console's scheduler view: node configuration kept across polls, state read fresh.

At 12,500 nodes a full node list costs Slurm two reads (``slurm_sinfo``: every field
grouped, and ``scontrol -o show node``, 6 MB, for the names and partitions: 0.2 to 0.3 s
with our parsing, and 1 to 3 s where it falls back to Slurm's JSON). Most of it never
changes between polls: names, partitions, GPUs per node, features. What does change
(state, reason, GPUs allocated) one grouped ``sinfo`` prints in a few lines, in 0.05 to
0.1 s (``SlurmCLI.node_states``).

``NodeCache`` therefore reads the full node list at most every ``ttl`` seconds and, in
between, only the states, merged onto the cached configuration:

* state, reason and GPUs allocated are fresh at every poll, never older than the poll;
* a node that appears or disappears, or any reason that changed (a drain, a resume, a
  health check) makes the poll read the full list at once, so the reason's timestamp
  and anything changed with it are current;
* partitions, GPUs per node and features may be up to ``ttl`` seconds old: they change
  only when an administrator reconfigures Slurm.

Jobs are read fresh at every poll (they are not cached). Actions never see this object:
they read the scheduler itself (``Environment.scheduler()``), so a plan is always built
from a full, fresh read. A backend without ``node_states`` (slurmrestd, the demo) is
passed through untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Job, Node
from factoryctl.scheduler.base import NodeStatus

# Seconds a full node list is reused. Long against a 2 s poll (30 polls read the states
# alone), short against how often a site reconfigures its partitions.
NODE_CONFIG_TTL = 60.0


def merge_states(nodes: Sequence[Node], states: Mapping[str, NodeStatus]) -> list[Node] | None:
    """``nodes`` with each one's fresh state and allocated GPUs; None where the states
    do not fit the cached nodes (a node added or removed, a reason changed) and the full
    list must be read. Unchanged nodes are the very same objects."""
    if len(states) != len(nodes):
        return None
    merged = []
    for node in nodes:
        status = states.get(node.name)
        if status is None or status.reason != node.reason:
            return None
        if status.state is not node.state or status.gpus_allocated != node.gpus_allocated:
            node = replace(node, state=status.state, gpus_allocated=status.gpus_allocated)
        merged.append(node)
    return merged


class NodeCache:
    """A ``SchedulerView`` over a scheduler (see the module's docstring)."""

    def __init__(
        self,
        inner: Any,
        ttl: float = NODE_CONFIG_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.ttl = ttl
        self.clock = clock
        self.name = str(getattr(inner, "name", "") or type(inner).__name__)
        self._nodes: list[Node] | None = None
        self._read_at = 0.0
        self.full_reads = 0  # how often the full list was read (tests, benchmark)
        self.state_reads = 0

    def __getattr__(self, attr: str) -> Any:
        if attr == "inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def __repr__(self) -> str:
        return f"NodeCache({self.inner!r}, ttl={self.ttl})"

    def _full(self, now: float) -> list[Node]:
        self._nodes = None  # a failed read leaves nothing to merge onto
        nodes = list(self.inner.nodes())
        self._nodes, self._read_at = nodes, now
        self.full_reads += 1
        return nodes

    def nodes(self) -> list[Node]:
        now = self.clock()
        read_states = getattr(self.inner, "node_states", None)
        cached = self._nodes
        if cached is None or read_states is None or not 0 <= now - self._read_at < self.ttl:
            return self._full(now)
        try:
            states = read_states()
        except FactoryctlError:
            self._nodes = None  # the next poll starts over with a full read
            raise
        except Exception as err:  # a parser bug must not pass for an empty cluster
            self._nodes = None
            detail = f"{type(err).__name__}: {err}"
            raise FactoryctlError(
                f"scheduler {self.name}: node states not understood ({detail})",
                ExitStatus.SCHEDULER_ERROR,
            ) from err
        self.state_reads += 1
        merged = merge_states(cached, states)
        if merged is None:
            return self._full(now)
        self._nodes = merged
        return list(merged)

    def jobs(self) -> list[Job]:
        return list(self.inner.jobs())

    def invalidate(self) -> None:
        """Read the full list at the next poll (after an action changed the cluster)."""
        self._nodes = None


def node_cache(scheduler: Any, ttl: float = NODE_CONFIG_TTL) -> Any:
    """``scheduler`` behind a ``NodeCache`` where it can read states alone; as it is where
    it cannot (nothing would be saved, and a state must never be served from the cache)."""
    if ttl <= 0 or not callable(getattr(scheduler, "node_states", None)):
        return scheduler
    return NodeCache(scheduler, ttl)
