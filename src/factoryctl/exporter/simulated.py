"""The simulated backend: one node of ``factoryctl.sim``'s factory, read like NVML.

``--simulate N`` builds a one-node factory of N GPUs that follows the wall clock, so any
machine can run a realistic exporter. Tests instead hand in a factory they drive
themselves (``follow_clock=False``) and compare what the exporter counted with the
simulator's exact truth.

The simulator knows which job holds each GPU, so this backend reports the jobs directly
(``GpuReading.jobs``); a job-map directory, when given, still takes precedence. With a
control directory (``--sim-control``, ``sim_control.py``) the jobs and faults come from
files instead: the factory runs no jobs of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from factoryctl.exporter.backend import GpuProcess, GpuReading, JobRef, XidCount
from factoryctl.exporter.sim_control import SimControl
from factoryctl.exporter.xid import XidTally
from factoryctl.sim import SimConfig, SimFactory, XidEvent
from factoryctl.sim.processes import gpu_processes
from factoryctl.sim.workload import THROTTLE_BITS


class SimBackend:
    name = "simulated"

    def __init__(
        self,
        sim: SimFactory,
        node: str,
        *,
        follow_clock: bool = True,
        processes_per_gpu: int = 1,
        driver_version: str = "580.0.0-sim",
        control: SimControl | None = None,
    ) -> None:
        self.sim = sim
        self.node = node
        self.follow_clock = follow_clock
        self.processes_per_gpu = processes_per_gpu
        self.driver_version = driver_version
        self.control = control
        self.base = sim.gpu_slot(node, 0)
        self.tally = XidTally()
        self._last_xid: XidEvent | None = None
        # A driven factory may be advanced by the test thread while we read it.
        self.lock = threading.Lock()

    @classmethod
    def create(
        cls,
        gpus: int,
        node: str,
        start_time: float,
        seed: int = 0,
        processes_per_gpu: int = 1,
        control_dir: Path | None = None,
    ) -> SimBackend:
        config = SimConfig(
            nodes=1,
            node_names=(node,),
            gpus_per_node=gpus,
            seed=seed,
            start_time=start_time,
            jobs=control_dir is None,
        )
        control = SimControl(control_dir) if control_dir is not None else None
        return cls(SimFactory(config), node, processes_per_gpu=processes_per_gpu, control=control)

    def read(self, now: float) -> Sequence[GpuReading]:
        with self.lock:
            sim = self.sim
            if self.follow_clock and now > sim.now:
                sim.advance_to(now)
            held = None
            if self.control is not None:
                self.control.apply(sim, self.node)
                held = self.control.holders()
            self._drain_xids()
            spec = sim.config.spec
            down = sim.admin[sim.node_index[self.node]].silent
            out = []
            for index in range(sim.gpn):
                g = self.base + index
                uuid = sim.uuids[g]
                if down or not sim.up[g]:
                    # The scheduler still has the lost GPU's job on it (control mode).
                    lost_jobs = None if held is None else held.get(index, ())
                    out.append(GpuReading(index=index, uuid=uuid, up=False, jobs=lost_jobs))
                    continue
                job = sim.owner[g]
                procs: tuple[GpuProcess, ...] = ()
                jobs: tuple[JobRef, ...] = ()
                if job is not None:
                    # The demo's processes, so a console on either sees the same PIDs.
                    procs = tuple(
                        GpuProcess(p.pid, p.memory_bytes, p.name, p.user)
                        for p in gpu_processes(sim, self.node, index, self.processes_per_gpu)
                    )
                    jobs = (JobRef(job.job_id, job.user),)
                if held is not None:
                    jobs = held.get(index, ())
                out.append(
                    GpuReading(
                        index=index,
                        uuid=uuid,
                        model=spec.model,
                        driver_version=self.driver_version,
                        pci_bus_id=f"00000000:{0x18 + 0x10 * index:02X}:00.0",
                        serial="SIM" + uuid.replace("-", "")[-10:].upper(),
                        mig_mode="disabled",
                        utilization=sim.utilization[g],
                        memory_bandwidth_utilization=sim.memory_utilization[g],
                        memory_used_bytes=sim.memory_used[g],
                        memory_total_bytes=spec.memory_total_bytes,
                        power_watts=sim.power[g],
                        power_limit_watts=spec.power_limit_watts,
                        temperature_celsius=sim.temperature[g],
                        memory_temperature_celsius=sim.temperature[g] + 4.0,
                        sm_clock_hz=sim.sm_clock[g],
                        memory_clock_hz=spec.mem_clock_hz,
                        clock_events={
                            name: bool(sim.throttle[g] & bit) for name, bit in THROTTLE_BITS.items()
                        },
                        ecc_corrected=sim.ecc_corrected[g],
                        ecc_uncorrected=sim.ecc_uncorrected[g],
                        remapped_rows_correctable=0.0,
                        remapped_rows_uncorrectable=0.0,
                        row_remap_failure=False,
                        pcie_replays=0.0,
                        processes=procs,
                        jobs=jobs,
                    )
                )
            return out

    def read_energy(self, indices: Sequence[int]) -> Mapping[int, float]:
        with self.lock:
            sim, base = self.sim, self.base
            return {i: sim.energy[base + i] for i in indices if sim.up[base + i]}

    def _drain_xids(self) -> None:
        """Count the factory's XID events for this node that arrived since the last read."""
        fresh: list[XidEvent] = []
        for event in reversed(self.sim.xid_events):
            if event is self._last_xid:
                break
            fresh.append(event)
        if fresh:
            self._last_xid = fresh[0]
        for event in reversed(fresh):
            if event.node == self.node:
                self.tally.record(event.gpu, event.code, event.time)

    def xids(self) -> Mapping[int, XidCount]:
        with self.lock:
            self._drain_xids()
        return self.tally.snapshot()

    def error_counts(self) -> Mapping[str, int]:
        return {}

    def close(self) -> None:
        pass
