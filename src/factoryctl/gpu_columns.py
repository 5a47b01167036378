"""A factory's GPUs stored column by column, built into ``GPU`` objects only when asked.

At 100,000 GPUs the console's poller spent about half its time (~0.24 s) building frozen
``GPU`` objects, and the cyclic GC more scanning them, while its frame reads a handful
of fields of every GPU and whole GPUs only for a few problem lines. ``GpuColumns`` is a
``Sequence[GPU]`` (a snapshot's ``gpus`` may be one): iterating it, comparing it or
indexing it gives the same GPUs the tuple would hold, and ``column(name)`` gives one
field of every GPU without building any. It stays generic over ``GPU``'s fields: a
column a source does not give is that field's default for every GPU.

Stdlib only, like the rest of the domain model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, fields
from itertools import compress
from operator import attrgetter, eq, ne
from typing import Any, overload

from factoryctl.entities import GPU, Allocation, Job

GPU_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(GPU))
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(GPU) if f.default is not MISSING}


def _gpu_maker() -> Callable[..., GPU]:
    """``GPU(*fields)`` without the frozen dataclass ``__init__``.

    That ``__init__`` goes through ``object.__setattr__`` once per field (frozen), which
    is most of the cost of building 100,000 GPUs. Writing the slots through their member
    descriptors builds an identical, equal and still frozen object (``test_snapshot_cache``
    compares them) in about half the time. GPU has no ``__post_init__`` to skip; if it
    ever gains one, the assertion below fails at import instead of silently bypassing it.
    """
    assert not hasattr(GPU, "__post_init__")
    params = ", ".join(n if n not in _DEFAULTS else f"{n}=_d{k}" for k, n in enumerate(GPU_FIELDS))
    body = "\n".join(f"    _s{k}(o, {n})" for k, n in enumerate(GPU_FIELDS))
    src = f"def make({params}):\n    o = _new(_GPU)\n{body}\n    return o\n"
    scope: dict[str, Any] = {"_new": object.__new__, "_GPU": GPU}
    for k, name in enumerate(GPU_FIELDS):
        scope[f"_s{k}"] = GPU.__dict__[name].__set__
        if name in _DEFAULTS:
            scope[f"_d{k}"] = _DEFAULTS[name]
    exec(src, scope)
    maker: Callable[..., GPU] = scope["make"]
    return maker


make_gpu = _gpu_maker()


class GpuLayout:
    """Which GPU sits at which position: the node and index columns, and the lookups
    built from them on first use. Immutable; a source whose GPUs keep their places
    shares one layout between its snapshots, so the lookups are built once."""

    __slots__ = ("_memo", "_memo_old", "_nodes", "_positions", "_runs", "indexes", "nodes")

    def __init__(self, nodes: Sequence[str], indexes: Sequence[int]) -> None:
        if len(nodes) != len(indexes):
            raise ValueError(f"{len(nodes)} node names for {len(indexes)} GPU indexes")
        self.nodes = nodes
        self.indexes = indexes
        self._positions: dict[tuple[str, int], int] | None = None
        self._runs: tuple[tuple[str, int, int], ...] | None = None
        self._nodes: tuple[dict[str, Sequence[int]], dict[str, tuple[int, int]]] | None = None
        self._memo: dict[int, tuple[object, tuple[int, ...]]] = {}
        self._memo_old: dict[int, tuple[object, tuple[int, ...]]] = {}

    def __len__(self) -> int:
        return len(self.nodes)

    def same(self, other: GpuLayout) -> bool:
        """The same GPUs in the same places (whatever sequence types hold them)."""
        return other is self or (
            len(other) == len(self)
            and all(map(eq, other.nodes, self.nodes))
            and all(map(eq, other.indexes, self.indexes))
        )

    def position(self, node: str, index: int) -> int | None:
        positions = self._positions
        if positions is None:  # racing threads build the same dict; either one is kept
            keys = zip(self.nodes, self.indexes, strict=True)
            positions = self._positions = dict(zip(keys, range(len(self.nodes)), strict=True))
        return positions.get((node, index))

    def runs(self) -> tuple[tuple[str, int, int], ...]:
        """``(node, start, end)`` per run of consecutive GPUs of one node, in order."""
        runs = self._runs
        if runs is None:
            nodes, n = self.nodes, len(self.nodes)
            # Where the node name changes, found by built-ins rather than a loop per GPU.
            starts = [0, *compress(range(1, n), map(ne, nodes[1:], nodes[:-1]))] if n else []
            names = map(nodes.__getitem__, starts)
            runs = self._runs = tuple(
                zip(names, starts, [*starts[1:], n][: len(starts)], strict=True)
            )
        return runs

    def node_positions(self, node: str) -> Sequence[int]:
        """Positions of the node's GPUs, in order (empty for an unknown node)."""
        return self._by_node()[0].get(node, ())

    def _by_node(self) -> tuple[dict[str, Sequence[int]], dict[str, tuple[int, int]]]:
        """Positions per node, and for nodes whose GPUs form one run indexed 0, 1, 2...
        that run's (start, end): a job's GPU positions are then arithmetic."""
        by_node = self._nodes
        if by_node is None:
            spans: dict[str, Sequence[int]] = {}
            regular: dict[str, tuple[int, int]] = {}
            count = list(range(max((e - s for _, s, e in self.runs()), default=0)))
            for node, start, end in self.runs():
                if node in spans:  # split across runs: looked up GPU by GPU
                    spans[node] = [*spans[node], *range(start, end)]
                    regular.pop(node, None)
                    continue
                spans[node] = range(start, end)
                if list(self.indexes[start:end]) == count[: end - start]:
                    regular[node] = (start, end)
            by_node = self._nodes = (spans, regular)
        return by_node

    def job_positions(self, job: Job) -> Sequence[int]:
        """Positions of the job's allocated GPUs that are present, in allocation order.

        Remembered per allocation tuple (a source that reuses a job's unchanged
        allocations, as the simulator's snapshot cache does, gets them for free on the
        next poll) until a snapshot passes without asking (``next_generation``)."""
        allocations = job.allocations
        key = id(allocations)
        hit = self._memo.get(key) or self._memo_old.get(key)
        if hit is not None and hit[0] is allocations:  # held by the memo: id not reused
            self._memo[key] = hit
            return hit[1]
        positions = self._positions_of(allocations)
        self._memo[key] = (allocations, positions)
        return positions

    def next_generation(self) -> None:
        """A new snapshot shares this layout: forget positions the last one never used."""
        self._memo_old, self._memo = self._memo, {}

    def _positions_of(self, allocations: tuple[Allocation, ...]) -> tuple[int, ...]:
        regular, out = self._by_node()[1], list[int]()
        for alloc in allocations:
            span, idx = regular.get(alloc.node), alloc.gpu_indices
            if span is not None and idx and min(idx) >= 0 and max(idx) < span[1] - span[0]:
                out.extend(map(span[0].__add__, idx))
            else:
                for i in idx:
                    if (p := self.position(alloc.node, i)) is not None:
                        out.append(p)
        return tuple(out)


class GpuColumns(Sequence[GPU]):
    """GPUs as one sequence per ``GPU`` field. Either built from columns (GPU objects
    made on demand) or wrapping GPU objects (columns made on demand): ``of(gpus)``.

    The columns are handed over, not copied: the caller must not change them after.
    Lazily built parts are written once from whichever thread gets there first; they
    are equal whoever builds them, so a race costs time, never correctness.
    """

    __slots__ = ("_columns", "_gpus", "layout")

    def __init__(
        self, columns: Mapping[str, Sequence[Any]], layout: GpuLayout | None = None
    ) -> None:
        unknown = set(columns) - set(GPU_FIELDS)
        if unknown:
            raise ValueError(f"not GPU fields: {', '.join(sorted(unknown))}")
        if layout is None:
            layout = GpuLayout(columns["node"], columns["index"])
        cols = {k: v for k, v in columns.items() if k not in ("node", "index")}
        cols["node"], cols["index"] = layout.nodes, layout.indexes
        bad = [k for k, v in cols.items() if len(v) != len(layout)]
        if bad:
            raise ValueError(f"column {bad[0]!r} has {len(cols[bad[0]])} values, not {len(layout)}")
        self.layout = layout
        self._columns: dict[str, Sequence[Any]] = cols
        self._gpus: tuple[GPU, ...] | None = None

    @classmethod
    def of(cls, gpus: Sequence[GPU]) -> GpuColumns:
        """``gpus`` itself when columnar, else a columnar view of those GPU objects."""
        if isinstance(gpus, GpuColumns):
            return gpus
        made = cls.__new__(cls)
        made._gpus = tuple(gpus)
        made._columns = {}
        made.layout = GpuLayout(made.column("node"), made.column("index"))
        return made

    def column(self, name: str) -> Sequence[Any]:
        """One field of every GPU, in order (do not change it)."""
        col = self._columns.get(name)
        if col is None:
            if name not in GPU_FIELDS:
                raise KeyError(name)
            if self._gpus is not None:
                col = list(map(attrgetter(name), self._gpus))
            else:  # the source does not give this field: its default, as GPU(...) would
                col = [_DEFAULTS[name]] * len(self.layout)
            self._columns[name] = col
        return col

    def job_positions(self, job: Job) -> Sequence[int]:
        return self.layout.job_positions(job)

    def gpus(self) -> tuple[GPU, ...]:
        """Every GPU as an object (built once, on first use)."""
        built = self._gpus
        if built is None:
            built = self._gpus = tuple(map(make_gpu, *(self.column(n) for n in GPU_FIELDS)))
        return built

    def __len__(self) -> int:
        return len(self.layout)

    @overload
    def __getitem__(self, i: int) -> GPU: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[GPU, ...]: ...
    def __getitem__(self, i: int | slice) -> GPU | tuple[GPU, ...]:
        if self._gpus is not None or isinstance(i, slice):
            return self.gpus()[i]
        n = len(self)
        if not -n <= i < n:
            raise IndexError("GPU index out of range")
        return make_gpu(*(self.column(name)[i] for name in GPU_FIELDS))

    def __iter__(self) -> Iterator[GPU]:
        return iter(self.gpus())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GpuColumns):
            other = other.gpus()
        if isinstance(other, tuple | list):
            return self.gpus() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.gpus())

    def __repr__(self) -> str:
        return f"GpuColumns({len(self)} GPUs)"
