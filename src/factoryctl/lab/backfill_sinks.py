"""Where ``lab.backfill`` writes: VictoriaMetrics' JSON import, or OpenMetrics for promtool.

A chunk holds a few steps of every series, per-GPU metrics as one step-major array each
(the simulator's arrays appended whole), so one GPU's values are a strided slice
(``values[g::n]``) taken in C rather than appended sample by sample. Label text is
encoded once per series and reused for every chunk.
"""

from __future__ import annotations

import json
import subprocess
from array import array
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from factoryctl.telemetry import schema as m

if TYPE_CHECKING:
    from factoryctl.sim import SimFactory

PROMTOOL_BIN = "promtool"  # on PATH, like every lab binary


@dataclass(frozen=True, slots=True)
class Layout:
    """The factory's shape and each GPU's identity labels."""

    node_names: tuple[str, ...]
    gpn: int
    gpu_labels: tuple[dict[str, str], ...]  # node, gpu, uuid
    model: str

    @classmethod
    def of(cls, sim: SimFactory) -> Layout:
        gpn, names = sim.gpn, sim.node_names
        labels = tuple(
            {"node": names[g // gpn], "gpu": str(g % gpn), "uuid": sim.uuids[g]}
            for g in range(sim.gpu_count)
        )
        return cls(tuple(names), gpn, labels, sim.config.spec.model)

    @property
    def gpu_count(self) -> int:
        return len(self.gpu_labels)


@dataclass
class Chunk:
    stamps: list[int]  # milliseconds
    gauges: dict[str, array[float]]  # metric -> values, step-major (len(stamps) * GPUs)
    up: bytearray = field(default_factory=bytearray)  # 0/1 per GPU, step-major
    info: dict[tuple[int, str, str], list[int]] = field(default_factory=dict)  # (gpu, job, user)
    job_energy: dict[tuple[int, str], tuple[list[int], list[float]]] = field(default_factory=dict)
    # The rollups (``factoryctl.rollups``): (metric, node, job_id, user) -> (stamps, values);
    # job_id and user are "" for the per-node ones. A series absent at a step (no GPU up
    # to average) has no sample there.
    rollups: dict[tuple[str, int, str, str], tuple[list[int], list[float]]] = field(
        default_factory=dict
    )

    @classmethod
    def empty(cls, metrics: dict[str, array[float]]) -> Chunk:
        return cls([], {name: array("d") for name in metrics})

    def job_gpus(self, gpn: int) -> dict[tuple[int, str, str], dict[int, int]]:
        """``factoryctl_job_gpus`` from the attribution: (node, job, user) -> step -> GPUs
        the job held on the node at that step."""
        out: dict[tuple[int, str, str], dict[int, int]] = {}
        for (g, job, user), ts in self.info.items():
            counts = out.setdefault((g // gpn, job, user), {})
            for t in ts:
                counts[t] = counts.get(t, 0) + 1
        return out

    def samples(self, gpus: int, gpn: int = 8) -> int:
        per_gpu = len(self.gauges) + 2  # + up and the constant inventory series
        return (
            len(self.stamps) * gpus * per_gpu
            + sum(len(ts) for ts in self.info.values())
            + sum(len(steps) for steps in self.job_gpus(gpn).values())
            + sum(len(ts) for ts, _ in self.job_energy.values())
            + sum(len(ts) for ts, _ in self.rollups.values())
        )


class Sink(Protocol):
    def write(self, layout: Layout, chunk: Chunk) -> None: ...

    def close(self) -> None: ...


def _series(layout: Layout, chunk: Chunk) -> list[tuple[dict[str, str], list[float], list[int]]]:
    """Every series of the chunk that is not per-GPU-per-step: attribution and job energy."""
    out: list[tuple[dict[str, str], list[float], list[int]]] = []
    for (g, job, user), ts in chunk.info.items():
        lab = {"__name__": m.GPU_JOB_INFO, **layout.gpu_labels[g], "job_id": job, "user": user}
        out.append((lab, [1.0] * len(ts), ts))
    for (i, job, user), counts in chunk.job_gpus(layout.gpn).items():
        stamps = sorted(counts)
        lab = {"__name__": m.JOB_GPUS, "node": layout.node_names[i], "job_id": job, "user": user}
        out.append((lab, [float(counts[t]) for t in stamps], stamps))
    for (i, job), (ts, vals) in chunk.job_energy.items():
        lab = {"__name__": m.JOB_ENERGY, "node": layout.node_names[i], "job_id": job}
        out.append((lab, vals, ts))
    for (name, i, job, user), (ts, vals) in chunk.rollups.items():
        lab = {"__name__": name, "node": layout.node_names[i]}
        if job:
            lab |= {"job_id": job, "user": user}
        out.append((lab, vals, ts))
    return out


def _per_gpu(chunk: Chunk) -> dict[str, array[float] | bytearray]:
    """Every per-GPU series: the gauges, ``up`` and the inventory (always 1)."""
    ones = bytearray(b"\x01") * len(chunk.up)
    return {**chunk.gauges, m.GPU_UP: chunk.up, m.GPU_INFO: ones}


def _gpu_label_set(layout: Layout, name: str, g: int) -> dict[str, str]:
    lab = {"__name__": name, **layout.gpu_labels[g]}
    if name == m.GPU_INFO:
        lab["model"] = layout.model
    return lab


class VictoriaImport:
    """POST each chunk to ``/api/v1/import`` (JSON lines), one request in flight while the
    next chunk is simulated and encoded."""

    def __init__(self, url: str, timeout: float = 600.0) -> None:
        import httpx  # the lab may use httpx; kept local so importing this module is cheap

        self.url = url.rstrip("/") + "/api/v1/import"
        self._client = httpx.Client(timeout=timeout)
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: Future[None] | None = None
        self._heads: dict[str, list[str]] = {}

    def write(self, layout: Layout, chunk: Chunk) -> None:
        body = self.encode(layout, chunk)
        self._wait()
        self._pending = self._pool.submit(self._post, body)

    def encode(self, layout: Layout, chunk: Chunk) -> bytes:
        n, dumps = layout.gpu_count, json.dumps
        tail = ',"timestamps":' + dumps(chunk.stamps) + "}"
        lines: list[str] = []
        for name, values in _per_gpu(chunk).items():
            heads = self._heads.get(name)
            if heads is None:
                heads = [
                    '{"metric":' + dumps(_gpu_label_set(layout, name, g)) + ',"values":'
                    for g in range(n)
                ]
                self._heads[name] = heads
            # str() of a list of floats or ints is its JSON (finite values), without
            # json.dumps' per-call encoder set-up; 0/1 series go as ints, cheaper to print.
            lines.extend(heads[g] + str(list(values[g::n])) + tail for g in range(n))
        for lab, vals, ts in _series(layout, chunk):
            lines.append(dumps({"metric": lab, "values": vals, "timestamps": ts}))
        return "\n".join(lines).encode()

    def _post(self, body: bytes) -> None:
        self._client.post(self.url, content=body).raise_for_status()

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # an import error surfaces here

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._pool.shutdown()
            self._client.close()


class OpenMetricsFile:
    """Write every chunk as OpenMetrics text with timestamps, for ``promtool tsdb
    create-blocks-from openmetrics``; each series' samples stay in time order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._out: IO[str] = path.open("w", encoding="utf-8")
        self._heads: dict[str, list[str]] = {}

    def write(self, layout: Layout, chunk: Chunk) -> None:
        n, out = layout.gpu_count, self._out
        stamps = [f"{ts / 1000:.3f}\n" for ts in chunk.stamps]
        for name, values in _per_gpu(chunk).items():
            heads = self._heads.get(name)
            if heads is None:
                heads = [_om_head(_gpu_label_set(layout, name, g)) for g in range(n)]
                self._heads[name] = heads
            for g in range(n):
                head = heads[g]
                out.write(
                    "".join([f"{head}{v!r} {s}" for v, s in zip(values[g::n], stamps, strict=True)])
                )
        for lab, vals, ts in _series(layout, chunk):
            head = _om_head(lab)
            out.write(
                "".join(f"{head}{v!r} {t / 1000:.3f}\n" for v, t in zip(vals, ts, strict=True))
            )

    def close(self) -> None:
        self._out.write("# EOF\n")
        self._out.close()


def _om_head(labels: dict[str, str]) -> str:
    """``name{k="v",...} `` (label values here never hold quotes or backslashes)."""
    name = labels["__name__"]
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items() if k != "__name__")
    return f"{name}{{{inner}}} "


def create_blocks(openmetrics: Path, data_dir: Path, timeout: float = 600.0) -> None:
    """Turn an OpenMetrics file into TSDB blocks in ``data_dir`` (Prometheus's data path)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            PROMTOOL_BIN,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(openmetrics),
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"promtool create-blocks-from failed: {proc.stderr.strip()[-500:]}")


def wait_served(url: str, gpus: int, timeout: float = 120.0, victoria: bool = False) -> None:
    """Wait until a query at now counts ``gpus`` GPUs reporting: imported data searchable
    (VictoriaMetrics is flushed first) and its window not yet over."""
    import time
    import urllib.request

    from factoryctl.lab.procs import wait_until
    from factoryctl.telemetry.client import PromClient, PromConfig

    if victoria:
        urllib.request.urlopen(url.rstrip("/") + "/internal/force_flush", timeout=60).read()
    client = PromClient(PromConfig(url, timeout=60))

    def served() -> bool:
        return (client.query(f"count({m.GPU_UP})", time.time()).scalar() or 0) >= gpus

    try:
        wait_until(served, timeout, f"{url} to serve {gpus} GPUs' backfilled samples", 0.5)
    finally:
        client.close()
