"""GPU -> job attribution, from the cheapest reliable source to the last resort.

Order, per GPU (the first source that names a job wins):

1. The job-map directory written by a Slurm prolog: one file per GPU index, one job id
   per line (dcgm-exporter's ``--hpc-job-mapping-dir`` layout, so sites can reuse theirs).
2. A backend that knows the owner itself (the simulator).
3. ``/proc/PID/cgroup`` of the GPU's processes: Slurm's ``job_N`` directories (cgroup v1
   and v2) and Kubernetes pod UIDs.
4. ``/proc/PID/environ``: ``SLURM_JOB_ID`` (readable only for root or the job's user).

A process's environ also names every GPU its job holds on the node, so a GPU the job
holds but runs nothing on (idle inside the job, or lost to an XID) is attributed too:
``SLURM_JOB_GPUS`` and ``SLURM_STEP_GPUS`` (the node's indices) and, from Slurm 25.11,
GPU UUIDs in ``CUDA_VISIBLE_DEVICES`` (``GPU-...``; MIG devices ``MIG-...``), mapped to
indices through the backend's readings. Numeric ``CUDA_VISIBLE_DEVICES`` are not used:
with ConstrainDevices Slurm renumbers them from 0 inside the job, so they are not the
node's indices. An entry that names no GPU of this node is counted as a job-map error and
logged once; the entries that are known still count. Nothing is guessed.

A process that exits between NVML listing it and us reading ``/proc`` is normal: it is
skipped silently. ``/proc`` and the map directory are paths so tests can use fixture trees.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from factoryctl.errors import ConfigError
from factoryctl.exporter.backend import GpuReading, JobRef
from factoryctl.exporter.job_env import GPU_ENV_KEYS, gpu_entries, gpu_indices_of

log = logging.getLogger("factoryctl.exporter")

# Slurm ids: 123, array tasks 123_4, het components 123+1. Anything else in a map file is
# garbage (a shell error message, a binary blob): never turn it into a label value.
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")
_SLURM_CGROUP_RE = re.compile(r"/job_(\d+)(?:/|$)")
_UUID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_K8S_POD_RE = re.compile(r"pod(" + _UUID + r")")


def job_from_cgroup(text: str) -> str | None:
    """The Slurm job id or Kubernetes pod UID in a ``/proc/PID/cgroup`` file, if any."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        m = _SLURM_CGROUP_RE.search(path)
        if m:
            return m.group(1)
        m = _K8S_POD_RE.search(path)
        if m:
            # systemd's cgroup driver writes the UID with underscores.
            return m.group(1).replace("_", "-")
    return None


ENV_KEYS = (b"SLURM_JOB_ID", b"SLURM_JOB_USER", *(k.encode() for k in GPU_ENV_KEYS))


def parse_environ(raw: bytes) -> dict[str, str]:
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key in ENV_KEYS:
            env[key.decode()] = value.decode(errors="replace")
    return env


def parse_map_file(text: str, name: str) -> tuple[list[str], list[str]]:
    """Job ids in one map file, and a message for each garbage line."""
    ids: list[str] = []
    bad: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        if JOB_ID_RE.match(value):
            if value not in ids:
                ids.append(value)
        else:
            bad.append(f"{name}:{lineno}: not a job id: {value[:40]!r}")
    return ids, bad


class JobMapDir:
    """Reads the prolog's map directory each collection; complains once per problem."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned: set[str] = set()
        self.errors = 0  # garbage lines and unreadable files seen (self-metric)

    def _warn(self, message: str) -> None:
        self.errors += 1
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    def validate(self) -> None:
        """At startup: a garbage line is a configuration error, reported before we serve."""
        try:
            names = sorted(e.name for e in os.scandir(self.path) if e.name.isdigit())
        except OSError:
            return  # unreadable is not fatal: read() logs it and we fall back to /proc
        for name in names:
            try:
                text = (self.path / name).read_text(errors="replace")
            except OSError:
                continue
            _, bad = parse_map_file(text, str(self.path / name))
            if bad:
                raise ConfigError(f"job-map directory: {bad[0]}")

    def read(self) -> dict[int, tuple[str, ...]] | None:
        """GPU index -> job ids; None when the directory cannot be read at all."""
        try:
            entries = [e.name for e in os.scandir(self.path)]
        except OSError as exc:
            self._warn(
                f"job-map directory {self.path} unreadable ({exc.strerror}); using /proc only"
            )
            return None
        out: dict[int, tuple[str, ...]] = {}
        for name in entries:
            if not name.isdigit():
                continue  # the prolog's temp files, editor droppings
            try:
                text = (self.path / name).read_text(errors="replace")
            except FileNotFoundError:
                continue  # the epilog removed it as we looked
            except OSError as exc:
                self._warn(f"job-map file {self.path / name} unreadable ({exc.strerror})")
                continue
            ids, bad = parse_map_file(text, str(self.path / name))
            for message in bad:
                self._warn(f"job-map {message}; line ignored")
            if ids:
                out[int(name)] = tuple(ids)
        return out


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class ProcResolver:
    """PID -> job, through ``/proc``; cached per PID while the PID stays on a GPU."""

    def __init__(
        self, proc_root: Path = Path("/proc"), user_of: Callable[[int], str] = _user_name
    ) -> None:
        self.proc_root = proc_root
        self.user_of = user_of
        self._cache: dict[int, tuple[JobRef | None, tuple[str, ...]]] = {}

    def resolve(self, pid: int) -> JobRef | None:
        return self._resolved(pid)[0]

    def job_gpus(self, pid: int) -> tuple[str, ...]:
        """The GPUs the process's job holds, as its environment names them (raw entries);
        only where the environment's SLURM_JOB_ID is the job the process was placed in."""
        return self._resolved(pid)[1]

    def _resolved(self, pid: int) -> tuple[JobRef | None, tuple[str, ...]]:
        if pid not in self._cache:
            self._cache[pid] = self._lookup(pid)
        return self._cache[pid]

    def forget_except(self, live: Iterable[int]) -> None:
        """Drop PIDs no longer on any GPU, so a reused PID is looked up afresh."""
        keep = set(live)
        for pid in [p for p in self._cache if p not in keep]:
            del self._cache[pid]

    def _lookup(self, pid: int) -> tuple[JobRef | None, tuple[str, ...]]:
        base = self.proc_root / str(pid)
        try:
            uid = base.stat().st_uid
            cgroup = (base / "cgroup").read_text(errors="replace")
        except OSError:
            return None, ()  # exited already, or hidepid: nothing to say
        env: dict[str, str] = {}
        job_id = job_from_cgroup(cgroup)
        # Another user's environ needs root; the cgroup usually suffices.
        with contextlib.suppress(OSError):
            env = parse_environ((base / "environ").read_bytes())
        if job_id is None:
            job_id = env.get("SLURM_JOB_ID")
        if job_id is None or not JOB_ID_RE.match(job_id):
            return None, ()
        # Only the job's own environment: a process moved into another job's cgroup keeps
        # the environ it started with, which names the other job's GPUs.
        gpus = gpu_entries(env) if env.get("SLURM_JOB_ID") == job_id else ()
        return JobRef(job_id, env.get("SLURM_JOB_USER") or self.user_of(uid)), gpus


class Attributor:
    def __init__(self, map_dir: JobMapDir | None = None, procs: ProcResolver | None = None):
        self.map_dir = map_dir
        self.procs = procs or ProcResolver()
        # Environment GPU entries that named no GPU of this node (self-metric, with the
        # map directory's errors): counted once per process, logged once per entry.
        self.errors = 0
        self._counted: set[int] = set()
        self._warned: set[str] = set()

    def attribute(self, readings: Sequence[GpuReading]) -> Mapping[int, tuple[JobRef, ...]]:
        """GPU index -> the jobs holding it (empty tuple: nobody)."""
        mapped = self.map_dir.read() if self.map_dir is not None else None
        live: list[int] = []
        from_procs: dict[int, list[JobRef]] = {}
        from_env: dict[int, list[JobRef]] = {}  # GPUs a job's environment names
        for r in readings:
            if not r.up:
                continue  # NVML lists no process on a lost GPU
            for proc in r.processes or ():
                live.append(proc.pid)
                if r.jobs is not None:
                    continue
                ref = self.procs.resolve(proc.pid)
                if ref is None:
                    continue
                _add(from_procs.setdefault(r.index, []), ref)
                for index in self._env_gpus(proc.pid, readings):
                    _add(from_env.setdefault(index, []), ref)
        out: dict[int, tuple[JobRef, ...]] = {}
        for r in readings:
            known = list(r.jobs) if r.jobs is not None else from_procs.get(r.index, [])
            if mapped is not None and r.index in mapped:
                # A GPU lost (XID 79) is still held by its job until the scheduler ends
                # it: the prolog's map file still names the job, so the alert can say whose
                # job the fault hit.
                users = {ref.job_id: ref.user for ref in known}
                out[r.index] = tuple(JobRef(j, users.get(j, "")) for j in mapped[r.index])
            else:
                # A backend that knows (lost GPUs included); else its own processes' jobs,
                # then any job whose environment names it (held but idle, or lost: NVML
                # lists nothing there). A lost GPU nobody names is left out, not "free".
                held = list(known)
                for ref in from_env.get(r.index, []) if r.jobs is None else ():
                    _add(held, ref)
                if r.up or held:
                    out[r.index] = tuple(held)
        self.procs.forget_except(live)
        self._counted &= set(live)
        return out

    def _env_gpus(self, pid: int, readings: Sequence[GpuReading]) -> set[int]:
        entries = self.procs.job_gpus(pid)
        if not entries:
            return set()
        known, unknown = gpu_indices_of(entries, readings)
        if unknown and pid not in self._counted:
            self._counted.add(pid)
            self.errors += len(unknown)
            for entry in unknown:
                if entry not in self._warned:
                    self._warned.add(entry)
                    ref = self.procs.resolve(pid)
                    log.warning(
                        "job %s: its environment names GPU %r, which is not on this node;"
                        " its other GPUs are still attributed",
                        ref.job_id if ref is not None else "?",
                        entry,
                    )
        return known


def _add(refs: list[JobRef], ref: JobRef) -> None:
    if ref not in refs:
        refs.append(ref)
