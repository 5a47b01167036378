"""GPU -> job attribution, from the cheapest reliable source to the last resort.

Order, per GPU (the first source that names a job wins):

1. The job-map directory written by a Slurm prolog: one file per GPU index, one job id
   per line (dcgm-exporter's ``--hpc-job-mapping-dir`` layout, so sites can reuse theirs).
2. A backend that knows the owner itself (the simulator).
3. ``/proc/PID/cgroup`` of the GPU's processes: Slurm's ``job_N`` directories (cgroup v1
   and v2) and Kubernetes pod UIDs.
4. ``/proc/PID/environ``: ``SLURM_JOB_ID`` (readable only for root or the job's user).

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


def parse_environ(raw: bytes) -> dict[str, str]:
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key in (b"SLURM_JOB_ID", b"SLURM_JOB_USER"):
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
        self._cache: dict[int, JobRef | None] = {}

    def resolve(self, pid: int) -> JobRef | None:
        if pid in self._cache:
            return self._cache[pid]
        ref = self._lookup(pid)
        self._cache[pid] = ref
        return ref

    def forget_except(self, live: Iterable[int]) -> None:
        """Drop PIDs no longer on any GPU, so a reused PID is looked up afresh."""
        keep = set(live)
        for pid in [p for p in self._cache if p not in keep]:
            del self._cache[pid]

    def _lookup(self, pid: int) -> JobRef | None:
        base = self.proc_root / str(pid)
        try:
            uid = base.stat().st_uid
            cgroup = (base / "cgroup").read_text(errors="replace")
        except OSError:
            return None  # exited already, or hidepid: nothing to say
        env: dict[str, str] = {}
        job_id = job_from_cgroup(cgroup)
        # Another user's environ needs root; the cgroup usually suffices.
        with contextlib.suppress(OSError):
            env = parse_environ((base / "environ").read_bytes())
        if job_id is None:
            job_id = env.get("SLURM_JOB_ID")
        if job_id is None or not JOB_ID_RE.match(job_id):
            return None
        return JobRef(job_id, env.get("SLURM_JOB_USER") or self.user_of(uid))


class Attributor:
    def __init__(self, map_dir: JobMapDir | None = None, procs: ProcResolver | None = None):
        self.map_dir = map_dir
        self.procs = procs or ProcResolver()

    def attribute(self, readings: Sequence[GpuReading]) -> Mapping[int, tuple[JobRef, ...]]:
        """GPU index -> the jobs holding it (empty tuple: nobody)."""
        mapped = self.map_dir.read() if self.map_dir is not None else None
        out: dict[int, tuple[JobRef, ...]] = {}
        live: list[int] = []
        for r in readings:
            if not r.up:
                # A GPU lost (XID 79) is still held by its job until the scheduler ends it:
                # the prolog's map file, or a backend that knows, still names the job, so
                # the alert can say whose job the fault hit. No /proc: NVML lists nothing.
                if mapped is not None and r.index in mapped:
                    out[r.index] = tuple(JobRef(j) for j in mapped[r.index])
                elif r.jobs:
                    out[r.index] = tuple(r.jobs)
                continue
            from_procs: list[JobRef] = []
            for proc in r.processes or ():
                live.append(proc.pid)
                if r.jobs is None:
                    ref = self.procs.resolve(proc.pid)
                    if ref is not None and ref not in from_procs:
                        from_procs.append(ref)
            known = list(r.jobs) if r.jobs is not None else from_procs
            if mapped is not None and r.index in mapped:
                users = {ref.job_id: ref.user for ref in known}
                out[r.index] = tuple(JobRef(j, users.get(j, "")) for j in mapped[r.index])
            else:
                out[r.index] = tuple(known)
        self.procs.forget_except(live)
        return out
