"""Where ``lab.backfill`` writes: VictoriaMetrics' JSON import, or OpenMetrics for promtool.

A chunk holds a few steps of every series, per-GPU metrics as one step-major array each
(the simulator's arrays appended whole), so one GPU's values are a strided slice
(``values[g::n]``) taken in C rather than appended sample by sample. Label text is
encoded once per series and reused for every chunk.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
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
    # Node rollups (``factoryctl.rollups``): metric -> one value per node, step-major like
    # the gauges; NaN where the series is absent at that step (no GPU up to average),
    # which only metrics named in ``sparse`` hold. Nothing is written for a NaN.
    node_rollups: dict[str, array[float]] = field(default_factory=dict)
    sparse: set[str] = field(default_factory=set)
    # (node, job) rollups: (metric, node, job_id, user) -> (stamps, values).
    job_rollups: dict[tuple[str, int, str, str], tuple[list[int], list[float]]] = field(
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
            + sum(len(ts) for ts, _ in self.job_rollups.values())
            + sum(
                sum(1 for v in values if v == v) if name in self.sparse else len(values)
                for name, values in self.node_rollups.items()
            )
        )

    def node_series(self, name: str, i: int, nodes: int) -> tuple[list[float], list[int]]:
        """One node's values of a node rollup over the chunk, and their stamps (those
        where it is absent left out)."""
        values = list(self.node_rollups[name][i::nodes])
        if name not in self.sparse:
            return values, self.stamps
        kept = [(v, t) for v, t in zip(values, self.stamps, strict=True) if v == v]
        return [v for v, _ in kept], [t for _, t in kept]


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
    for (name, i, job, user), (ts, vals) in chunk.job_rollups.items():
        lab = {"__name__": name, "node": layout.node_names[i], "job_id": job, "user": user}
        out.append((lab, vals, ts))
    return out


def _node_label_set(layout: Layout, name: str, i: int) -> dict[str, str]:
    return {"__name__": name, "node": layout.node_names[i]}


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
        nodes = len(layout.node_names)
        for name in chunk.node_rollups:
            heads = self._heads.get(name)
            if heads is None:
                heads = [
                    '{"metric":' + dumps(_node_label_set(layout, name, i)) + ',"values":'
                    for i in range(nodes)
                ]
                self._heads[name] = heads
            for i in range(nodes):
                vals, ts = chunk.node_series(name, i, nodes)
                if vals:
                    stamps = tail if ts is chunk.stamps else ',"timestamps":' + dumps(ts) + "}"
                    lines.append(heads[i] + str(vals) + stamps)
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

    def __init__(self, path: Path, heads: dict[str, list[str]] | None = None) -> None:
        self.path = path
        self._out: IO[str] = path.open("w", encoding="utf-8")
        # Series heads by metric, built once; ``PromtoolBlocks`` shares them across parts.
        self._heads: dict[str, list[str]] = {} if heads is None else heads

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
        nodes = len(layout.node_names)
        for name in chunk.node_rollups:
            heads = self._heads.get(name)
            if heads is None:
                heads = [_om_head(_node_label_set(layout, name, i)) for i in range(nodes)]
                self._heads[name] = heads
            for i in range(nodes):
                vals, ts = chunk.node_series(name, i, nodes)
                out.write(
                    "".join(
                        f"{heads[i]}{v!r} {t / 1000:.3f}\n" for v, t in zip(vals, ts, strict=True)
                    )
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


def create_blocks(
    openmetrics: Path, data_dir: Path, timeout: float = 600.0, max_rss: int | None = None
) -> None:
    """Turn an OpenMetrics file into TSDB blocks in ``data_dir`` (Prometheus's data path).
    ``max_rss``: bytes; promtool is killed past it (it maps the whole file and holds every
    series of a block range in memory: 30 minutes of 100,000 GPUs in one file grew past
    20 GB), and the error says so."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [PROMTOOL_BIN, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics)]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([*argv, str(data_dir)], stdout=subprocess.DEVNULL, stderr=err)
        peak, deadline = 0, time.monotonic() + timeout
        try:
            while proc.poll() is None:
                peak = max(peak, _rss(proc.pid))
                if max_rss is not None and peak > max_rss:
                    raise RuntimeError(
                        f"promtool create-blocks-from passed {max_rss / 2**30:.1f} GiB RSS"
                        f" on {openmetrics.name}: split the backfill into smaller parts"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"promtool create-blocks-from ran past {timeout:g} s")
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        if proc.returncode != 0:
            tail = err.read().decode(errors="replace").strip()[-500:]
            raise RuntimeError(f"promtool create-blocks-from failed: {tail}")
    CREATE_BLOCKS_PEAKS.append(peak)


# Peak RSS of each promtool run, bytes (the benchmark reports the largest).
CREATE_BLOCKS_PEAKS: list[int] = []


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            line = next((ln for ln in status if ln.startswith("VmRSS:")), "VmRSS: 0 kB")
    except OSError:  # exited between poll() and here
        return 0
    return int(line.split()[1]) * 1024


class PromtoolBlocks:
    """Prometheus TSDB blocks straight from the backfill, one promtool run per chunk.

    Each chunk (``backfill.CHUNK_STEPS`` steps, 5 minutes at 15 s) goes to its own
    OpenMetrics file, turned into a block by promtool while the next chunk is simulated,
    then deleted: promtool's memory and the disk hold one chunk's series, never the whole
    backfill's (the 30-minute, 100,000-GPU file did not fit a 23 GiB machine). At most
    one promtool runs at a time; blocks of adjacent time ranges do not overlap."""

    def __init__(self, data_dir: Path, work_dir: Path, max_rss: int | None = 8 * 2**30) -> None:
        self.data_dir, self.work_dir, self.max_rss = data_dir, work_dir, max_rss
        self._heads: dict[str, list[str]] = {}
        self._parts = 0
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: Future[None] | None = None

    def write(self, layout: Layout, chunk: Chunk) -> None:
        path = self.work_dir / f"part-{self._parts:04d}.om"
        self._parts += 1
        part = OpenMetricsFile(path, self._heads)
        part.write(layout, chunk)
        part.close()
        self._wait()
        self._pending = self._pool.submit(self._blocks, path)

    def _blocks(self, path: Path) -> None:
        try:
            create_blocks(path, self.data_dir, timeout=3600, max_rss=self.max_rss)
        finally:
            path.unlink(missing_ok=True)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._pool.shutdown()


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
