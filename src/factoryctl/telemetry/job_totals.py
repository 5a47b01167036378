"""One finished job's totals for the AdminComment record: energy, GPU-seconds and active
GPU-seconds over its [start, end], from Prometheus.

Native sites: the exporter's exact per-(node, job) counters, all three read the way
``EnergyReader.job_counters`` reads energy (increase over the window, resets handled).
dcgm-exporter sites: the energy of exactly the attributed GPUs (``PrometheusSource
.job_energy``); GPU-seconds are the GPUs held times the runtime, and the active share is
not known (no per-job active counter), so it is left out of the record rather than guessed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from factoryctl.energy_record import EnergyRecord
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Job
from factoryctl.telemetry import schema as native
from factoryctl.telemetry.job_energy import EnergyReader
from factoryctl.telemetry.prometheus_source import PrometheusSource


def settled_at(source: PrometheusSource, end: float) -> float:
    """When Prometheus holds the job's last counter values: the exporter's collection
    after the end, scraped (two scrape intervals) and searchable (the engine's delay)."""
    return end + source.window(end)


def job_totals(source: PrometheusSource, job: Job, now: float) -> EnergyRecord:
    """The job's totals as of ``now``; raises ``FactoryctlError`` when Prometheus holds no
    figure for it (a record of 0 J would be a lie in the accounting forever)."""
    if job.start_time is None:
        raise FactoryctlError(
            f"job {job.job_id} has no start time: it never ran", ExitStatus.NOT_FOUND
        )
    end = min(job.end_time if job.end_time is not None else now, now)
    schema = source.schema(now)
    interval = source.interval(now)
    if schema.job_energy is not None:
        reader = EnergyReader(source.client, schema, interval)
        lo, hi = job.start_time - 2 * interval, min(settled_at(source, end), now)
        metrics = (schema.job_energy, native.JOB_GPU_SECONDS, native.JOB_ACTIVE_GPU_SECONDS)
        with ThreadPoolExecutor(max_workers=len(metrics)) as pool:
            futures = [pool.submit(reader.job_counters, lo, hi, [job.job_id], m) for m in metrics]
            energy, gpu_s, active = (f.result().get(job.job_id) for f in futures)
        if energy is not None:
            return EnergyRecord(job.job_id, energy, gpu_s, active, "job-counter")
    measured = source.job_energy([job], now=now).get(job.job_id)
    if measured is None or measured.joules is None:
        why = measured.note if measured is not None and measured.note else "no energy data"
        raise FactoryctlError(
            f"no energy in Prometheus for job {job.job_id}: {why}", ExitStatus.NOT_FOUND
        )
    gpus = job.gpu_count
    runtime = job.runtime_seconds(end)
    gpu_seconds = gpus * runtime if gpus and runtime is not None else None
    method = "job-counter" if measured.method == "job-counter" else "gpu-counter"
    return EnergyRecord(job.job_id, measured.joules, gpu_seconds, None, method)
