"""TEST-ONLY: serve a SimFactory's nodes as Prometheus targets, in native or dcgm format.

A stand-in until ``factoryctl-exporter --simulate`` lands (the lab will switch to it).
Deliberately minimal: one HTTP server thread per node; every scrape first advances the
simulator to the wall clock (so a sample's scrape timestamp matches the state it shows),
then renders that node's GPUs. Per-job energy is counted at the source with the same
``JobEnergyAccountant`` the exporter uses, one per node.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from factoryctl.energy import JobEnergyAccountant
from factoryctl.exporter.nvml import CLOCK_EVENT_REASONS
from factoryctl.lab.procs import free_port
from factoryctl.occupancy import IdleStreaks
from factoryctl.rollups import rollup
from factoryctl.sim import SimFactory
from factoryctl.sim.processes import gpu_processes
from factoryctl.sim.rollup_input import node_gpus
from factoryctl.sim.workload import THROTTLE_BITS
from factoryctl.telemetry import schema as m

# Power changes one step after a job starts or ends: keep that lag far below a scrape.
STEP = 0.02


class SimTargets:
    def __init__(
        self,
        sim: SimFactory,
        fmt: str = "native",
        lock: threading.Lock | None = None,
        hpc_jobs: bool = False,
    ) -> None:
        self.sim = sim
        self.fmt = fmt
        # dcgm-exporter with HPC job mapping: every series of an allocated GPU carries the
        # job's id as ``hpc_job`` (one copy per job holding it); none on a free GPU.
        self.hpc_jobs = hpc_jobs
        self.lock = lock or threading.Lock()
        self.accountants = {n: JobEnergyAccountant(grace_seconds=3600) for n in sim.node_names}
        self.idle = IdleStreaks()  # the exporter's idle spells, one tracker for all nodes
        sim.listeners.append(self.observe)
        self.observe(sim)
        self.servers: list[ThreadingHTTPServer] = []
        self.addresses: dict[str, str] = {}

    def observe(self, sim: SimFactory) -> None:
        for i, node in enumerate(sim.node_names):
            energy, owners, util = {}, {}, {}
            for k in range(sim.gpn):
                g = i * sim.gpn + k
                if sim.up[g]:
                    energy[(node, k)] = sim.energy[g]
                    util[(node, k)] = sim.utilization[g]
                    if sim.owner[g] is not None:
                        owners[(node, k)] = (sim.owner[g].job_id,)
            self.accountants[node].observe(sim.now, energy, owners, util)
        self.idle.observe(sim.now, sim.utilization, sim.owner, sim.up)

    def sync(self) -> None:
        """Advance the simulator to now; call with ``lock`` held."""
        self.sim.advance_to(time.time(), STEP)

    def start(self) -> SimTargets:
        for node in self.sim.node_names:
            server = ThreadingHTTPServer(("127.0.0.1", free_port()), self._handler(node))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append(server)
            self.addresses[node] = f"127.0.0.1:{server.server_address[1]}"
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()

    def _handler(self, node: str) -> type[BaseHTTPRequestHandler]:
        targets = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with targets.lock:
                    targets.sync()
                    body = targets.render(node).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def render(self, node: str) -> str:
        text = self._native(node) if self.fmt == "native" else self._dcgm(node)
        # Explicit sample timestamps = the simulator's clock: the engines then store each
        # value at the instant it describes, not at a scrape time a loaded test machine
        # may have delayed by tens of ms. The energy tests measure the method, not jitter.
        stamp = f" {round(self.sim.now * 1000)}"
        return "".join(line + stamp + "\n" for line in text.splitlines())

    def _gpus(self, node: str):
        sim = self.sim
        i = sim.node_index[node]
        for k in range(sim.gpn):
            yield k, i * sim.gpn + k

    def _native(self, node: str) -> str:
        sim, out = self.sim, []
        spells = self.idle.seconds(sim.now, sim.utilization)
        for k, g in self._gpus(node):
            base = f'node="{node}",gpu="{k}",uuid="{sim.uuids[g]}"'
            out.append(f'{m.GPU_INFO}{{{base},model="{sim.config.spec.model}"}} 1')
            out.append(f"{m.GPU_UP}{{{base}}} {int(sim.up[g])}")
            if not sim.up[g]:
                continue
            out.append(f"{m.GPU_UTILIZATION}{{{base}}} {sim.utilization[g]}")
            idle = spells[g]
            if idle is not None:
                out.append(f"{m.GPU_IDLE_SECONDS}{{{base}}} {idle}")
            out.append(f"{m.GPU_MEMORY_USED}{{{base}}} {sim.memory_used[g]}")
            out.append(f"{m.GPU_MEMORY_TOTAL}{{{base}}} {sim.config.spec.memory_total_bytes}")
            out.append(f"{m.GPU_POWER}{{{base}}} {sim.power[g]}")
            out.append(f"{m.GPU_ENERGY}{{{base}}} {sim.energy[g]}")
            out.append(f"{m.GPU_TEMPERATURE}{{{base}}} {sim.temperature[g]}")
            out.append(f'{m.GPU_XID_ERRORS}{{{base},xid="79"}} {sim.xid_total[g]}')
            out.append(f'{m.GPU_ECC_ERRORS}{{{base},type="uncorrected"}} {sim.ecc_uncorrected[g]}')
            if sim.last_xid_time[g]:
                out.append(f"{m.GPU_LAST_XID_TIME}{{{base}}} {sim.last_xid_time[g]}")
            owner = sim.owner[g]
            if owner is not None:
                out.append(
                    f'{m.GPU_JOB_INFO}{{{base},job_id="{owner.job_id}",user="{owner.user}"}} 1'
                )
            # The simulated exporter's processes (sim.processes), one series each.
            procs = gpu_processes(sim, node, k)
            out.append(f"{m.GPU_PROCESSES}{{{base}}} {len(procs)}")
            for p in procs:
                who = f'pid="{p.pid}",name="{p.name}",user="{p.user}",job_id="{p.job_id}"'
                out.append(f"{m.GPU_PROCESS_USED_MEMORY}{{{base},{who}}} {p.memory_bytes}")
        out += self._rollups(node, spells)
        for job_id, totals in self.accountants[node].jobs.items():
            # The exporter's three per-job counters, from the same accountant.
            labels = f'{{node="{node}",job_id="{job_id}"}}'
            out.append(f"{m.JOB_ENERGY}{labels} {totals.energy_joules}")
            out.append(f"{m.JOB_GPU_SECONDS}{labels} {totals.gpu_seconds}")
            out.append(f"{m.JOB_ACTIVE_GPU_SECONDS}{labels} {totals.active_gpu_seconds}")
        return "\n".join(out) + "\n"

    def _rollups(self, node: str, spells: list[float | None]) -> list[str]:
        """The node's and its jobs' rollups, by the function factoryctl-exporter uses."""
        sim = self.sim
        rolled, jobs = rollup(
            node_gpus(sim, sim.node_index[node], spells),
            sim.now,
        )
        out = []
        for name, value in (
            (m.NODE_GPUS, rolled.gpus),
            (m.NODE_GPUS_UP, rolled.gpus_up),
            (m.NODE_GPUS_ALLOCATED, rolled.gpus_allocated),
            (m.NODE_GPUS_ACTIVE, rolled.gpus_active),
            (m.NODE_GPUS_THROTTLED, rolled.gpus_throttled),
            (m.NODE_GPUS_XID_RECENT, rolled.gpus_xid_recent),
            (m.NODE_POWER, rolled.power_watts),
            (m.NODE_UTILIZATION, rolled.utilization),
            (m.NODE_TEMPERATURE_MAX, rolled.temperature_max_celsius),
            (m.NODE_XID_ERRORS, rolled.xid_errors),
            (m.NODE_ENERGY, rolled.energy_joules),
        ):
            if value is not None:
                out.append(f'{name}{{node="{node}"}} {value}')
        for j in jobs:
            lab = f'node="{node}",job_id="{j.job_id}",user="{j.user}"'
            for name, value in (
                (m.JOB_GPUS, j.gpus),
                (m.JOB_GPUS_ACTIVE, j.gpus_active),
                (m.JOB_UTILIZATION_SUM, j.utilization_sum),
                (m.JOB_POWER, j.power_watts),
                (m.JOB_IDLE_SECONDS, j.idle_seconds),
                (m.JOB_UTILIZATION_MIN, j.utilization_min),
                (m.JOB_MEMORY_USED, j.memory_used_bytes),
            ):
                if value is not None:
                    out.append(f"{name}{{{lab}}} {value}")
        return out

    def _dcgm(self, node: str) -> str:
        sim, out = self.sim, []
        spec = sim.config.spec
        for k, g in self._gpus(node):
            if not sim.up[g]:
                continue
            lab = (
                f'gpu="{k}",UUID="{sim.uuids[g]}",device="nvidia{k}",modelName="{spec.model}",'
                f'Hostname="{node}",DCGM_FI_DRIVER_VERSION="550.54.15"'
            )
            owner = sim.owner[g]
            if self.hpc_jobs and owner is not None:
                lab += f',hpc_job="{owner.job_id}"'
            used_mib = sim.memory_used[g] / 2**20
            out += [
                f"DCGM_FI_DEV_GPU_UTIL{{{lab}}} {round(sim.utilization[g] * 100)}",
                f"DCGM_FI_DEV_POWER_USAGE{{{lab}}} {sim.power[g]:.3f}",
                f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{lab}}} {round(sim.energy[g] * 1000)}",
                f"DCGM_FI_DEV_FB_USED{{{lab}}} {round(used_mib)}",
                f"DCGM_FI_DEV_FB_FREE{{{lab}}} {round(spec.memory_total_bytes / 2**20 - used_mib)}",
                f"DCGM_FI_DEV_GPU_TEMP{{{lab}}} {round(sim.temperature[g])}",
                f"DCGM_FI_DEV_SM_CLOCK{{{lab}}} {round(sim.sm_clock[g] / 1e6)}",
                f"DCGM_FI_DEV_XID_ERRORS{{{lab}}} {sim.last_xid[g]}",
                f"DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{{{lab}}} {self._reasons(sim.throttle[g])}",
            ]
        return "\n".join(out) + "\n"

    @staticmethod
    def _reasons(throttle: int) -> int:
        """The simulator's throttle bits as NVML's clock-event reasons mask."""
        return sum(NVML_BITS[name] for name, bit in THROTTLE_BITS.items() if throttle & bit)


NVML_BITS = {name: bit for bit, name in CLOCK_EVENT_REASONS.items()}


class SimScheduler:
    """TEST-ONLY SchedulerView over the simulator: what Slurm would say about its jobs."""

    def __init__(self, targets: SimTargets) -> None:
        self.targets = targets

    def nodes(self):
        from factoryctl.sim.snapshot import build_snapshot

        with self.targets.lock:
            return build_snapshot(self.targets.sim).nodes

    def jobs(self):
        from factoryctl.sim.snapshot import build_snapshot

        with self.targets.lock:
            jobs = build_snapshot(self.targets.sim).jobs
        return list(jobs)


def main() -> None:
    """TEST-ONLY process form, for ``python -m factoryctl.lab up --exporter-cmd``."""
    import argparse

    from factoryctl.sim import SimConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--format", default="native")
    args = parser.parse_args()
    sim = SimFactory(
        SimConfig(node_names=(args.node,), gpus_per_node=args.gpus, start_time=time.time())
    )
    targets = SimTargets(sim, args.format)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), targets._handler(args.node))
    server.serve_forever()


if __name__ == "__main__":
    main()
