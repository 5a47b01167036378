"""The custom prometheus_client Collector: fresh metric families from the last snapshot.

``collect()`` runs on every scrape and touches nothing but the snapshot's frozen values,
so a scrape costs the formatting of the samples and never a call into NVML. Names come
from ``factoryctl.telemetry.schema``; ``CounterMetricFamily`` adds the ``_total`` suffix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from factoryctl import __version__
from factoryctl.exporter.backend import GpuReading
from factoryctl.exporter.collection import Snapshot
from factoryctl.telemetry import schema as s

_GPU = list(s.GPU_LABELS)


def _counter_name(name: str) -> str:
    return name.removesuffix("_total")


# (metric name, help, reading attribute, counter?) for the plain one-value-per-GPU fields.
_FIELDS: list[tuple[str, str, str, bool]] = [
    (s.GPU_UTILIZATION, "Fraction of the last sample period a kernel ran.", "utilization", False),
    (
        s.GPU_MEMORY_UTILIZATION,
        "Fraction of the last sample period device memory was read or written.",
        "memory_bandwidth_utilization",
        False,
    ),
    (s.GPU_MEMORY_USED, "Device memory in use.", "memory_used_bytes", False),
    (s.GPU_MEMORY_TOTAL, "Device memory installed.", "memory_total_bytes", False),
    (s.GPU_POWER, "Power draw.", "power_watts", False),
    (s.GPU_POWER_LIMIT, "Enforced power limit.", "power_limit_watts", False),
    (s.GPU_TEMPERATURE, "GPU die temperature.", "temperature_celsius", False),
    (s.GPU_MEMORY_TEMPERATURE, "HBM temperature.", "memory_temperature_celsius", False),
    (s.GPU_SM_CLOCK, "Current SM clock.", "sm_clock_hz", False),
    (s.GPU_MEMORY_CLOCK, "Current memory clock.", "memory_clock_hz", False),
    (s.GPU_PCIE_REPLAYS, "PCIe replays since the driver loaded.", "pcie_replays", True),
]


class SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        yield from self._gpu_families(snap)
        yield from self._node_rollup_families(snap)
        yield from self._job_families(snap)
        yield from self._self_families(snap)

    def _gpu_families(self, snap: Snapshot) -> Iterator[Metric]:
        node = snap.node
        ups = [r for r in snap.readings if r.up]

        def ids(r: GpuReading) -> list[str]:
            return [node, str(r.index), r.uuid]

        up = GaugeMetricFamily(s.GPU_UP, "1 if NVML answers for the GPU, 0 if lost.", labels=_GPU)
        for r in snap.readings:
            up.add_metric(ids(r), 1.0 if r.up else 0.0)
        yield up

        info = GaugeMetricFamily(
            s.GPU_INFO,
            "GPU identity; value 1.",
            labels=[*_GPU, "model", "driver_version", "pci_bus_id", "serial", "mig_mode"],
        )
        for r in ups:
            info.add_metric(
                [*ids(r), r.model, r.driver_version, r.pci_bus_id, r.serial, r.mig_mode], 1.0
            )
        yield info

        for name, help_text, attr, counter in _FIELDS:
            fam: GaugeMetricFamily | CounterMetricFamily
            if counter:
                fam = CounterMetricFamily(_counter_name(name), help_text, labels=_GPU)
            else:
                fam = GaugeMetricFamily(name, help_text, labels=_GPU)
            for r in ups:
                value = getattr(r, attr)
                if value is not None:
                    fam.add_metric(ids(r), float(value))
            yield fam

        idle = GaugeMetricFamily(
            s.GPU_IDLE_SECONDS,
            "Seconds below the active utilization threshold without a break (0 while"
            " active); restarts when the GPU's jobs change.",
            labels=_GPU,
        )
        for r in ups:
            seconds = snap.idle_seconds.get(r.index)
            if seconds is not None:
                idle.add_metric(ids(r), seconds)
        yield idle

        energy = CounterMetricFamily(
            _counter_name(s.GPU_ENERGY),
            "Energy since the driver loaded; carried across driver reloads.",
            labels=_GPU,
        )
        by_index = {r.index: r for r in snap.readings}
        for index, joules in sorted(snap.gpu_energy.items()):
            owner = by_index.get(index)
            if owner is not None:
                energy.add_metric(ids(owner), joules)
        yield energy

        events = GaugeMetricFamily(
            s.GPU_CLOCK_EVENT, "1 while the clock-event reason holds.", labels=[*_GPU, "reason"]
        )
        ecc = CounterMetricFamily(
            _counter_name(s.GPU_ECC_ERRORS), "ECC errors (aggregate).", labels=[*_GPU, "type"]
        )
        remapped = CounterMetricFamily(
            _counter_name(s.GPU_REMAPPED_ROWS), "Remapped memory rows.", labels=[*_GPU, "cause"]
        )
        remap_fail = GaugeMetricFamily(
            s.GPU_ROW_REMAP_FAILURE, "1 if a row remap failed.", labels=_GPU
        )
        procs = GaugeMetricFamily(s.GPU_PROCESSES, "Processes on the GPU.", labels=_GPU)
        proc_mem = GaugeMetricFamily(
            s.GPU_PROCESS_MEMORY, "Device memory held by the GPU's processes.", labels=_GPU
        )
        for r in ups:
            i = ids(r)
            for reason, active in sorted((r.clock_events or {}).items()):
                events.add_metric([*i, reason], 1.0 if active else 0.0)
            if r.ecc_corrected is not None:
                ecc.add_metric([*i, "corrected"], r.ecc_corrected)
            if r.ecc_uncorrected is not None:
                ecc.add_metric([*i, "uncorrected"], r.ecc_uncorrected)
            if r.remapped_rows_correctable is not None:
                remapped.add_metric([*i, "correctable"], r.remapped_rows_correctable)
            if r.remapped_rows_uncorrectable is not None:
                remapped.add_metric([*i, "uncorrectable"], r.remapped_rows_uncorrectable)
            if r.row_remap_failure is not None:
                remap_fail.add_metric(i, 1.0 if r.row_remap_failure else 0.0)
            if r.processes is not None:
                procs.add_metric(i, float(len(r.processes)))
                known = [p.memory_bytes for p in r.processes if p.memory_bytes is not None]
                if known or not r.processes:
                    proc_mem.add_metric(i, float(sum(known)))
        yield from (events, ecc, remapped, remap_fail, procs, proc_mem)
        yield self._process_family(snap)

        xid = CounterMetricFamily(
            _counter_name(s.GPU_XID_ERRORS), "XID events since start.", labels=[*_GPU, "xid"]
        )
        last_xid = GaugeMetricFamily(
            s.GPU_LAST_XID_TIME, "Unix time of the GPU's latest XID.", labels=_GPU
        )
        for r in snap.readings:
            tally = snap.xids.get(r.index)
            if tally is None:
                continue
            for code, count in sorted(tally.counts.items()):
                xid.add_metric([*ids(r), str(code)], float(count))
            if tally.last_time is not None:
                last_xid.add_metric(ids(r), tally.last_time)
        yield xid
        yield last_xid

    def _process_family(self, snap: Snapshot) -> Metric:
        """One series per GPU process (``nvidia-smi``'s table); absent where NVML cannot
        say how much memory the process holds, never a made-up 0."""
        fam = GaugeMetricFamily(
            s.GPU_PROCESS_USED_MEMORY,
            "Device memory held by one process on the GPU.",
            labels=[*_GPU, *s.GPU_PROCESS_LABELS],
        )
        by_index = {r.index: r for r in snap.readings}
        for index, infos in sorted(snap.processes.items()):
            r = by_index.get(index)
            if r is None:
                continue
            for p in infos:
                if p.memory_bytes is not None:
                    fam.add_metric(
                        [snap.node, str(index), r.uuid, str(p.pid), p.name, p.user, p.job_id],
                        p.memory_bytes,
                    )
        return fam

    def _job_families(self, snap: Snapshot) -> Iterator[Metric]:
        node = snap.node
        by_index = {r.index: r for r in snap.readings}
        job_info = GaugeMetricFamily(
            s.GPU_JOB_INFO, "A job holds the GPU; value 1.", labels=[*_GPU, "job_id", "user"]
        )
        for index, refs in sorted(snap.attribution.items()):
            r = by_index.get(index)
            if r is None:
                continue
            for ref in refs:
                job_info.add_metric([node, str(index), r.uuid, ref.job_id, ref.user], 1.0)
        yield job_info
        yield from self._job_rollup_families(snap)
        labels = ["node", "job_id"]
        energy = CounterMetricFamily(
            _counter_name(s.JOB_ENERGY), "Energy of the job's GPUs on this node.", labels=labels
        )
        held = CounterMetricFamily(
            _counter_name(s.JOB_GPU_SECONDS), "GPU-seconds held on this node.", labels=labels
        )
        active = CounterMetricFamily(
            _counter_name(s.JOB_ACTIVE_GPU_SECONDS),
            "Utilization-weighted GPU-seconds on this node.",
            labels=labels,
        )
        for job_id, c in sorted(snap.jobs.items()):
            energy.add_metric([node, job_id], c.energy_joules)
            held.add_metric([node, job_id], c.gpu_seconds)
            active.add_metric([node, job_id], c.active_gpu_seconds)
        yield from (energy, held, active)

    def _node_rollup_families(self, snap: Snapshot) -> Iterator[Metric]:
        """One series per family for the node (``factoryctl.rollups``); the mean, sum and
        max are absent while no GPU is up, and everything is absent before the first
        collection."""
        r = snap.node_rollup
        if r is None:
            return
        labels = [snap.node]
        for name, help_text, value in (
            (s.NODE_GPUS, "GPUs the exporter knows, up or lost.", r.gpus),
            (s.NODE_GPUS_UP, "GPUs NVML answers for.", r.gpus_up),
            (s.NODE_GPUS_ALLOCATED, "GPUs attributed to at least one job.", r.gpus_allocated),
            (s.NODE_GPUS_ACTIVE, "Up GPUs at or over the active threshold.", r.gpus_active),
            (
                s.NODE_GPUS_THROTTLED,
                "Up GPUs with a hardware or thermal clock-event reason active.",
                r.gpus_throttled,
            ),
            (s.NODE_GPUS_XID_RECENT, "GPUs with an XID in the last hour.", r.gpus_xid_recent),
            (s.NODE_POWER, "Power draw summed over up GPUs.", r.power_watts),
            (s.NODE_UTILIZATION, "Utilization averaged over up GPUs.", r.utilization),
            (s.NODE_TEMPERATURE_MAX, "The hottest up GPU.", r.temperature_max_celsius),
        ):
            if value is not None:
                fam = GaugeMetricFamily(name, help_text, labels=["node"])
                fam.add_metric(labels, float(value))
                yield fam
        xid = CounterMetricFamily(
            _counter_name(s.NODE_XID_ERRORS), "XID events on the node's GPUs.", labels=["node"]
        )
        xid.add_metric(labels, r.xid_errors)
        yield xid
        if r.energy_joules is not None:
            energy = CounterMetricFamily(
                _counter_name(s.NODE_ENERGY), "Energy counters summed.", labels=["node"]
            )
            energy.add_metric(labels, r.energy_joules)
            yield energy

    def _job_rollup_families(self, snap: Snapshot) -> Iterator[Metric]:
        """Per (node, job): GPUs held, active GPUs, utilization and power sums, the longest
        idle spell, the least busy GPU, the memory in use; each absent for a job where none of its GPUs can say."""
        labels = ["node", "job_id", "user"]
        gpus = GaugeMetricFamily(s.JOB_GPUS, "GPUs the job holds on this node.", labels=labels)
        active = GaugeMetricFamily(
            s.JOB_GPUS_ACTIVE, "The job's active GPUs on this node.", labels=labels
        )
        util = GaugeMetricFamily(
            s.JOB_UTILIZATION_SUM,
            "Utilization summed over the job's up GPUs on this node.",
            labels=labels,
        )
        power = GaugeMetricFamily(
            s.JOB_POWER, "Power summed over the job's up GPUs on this node.", labels=labels
        )
        idle = GaugeMetricFamily(
            s.JOB_IDLE_SECONDS,
            "Longest current idle spell among the job's up GPUs on this node.",
            labels=labels,
        )
        low = GaugeMetricFamily(
            s.JOB_UTILIZATION_MIN,
            "The least busy of the job's up GPUs on this node.",
            labels=labels,
        )
        memory = GaugeMetricFamily(
            s.JOB_MEMORY_USED,
            "Memory in use summed over the job's up GPUs on this node.",
            labels=labels,
        )
        for j in snap.job_rollups:
            key = [snap.node, j.job_id, j.user]
            gpus.add_metric(key, float(j.gpus))
            active.add_metric(key, float(j.gpus_active))
            if j.utilization_sum is not None:
                util.add_metric(key, j.utilization_sum)
            if j.power_watts is not None:
                power.add_metric(key, j.power_watts)
            if j.idle_seconds is not None:
                idle.add_metric(key, j.idle_seconds)
            if j.utilization_min is not None:
                low.add_metric(key, j.utilization_min)
            if j.memory_used_bytes is not None:
                memory.add_metric(key, j.memory_used_bytes)
        yield from (gpus, active, util, power, idle, low, memory)

    def _self_families(self, snap: Snapshot) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            s.EXPORTER_BUILD_INFO,
            "factoryctl-exporter build; value 1.",
            labels=["version", "backend"],
        )
        build.add_metric([__version__, snap.backend], 1.0)
        yield build
        yield GaugeMetricFamily(
            s.EXPORTER_COLLECTION_DURATION,
            "Wall time of the latest collection.",
            value=snap.duration_seconds,
        )
        if snap.last_success is not None:
            yield GaugeMetricFamily(
                s.EXPORTER_LAST_SUCCESS,
                "Unix time of the latest successful collection.",
                value=snap.last_success,
            )
        yield CounterMetricFamily(
            "factoryctl_exporter_collections", "Collections run.", value=snap.collections
        )
        yield CounterMetricFamily(
            "factoryctl_exporter_collection_failures",
            "Collections that failed as a whole.",
            value=snap.failures,
        )
        yield CounterMetricFamily(
            _counter_name(s.EXPORTER_SKIPPED),
            "Collection ticks skipped because the previous collection overran.",
            value=snap.skipped,
        )
        errors = CounterMetricFamily(
            _counter_name(s.EXPORTER_NVML_ERRORS), "Failed NVML calls.", labels=["call"]
        )
        for call, count in sorted(snap.nvml_errors.items()):
            errors.add_metric([call], float(count))
        yield errors
        yield CounterMetricFamily(
            "factoryctl_exporter_job_map_errors",
            "Garbage lines and unreadable files met in the job-map directory, and GPUs a"
            " job's environment names that are not on this node (never guessed).",
            value=snap.job_map_errors,
        )
