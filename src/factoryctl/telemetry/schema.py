"""Metric names: the contract between factoryctl-exporter and everything that reads it.

One prefix, ``factoryctl_``, and Prometheus base units. Every per-GPU series carries
``node``, ``gpu`` (index) and ``uuid``; everything else about a GPU's identity lives on
``GPU_INFO``. GPU->job attribution is one info series per (GPU, job), never a copy of every
metric per job. The dcgm-exporter schema lives in the reader, beside these names.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "factoryctl_"

GPU_LABELS: Final = ("node", "gpu", "uuid")

# Identity and health
GPU_INFO: Final = "factoryctl_gpu_info"  # + model, driver_version, pci_bus_id, serial, mig_mode
GPU_UP: Final = "factoryctl_gpu_up"  # 0 when NVML reports the GPU lost
# Activity and memory
GPU_UTILIZATION: Final = "factoryctl_gpu_utilization_ratio"
GPU_MEMORY_UTILIZATION: Final = "factoryctl_gpu_memory_bandwidth_utilization_ratio"
GPU_MEMORY_USED: Final = "factoryctl_gpu_memory_used_bytes"
GPU_MEMORY_TOTAL: Final = "factoryctl_gpu_memory_total_bytes"
# Seconds the GPU has been below the active threshold without a break (0 while active);
# the spell restarts when the GPU's jobs change. "GPU idle 2 h inside a job" is one query.
GPU_IDLE_SECONDS: Final = "factoryctl_gpu_idle_seconds"
# Power and energy
GPU_POWER: Final = "factoryctl_gpu_power_watts"
GPU_POWER_LIMIT: Final = "factoryctl_gpu_power_limit_watts"
GPU_ENERGY: Final = "factoryctl_gpu_energy_joules_total"  # never goes backwards
# Thermals and clocks
GPU_TEMPERATURE: Final = "factoryctl_gpu_temperature_celsius"
GPU_MEMORY_TEMPERATURE: Final = "factoryctl_gpu_memory_temperature_celsius"
GPU_SM_CLOCK: Final = "factoryctl_gpu_sm_clock_hertz"
GPU_MEMORY_CLOCK: Final = "factoryctl_gpu_memory_clock_hertz"
GPU_CLOCK_EVENT: Final = "factoryctl_gpu_clock_event_active"  # + reason; 0/1
# Errors
GPU_ECC_ERRORS: Final = "factoryctl_gpu_ecc_errors_total"  # + type=corrected|uncorrected
GPU_REMAPPED_ROWS: Final = "factoryctl_gpu_remapped_rows_total"  # + cause=correctable|uncorrectable
GPU_ROW_REMAP_FAILURE: Final = "factoryctl_gpu_row_remap_failure"  # 0/1
GPU_PCIE_REPLAYS: Final = "factoryctl_gpu_pcie_replays_total"
GPU_XID_ERRORS: Final = "factoryctl_gpu_xid_errors_total"  # + xid
GPU_LAST_XID_TIME: Final = "factoryctl_gpu_last_xid_timestamp_seconds"
# Processes
GPU_PROCESSES: Final = "factoryctl_gpu_processes"
GPU_PROCESS_MEMORY: Final = "factoryctl_gpu_process_memory_bytes"
# One series per process on a GPU (nvidia-smi's process table): value = the device memory
# NVML says the process holds, series absent when NVML cannot say. ``name`` is
# /proc/PID/comm, ``user`` the process owner, ``job_id`` the attributed job ("" if none).
# Cardinality: about one series per GPU process (usually one per GPU under Slurm), churning
# with jobs like GPU_JOB_INFO; ``factoryctl-exporter --no-process-metrics`` turns it off.
GPU_PROCESS_USED_MEMORY: Final = "factoryctl_gpu_process_used_memory_bytes"
GPU_PROCESS_LABELS: Final = ("pid", "name", "user", "job_id")
# Jobs
GPU_JOB_INFO: Final = "factoryctl_gpu_job_info"  # node, gpu, uuid, job_id, user; value 1
# GPUs the job holds on the node, one series per (node, job): "which jobs ran in this hour,
# whose, on how many GPUs" reads ~8x fewer series than the per-GPU attribution.
JOB_GPUS: Final = "factoryctl_job_gpus"  # node, job_id, user
JOB_ENERGY: Final = "factoryctl_job_energy_joules_total"  # node, job_id
JOB_GPU_SECONDS: Final = "factoryctl_job_gpu_seconds_total"  # node, job_id
JOB_ACTIVE_GPU_SECONDS: Final = "factoryctl_job_active_gpu_seconds_total"  # node, job_id
# Rollups (issue 13): the views read these instead of every GPU's series, ~8x fewer series
# at 8 GPUs per node and no aggregation on the query path. factoryctl-exporter writes them
# from its own snapshot; on dcgm-exporter sites the shipped recording rules
# (dashboards/prometheus/rollups.rules.yml, also loadable by vmalert) record the same
# names with the same labels, so the console reads one schema. The per-GPU series stay.
# One series per node; label ``node``.
NODE_GPUS: Final = "factoryctl_node_gpus"  # GPUs the exporter knows (up or lost)
NODE_GPUS_UP: Final = "factoryctl_node_gpus_up"  # GPUs NVML answers for
NODE_GPUS_ALLOCATED: Final = "factoryctl_node_gpus_allocated"  # GPUs attributed to >= 1 job
NODE_GPUS_ACTIVE: Final = "factoryctl_node_gpus_active"  # utilization >= ACTIVE_THRESHOLD
NODE_GPUS_THROTTLED: Final = "factoryctl_node_gpus_throttled"  # rollups.THROTTLE_REASONS
NODE_GPUS_XID_RECENT: Final = "factoryctl_node_gpus_xid_recent"  # an XID in the last hour
NODE_POWER: Final = "factoryctl_node_power_watts"  # sum over up GPUs
NODE_UTILIZATION: Final = "factoryctl_node_utilization_ratio"  # mean over up GPUs
NODE_TEMPERATURE_MAX: Final = "factoryctl_node_temperature_max_celsius"  # hottest GPU
NODE_XID_ERRORS: Final = "factoryctl_node_xid_errors_total"  # sum of the GPUs' XID counters
NODE_ENERGY: Final = "factoryctl_node_energy_joules_total"  # sum of the GPUs' energy counters
# One series per (node, job); labels ``node``, ``job_id``, ``user`` (JOB_GPUS above is the
# GPUs held). Job-wide figures are sums over nodes; the mean utilization is
# sum(UTILIZATION_SUM) / sum(JOB_GPUS).
JOB_GPUS_ACTIVE: Final = "factoryctl_job_gpus_active"  # the job's GPUs here that are active
JOB_UTILIZATION_SUM: Final = "factoryctl_job_utilization_sum_ratio"  # sum over its GPUs here
JOB_POWER: Final = "factoryctl_job_power_watts"  # sum over its GPUs here
# The longest unbroken idle spell among its up GPUs here (0 when none is idle), as
# occupancy.job_occupancy defines a job's idle time; job-wide: max over its nodes.
JOB_IDLE_SECONDS: Final = "factoryctl_job_idle_seconds"
# The least busy of its up GPUs here (job-wide: min over its nodes, exact) and the memory
# its up GPUs use here (job-wide: sum): the jobs view's low-utilization and memory columns
# without a per-GPU join (a job-wide 10th percentile cannot be built from per-node figures).
JOB_UTILIZATION_MIN: Final = "factoryctl_job_utilization_min_ratio"
JOB_MEMORY_USED: Final = "factoryctl_job_memory_used_bytes"
# The exporter itself
EXPORTER_BUILD_INFO: Final = "factoryctl_exporter_build_info"  # version, backend
EXPORTER_COLLECTION_DURATION: Final = "factoryctl_exporter_collection_duration_seconds"
EXPORTER_LAST_SUCCESS: Final = "factoryctl_exporter_last_collection_success_timestamp_seconds"
EXPORTER_SKIPPED: Final = "factoryctl_exporter_collections_skipped_total"
EXPORTER_NVML_ERRORS: Final = "factoryctl_exporter_nvml_errors_total"  # + call
# The scheduler's view, as series. The node exporter does not write these: Slurm knows them,
# so the console's scheduler collector (and the lab) export one small set per node. Rules
# and dashboards use them for "node drained too long", GPUs expected per node and power per
# partition; everything degrades to "no data" (never a false alert) where they are absent.
NODE_STATE_INFO: Final = "factoryctl_node_state_info"  # node, state (a NodeState value), reason; 1
NODE_STATE_SINCE: Final = "factoryctl_node_state_since_timestamp_seconds"  # node; state entered
NODE_PARTITION_INFO: Final = "factoryctl_node_partition_info"  # node, partition; 1 per membership
NODE_GPUS_EXPECTED: Final = "factoryctl_node_gpus_expected"  # node; GPUs configured (Slurm Gres)
# Slurm's allocation as attribution history, for dcgm-exporter sites without a job mapping:
# ``factoryctl scheduler-exporter`` writes one series per (node, GPU index, running job),
# value 1, from the job's GRES detail. Prometheus then remembers who held which GPU when,
# after Slurm has forgotten (a finished job's ``gres_detail`` is empty). The console's dcgm
# schema reads it like GPU_JOB_INFO (``metrics.with_scheduler_attribution``).
SLURM_GPU_JOB_INFO: Final = "factoryctl_slurm_gpu_job_info"  # node, gpu, job_id, user, account
# Running jobs that hold GPUs whose indices Slurm does not give (no GRES detail, a GRES
# without IDX): counted, never invented. Always written, 0 included: its presence is how
# the console knows this site records Slurm's attribution (detection).
SLURM_JOBS_GPU_INDICES_UNKNOWN: Final = "factoryctl_slurm_jobs_gpu_indices_unknown"
