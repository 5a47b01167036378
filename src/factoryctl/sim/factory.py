"""The simulated factory: nodes x GPUs, jobs, faults and exact energy, from a seed.

State lives in flat per-GPU arrays (``array``), not an object per GPU or per sample, so a
12,500 x 8 gigafactory fits. Time only moves when a caller advances it: tests drive the
clock, the demo follows the wall clock.

Energy is exact by construction: a GPU's power is constant between its own events, and
each interval adds ``power * dt`` to the GPU's counter and, independently, to the true
energy of the job holding it. Jobs start at step boundaries (the scheduler runs there);
a job that ends inside a step splits only its own GPUs' interval at its end: they are
charged up to the end, freed, and draw an unallocated GPU's power for the rest of the
step. No interval straddles a change of owner, and the rest of the factory steps whole,
so a step costs one pass over the GPUs however many jobs end in it.
``true_energy()`` is the ground truth our measured figures are checked against.
"""

from __future__ import annotations

import heapq
import random
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import add, mul, not_

from factoryctl.model import JobState
from factoryctl.sim import names
from factoryctl.sim.config import SimConfig
from factoryctl.sim.jobs import JobGenerator, SimJob
from factoryctl.sim.workload import THROTTLE_BITS, Readings, Workload, sample

# XID codes with their effect. 79: fallen off the bus. 48/94/95: ECC (DBE, contained,
# uncontained). 13/31/43: application faults, the user's and not the hardware's.
XID_LOST = {79}
XID_ECC = {48, 94, 95}
XID_KILLS_JOB = {79, 94, 95}


@dataclass(frozen=True, slots=True)
class XidEvent:
    time: float
    node: str
    gpu: int
    code: int


@dataclass(slots=True)
class NodeAdmin:
    """What an operator or a health check did to a node (the scheduler's side)."""

    drain: bool = False
    down: bool = False
    reboot_until: float | None = None
    maint: bool = False
    reason: str = ""
    reason_time: float | None = None

    @property
    def silent(self) -> bool:
        """Down or rebooting: the node's GPUs do no work and its exporter sends nothing."""
        return self.down or self.reboot_until is not None


@dataclass
class SimFactory:
    config: SimConfig = field(default_factory=SimConfig)

    def __post_init__(self) -> None:
        cfg = self.config
        self.node_names: list[str] = list(cfg.node_names) or names.node_names(
            cfg.nodes, cfg.node_prefix
        )
        self.gpn = cfg.gpus_per_node
        n = len(self.node_names) * self.gpn
        self.node_index = {name: i for i, name in enumerate(self.node_names)}
        self.now = cfg.start_time
        self.rng = random.Random(cfg.seed)
        d0 = [0.0] * n
        self.utilization = array("d", d0)
        self.memory_utilization = array("d", d0)
        self.memory_used = array("d", d0)
        self.power = array("d", [cfg.spec.idle_watts] * n)
        self.energy = array("d", d0)  # the GPU's own counter: resets on driver reload
        self.temperature = array("d", [30.0] * n)
        self.sm_clock = array("d", [cfg.spec.idle_sm_clock_hz] * n)
        self.throttle = array("l", [0] * n)
        self.throttle_until = array("d", d0)
        self.up = bytearray(b"\x01" * n)
        self.ecc_uncorrected = array("d", d0)
        self.ecc_corrected = array("d", d0)
        self.xid_total = array("d", d0)
        self.last_xid = array("l", [0] * n)
        self.last_xid_time = array("d", d0)
        self.owner: list[SimJob | None] = [None] * n
        self.phase = array("d", (self.rng.random() for _ in range(n)))
        self.uuids = names.GpuUuids(cfg.seed, self.node_names, self.gpn)
        self.admin = [NodeAdmin() for _ in self.node_names]
        self.free = array("l", [self.gpn] * len(self.node_names))
        self.jobs: dict[str, SimJob] = {}  # running and pending
        self.finished: deque[SimJob] = deque(maxlen=5000)
        self.truth: dict[str, float] = {}
        self.xid_events: deque[XidEvent] = deque(maxlen=10000)
        # Called after every step, with the factory at the step's end.
        self.listeners: list[Callable[[SimFactory], None]] = []
        # Called when a job releases its GPUs anywhere but at the end of a step (which the
        # listeners above see): inside a step, at the job's end, or at once (a fault, an
        # operator's reboot or release). With the time and its GPUs: their counters are
        # integrated up to that time and their readings are the ones that hold from it
        # (inside a step, the rest of the factory is still at the step's start).
        self.release_listeners: list[Callable[[SimFactory, float, Sequence[int]], None]] = []
        self.generator = (
            JobGenerator(cfg, self.rng, len(self.node_names) * self.gpn) if cfg.jobs else None
        )
        self._job_ends: list[tuple[float, str]] = []  # heap of (end time, job id)
        self._reboot_ends: list[float] = []  # heap: a reboot's end splits the step
        self._last_fault_check = self.now
        if self.generator is not None:
            self._fill_to_target()
        self._sample(self.now)  # the readings that hold from the start

    # -- lookups -------------------------------------------------------------------------
    @property
    def gpu_count(self) -> int:
        return len(self.owner)

    def gpu_slot(self, node: str, index: int) -> int:
        if node not in self.node_index:
            raise KeyError(f"unknown node {node!r}")
        if not 0 <= index < self.gpn:
            raise KeyError(f"node {node} has no GPU {index}")
        return self.node_index[node] * self.gpn + index

    def true_energy(self, job_id: str) -> float:
        """Exact joules drawn by the job's GPUs while it held them."""
        return self.truth.get(job_id, 0.0)

    def all_jobs(self) -> Iterable[SimJob]:
        yield from self.finished
        yield from self.jobs.values()

    # -- time ----------------------------------------------------------------------------
    def advance(self, seconds: float, step_seconds: float = 1.0) -> None:
        self.advance_to(self.now + seconds, step_seconds)

    def advance_to(self, t: float, step_seconds: float = 1.0) -> None:
        """Move the clock to ``t`` in steps of at most ``step_seconds`` (split only where a
        reboot ends); jobs that end inside a step end there, on their own GPUs."""
        while self.now < t - 1e-9:
            nxt = min(t, self.now + step_seconds)
            if self._reboot_ends and self._reboot_ends[0] < nxt:
                nxt = max(self.now, self._reboot_ends[0])
            self._step_to(nxt)
            for listener in self.listeners:
                listener(self)
            # Random faults land just after an observation: a GPU lost to XID 79 can no
            # longer be read, so an exporter loses at most the interval since its last
            # collection; here that interval is empty, and the jobs a fault ends release
            # their GPUs at once (release_listeners), so the measured energy stays exact.
            self._random_faults()

    def _step_to(self, t1: float) -> None:
        """Integrate up to ``t1`` (ending the jobs due on the way), run the scheduler at
        ``t1``, then sample the readings that hold from ``t1``."""
        t0 = self.now
        # GPU -> start of its last interval, for the GPUs of jobs that ended inside.
        split: dict[int, float] = {}
        at_end: list[SimJob] = []
        ends = self._job_ends
        while ends and ends[0][0] <= t1 + 1e-9:
            end, job_id = heapq.heappop(ends)
            job = self.jobs.get(job_id)
            if job is None or job.state is not JobState.RUNNING or job.ends != end:
                continue  # it ended before its time (a fault, a release)
            if end >= t1 - 1e-9:
                at_end.append(job)
            else:
                self._end_inside(job, max(t0, end), split)
        self._integrate(t0, t1, split)
        self.now = t1
        for job in at_end:
            self._finish(job, JobState.COMPLETED, notify=False)  # the listeners see it
        self._handle_events()
        self._sample(t1)

    def _end_inside(self, job: SimJob, t: float, split: dict[int, float]) -> None:
        """End ``job`` at ``t`` inside the step that starts at ``self.now``: charge its GPUs
        up to ``t``, free them, and sample what they draw from ``t``."""
        power, energy, up, owner = self.power, self.energy, self.up, self.owner
        t0, charged = self.now, 0.0
        gpus = [g for g in job.slots if owner[g] is job]
        for g in gpus:
            if up[g]:
                e = power[g] * (t - split.get(g, t0))
                energy[g] += e
                charged += e
            split[g] = t
        self.truth[job.job_id] = self.truth.get(job.job_id, 0.0) + charged
        self._finish(job, JobState.COMPLETED, at=t, notify=False)
        self._sample_gpus(gpus, t)
        for listener in self.release_listeners:
            listener(self, t, gpus)

    def _integrate(self, t0: float, t1: float, split: dict[int, float]) -> None:
        """Add each GPU's power times its interval in this step (the whole step, or from its
        job's end for the GPUs in ``split``) to its counter and to its job's truth.

        Each GPU's energy is one product, and its counter one addition (C loops over the
        arrays); truth is added GPU by GPU in GPU order, a job's consecutive GPUs summed in
        a local: the same floating-point additions, in the same order, as one at a time.
        """
        power, up = self.power, self.up
        dt = t1 - t0
        gained = list(map(mul, power, repeat(dt))) if dt > 0 else [0.0] * len(power)
        for g in compress(range(len(up)), map(not_, up)):
            gained[g] = 0.0  # a lost GPU draws nothing
        for g, start in split.items():
            gained[g] = power[g] * (t1 - start) if up[g] and t1 > start else 0.0
        self.energy[:] = array("d", map(add, self.energy, gained))
        truth, job, total = self.truth, None, 0.0
        for owner, e in zip(self.owner, gained, strict=True):
            if owner is None:
                continue
            if owner is not job:
                if job is not None:
                    truth[job.job_id] = total
                job, total = owner, truth.get(owner.job_id, 0.0)
            total += e
        if job is not None:
            truth[job.job_id] = total

    def _sample(self, t: float) -> None:
        """Every GPU's readings from ``t``: a lost GPU or a silent node's draws nothing."""
        gpn, up = self.gpn, self.up
        live = up
        silent = [i for i, a in enumerate(self.admin) if a.silent]
        if silent:
            live = bytearray(up)
            for i in silent:
                live[i * gpn : (i + 1) * gpn] = bytes(gpn)
        self._sample_live(compress(range(len(up)), live), live, t)
        for g in compress(range(len(up)), map(not_, live)):
            self.power[g] = 0.0
            self.utilization[g] = 0.0

    def _sample_gpus(self, gpus: Sequence[int], t: float) -> None:
        """These GPUs' readings from ``t`` (``_sample`` for a few)."""
        gpn, up, admin = self.gpn, self.up, self.admin
        live = [g for g in gpus if up[g] and not admin[g // gpn].silent]
        self._sample_live(live, None, t)
        for g in gpus:
            if not up[g] or admin[g // gpn].silent:
                self.power[g] = 0.0
                self.utilization[g] = 0.0

    def _sample_live(self, gpus: Iterable[int], live: Sequence[int] | None, t: float) -> None:
        """Sample these GPUs (``live``: the mask they come from, None for a few named ones)
        at ``t``, in order, one noise draw each; an expired throttle ends first."""
        throttle, until = self.throttle, self.throttle_until
        if live is None:
            gpus = list(gpus)
            expired = [g for g in gpus if throttle[g] and until[g] <= t]
        else:
            expired = [g for g in compress(range(len(throttle)), throttle) if live[g]]
            expired = [g for g in expired if until[g] <= t]
        for g in expired:
            throttle[g] = 0
        readings = Readings(
            self.utilization,
            self.memory_utilization,
            self.memory_used,
            self.power,
            self.temperature,
            self.sm_clock,
        )
        sample(
            self.config.spec, t, gpus, self.owner, self.phase, throttle, self.rng.random, readings
        )

    def _handle_events(self) -> None:
        rebooted = False
        while self._reboot_ends and self._reboot_ends[0] <= self.now + 1e-9:
            heapq.heappop(self._reboot_ends)
            rebooted = True
        for i, admin in enumerate(self.admin if rebooted else ()):
            if admin.reboot_until is not None and admin.reboot_until <= self.now:
                admin.reboot_until = None
                admin.down = False
                for g in range(i * self.gpn, (i + 1) * self.gpn):
                    self.up[g] = 1  # a reboot brings lost GPUs back
        if self.generator is not None:
            pending = sum(1 for j in self.jobs.values() if j.state is JobState.PENDING)
            for job in self.generator.arrivals(self.now):
                if pending < self.generator.max_pending:
                    self.jobs[job.job_id] = job
                    pending += 1
            self._schedule_pending()

    # -- jobs ----------------------------------------------------------------------------
    def _fill_to_target(self) -> None:
        assert self.generator is not None
        for job in self.generator.initial(self.now):
            self.jobs[job.job_id] = job
        self._schedule_pending()

    def _schedulable(self, i: int) -> bool:
        a = self.admin[i]
        return not (a.drain or a.down or a.maint or a.reboot_until is not None)

    def _schedule_pending(self) -> None:
        pending = [j for j in self.jobs.values() if j.state is JobState.PENDING]
        if not pending:
            return
        gpn = self.gpn
        # One pass over the nodes, then first-fit from these pools: O(nodes + jobs * partial).
        usable = [i for i in range(len(self.node_names)) if self.free[i] and self._schedulable(i)]
        whole = deque(i for i in usable if self.free[i] == gpn)
        partial = [i for i in usable if self.free[i] < gpn]
        # room[k]: partial nodes with k free GPUs. A job no partial node can take skips
        # the first-fit walk (at 100,000 GPUs, thousands of jobs times a long list).
        room = [0] * gpn
        for i in partial:
            room[self.free[i]] += 1
        for job in pending:
            placement: list[int] | None = None
            if job.gpus <= gpn:
                for pos, i in enumerate(partial if any(room[job.gpus :]) else ()):
                    if self.free[i] >= job.gpus:
                        placement = [i]
                        room[self.free[i]] -= 1
                        if self.free[i] == job.gpus:
                            partial.pop(pos)
                        else:
                            room[self.free[i] - job.gpus] += 1
                        break
                if placement is None and whole:
                    placement = [whole.popleft()]
                    if job.gpus < gpn:
                        partial.append(placement[0])
                        room[gpn - job.gpus] += 1
            elif len(whole) >= -(-job.gpus // gpn):
                placement = [whole.popleft() for _ in range(-(-job.gpus // gpn))]
            if placement is not None:
                self.start_job(
                    job, [(i, self._free_slots(i, min(job.gpus, gpn))) for i in placement]
                )

    def _free_slots(self, i: int, want: int) -> list[int]:
        base = i * self.gpn
        return [k for k in range(self.gpn) if self.owner[base + k] is None and self.up[base + k]][
            :want
        ]

    def start_job(self, job: SimJob, placement: list[tuple[int, list[int]]]) -> None:
        job.state = JobState.RUNNING
        job.start_time = self.now
        job.slots = [i * self.gpn + k for i, idx in placement for k in idx]
        for i, idx in placement:
            self.free[i] -= len(idx)
        for g in job.slots:
            self.owner[g] = job
        self.truth.setdefault(job.job_id, 0.0)
        if job.ends != float("inf"):
            heapq.heappush(self._job_ends, (job.ends, job.job_id))

    def assign(
        self, job_id: str, user: str, node: str, gpus: list[int], workload: Workload
    ) -> SimJob:
        """Put an externally scheduled job (e.g. from real Slurm) on GPUs."""
        job = SimJob(
            job_id=job_id,
            user=user,
            account="",
            gpus=len(gpus),
            duration=float("inf"),
            workload=workload,
        )
        self.jobs[job_id] = job
        i = self.node_index[node]
        self.start_job(job, [(i, gpus)])
        return job

    def release(self, job_id: str, state: JobState = JobState.COMPLETED) -> None:
        job = self.jobs.get(job_id)
        if job is not None and job.state is JobState.RUNNING:
            self._finish(job, state)

    def _finish(
        self, job: SimJob, state: JobState, at: float | None = None, notify: bool = True
    ) -> None:
        job.state = state
        job.end_time = self.now if at is None else at
        gpus = [g for g in job.slots if self.owner[g] is job]
        for g in gpus:
            self.owner[g] = None
            self.free[g // self.gpn] += 1
        # Its entry in _job_ends, if any, is skipped when it comes due.
        del self.jobs[job.job_id]
        self.finished.append(job)
        if notify:
            for listener in self.release_listeners:
                listener(self, job.end_time, gpus)

    # -- faults --------------------------------------------------------------------------
    def inject_xid(self, node: str, gpu: int, code: int) -> None:
        g = self.gpu_slot(node, gpu)
        self.xid_total[g] += 1
        self.last_xid[g] = code
        self.last_xid_time[g] = self.now
        self.xid_events.append(XidEvent(self.now, node, gpu, code))
        if code in XID_ECC:
            self.ecc_uncorrected[g] += 1
        if code in XID_LOST:
            self.up[g] = 0
            self.power[g] = 0.0
            # What a node health check (NHC) does: drain with its own reason.
            self.set_admin(node, drain=True, reason=f"NHC: GPU {gpu} fell off the bus (XID 79)")
        job = self.owner[g]
        if code in XID_KILLS_JOB and job is not None:
            self._finish(job, JobState.FAILED)

    def inject_throttle(self, node: str, gpu: int, kind: str, seconds: float) -> None:
        g = self.gpu_slot(node, gpu)
        self.throttle[g] |= THROTTLE_BITS[kind]
        self.throttle_until[g] = self.now + seconds

    def reset_energy_counter(self, node: str, gpu: int) -> None:
        """A driver reload: the GPU's own counter restarts at 0 (truth is unaffected)."""
        self.energy[self.gpu_slot(node, gpu)] = 0.0

    def fail_node(self, node: str, reason: str = "Not responding") -> None:
        i = self.node_index[node]
        self.set_admin(node, down=True, reason=reason)
        for job in [self.owner[g] for g in range(i * self.gpn, (i + 1) * self.gpn)]:
            if job is not None and job.state is JobState.RUNNING:
                self._finish(job, JobState.NODE_FAIL)

    def _random_faults(self) -> bool:
        """Inject faults due since the last call; True when any was injected."""
        rate = self.config.faults_per_node_day
        if rate <= 0 or self.generator is None:
            return False
        # Poisson thinning per step is enough: faults are rare events.
        dt, self._last_fault_check = self.now - self._last_fault_check, self.now
        expected = rate * len(self.node_names) * dt / 86400.0
        injected = False
        while expected > 0 and self.rng.random() < expected:
            expected -= 1.0
            injected = True
            node = self.rng.choice(self.node_names)
            gpu = self.rng.randrange(self.gpn)
            kind = self.rng.random()
            if kind < 0.1:
                self.fail_node(node, "Not responding")
            elif kind < 0.3:
                self.inject_xid(node, gpu, 79)
            elif kind < 0.45:
                self.inject_xid(node, gpu, self.rng.choice([48, 94, 95]))
            elif kind < 0.65:
                self.inject_xid(node, gpu, self.rng.choice([13, 31, 43]))
            else:
                self.inject_throttle(node, gpu, self.rng.choice(list(THROTTLE_BITS)), 600.0)
        return injected

    # -- administration (what the demo scheduler calls) -----------------------------------
    def set_admin(
        self,
        node: str,
        *,
        drain: bool | None = None,
        down: bool | None = None,
        maint: bool | None = None,
        reason: str | None = None,
    ) -> None:
        admin = self.admin[self.node_index[node]]
        if drain is not None:
            admin.drain = drain
        if down is not None:
            admin.down = down
        if maint is not None:
            admin.maint = maint
        if reason is not None:
            admin.reason = reason
            admin.reason_time = self.now if reason else None

    def reboot(self, node: str, seconds: float = 120.0) -> None:
        i = self.node_index[node]
        for g in range(i * self.gpn, (i + 1) * self.gpn):
            job = self.owner[g]
            if job is not None and job.state is JobState.RUNNING:
                self._finish(job, JobState.NODE_FAIL)
        self.admin[i].reboot_until = self.now + seconds
        heapq.heappush(self._reboot_ends, self.now + seconds)
