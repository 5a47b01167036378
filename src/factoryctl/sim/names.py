"""Deterministic names for simulated nodes, users, accounts and GPU UUIDs."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from typing import overload

_FIRST = [
    "ada",
    "alan",
    "anna",
    "ben",
    "chen",
    "dana",
    "eli",
    "emma",
    "fatima",
    "grace",
    "hugo",
    "ines",
    "ivan",
    "jana",
    "kai",
    "lena",
    "li",
    "marco",
    "mei",
    "nils",
    "olga",
    "omar",
    "pia",
    "raj",
    "rosa",
    "sam",
    "sara",
    "tom",
    "uma",
    "yuki",
]
_PROJECTS = [
    "llm",
    "vision",
    "climate",
    "genomics",
    "fusion",
    "robotics",
    "speech",
    "materials",
    "cfd",
    "drug",
    "astro",
    "finance",
]


def node_names(count: int, prefix: str = "gpu") -> list[str]:
    width = max(3, len(str(count)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, count + 1)]


def user_name(i: int) -> str:
    return f"{_FIRST[i % len(_FIRST)]}{i // len(_FIRST) or ''}"


def account_name(i: int) -> str:
    return f"proj-{_PROJECTS[i % len(_PROJECTS)]}{i // len(_PROJECTS) or ''}"


def gpu_uuid(seed: int, node: str, index: int) -> str:
    # Stable across runs, shaped like NVML's "GPU-xxxxxxxx-xxxx-..." UUIDs.
    return "GPU-" + str(uuid.uuid5(uuid.NAMESPACE_DNS, f"factoryctl-sim/{seed}/{node}/{index}"))


# uuid5's variant nibble (RFC 4122: 10xx) from the hash's.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def gpu_uuids(seed: int, nodes: Sequence[str], gpus_per_node: int) -> list[str]:
    """``gpu_uuid`` for every GPU of ``nodes`` in order, without a UUID object each (a
    fifth of the time at 100,000 GPUs): uuid5 is SHA-1 of the namespace and the name,
    with the version and variant bits set."""
    sha1, namespace, variant = hashlib.sha1, uuid.NAMESPACE_DNS.bytes, _VARIANT
    out = []
    for node in nodes:
        prefix = namespace + f"factoryctl-sim/{seed}/{node}/".encode()
        for index in range(gpus_per_node):
            x = sha1(prefix + str(index).encode()).hexdigest()
            out.append(f"GPU-{x[:8]}-{x[8:12]}-5{x[13:16]}-{variant[x[16]]}{x[17:20]}-{x[20:32]}")
    return out


class GpuUuids(Sequence[str]):
    """Every GPU's UUID in flat GPU order, computed a node at a time when first read: a
    factory whose UUIDs nobody reads (the demo's text summary) does not hash 100,000
    names. The values never change, so concurrent readers at worst compute one twice."""

    def __init__(self, seed: int, nodes: Sequence[str], gpus_per_node: int) -> None:
        self._seed, self._nodes, self._gpn = seed, nodes, gpus_per_node
        self._known: list[str | None] = [None] * (len(nodes) * gpus_per_node)

    def __len__(self) -> int:
        return len(self._known)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        known = self._known[i]
        if known is None:
            node = range(len(self))[i] // self._gpn
            lo = node * self._gpn
            self._known[lo : lo + self._gpn] = gpu_uuids(self._seed, [self._nodes[node]], self._gpn)
            known = self._known[i]
            assert known is not None
        return known

    def __iter__(self) -> Iterator[str]:
        every = gpu_uuids(self._seed, self._nodes, self._gpn) if None in self._known else None
        if every is not None:
            self._known = list[str | None](every)
            return iter(every)
        return (u for u in self._known if u is not None)
