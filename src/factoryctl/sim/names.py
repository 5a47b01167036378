"""Deterministic names for simulated nodes, users, accounts and GPU UUIDs."""

from __future__ import annotations

import uuid

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
