"""Metric schemas the reader understands: ours (native) and NVIDIA dcgm-exporter's.

A schema maps each ``model.GPU`` field to a metric and a scale into base units. A field a
schema cannot provide maps to nothing and is reported as unavailable ("n/a"), never 0.
Detection looks for each schema's marker series; ``--schema`` skips it.

dcgm-exporter facts that matter here: utilization is in percent, framebuffer in MiB,
clocks in MHz, the energy counter ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` in millijoules
since the driver loaded (so it resets), and ``DCGM_FI_DEV_XID_ERRORS`` is a gauge holding
the *last* XID code, not a count. The node is in ``Hostname`` (released versions) or
``hostname`` (newer ones); we fall back to ``instance``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.telemetry import schema as native

MIB: Final = 1024.0**2


class SchemaUndetected(FactoryctlError):
    status = ExitStatus.SCHEMA_UNDETECTED


@dataclass(frozen=True, slots=True)
class Field:
    metric: str
    scale: float = 1.0


@dataclass(frozen=True, slots=True)
class MetricSchema:
    name: str
    marker: str  # a per-GPU series every GPU of this schema has
    node_label: str
    uuid_label: str
    model_label: str  # on ``inventory``
    inventory: str  # the series that lists GPUs and their identity
    # model.GPU field -> metric holding it (one series per GPU, plain gauge or counter)
    gauges: Mapping[str, Field]
    gpu_energy: Field | None  # GPU energy counter, for per-job energy from [start, end]
    gpu_power: Field | None
    job_info: str | None = None  # GPU -> job attribution series (native only)
    job_energy: str | None = None  # exact per-(node, job) energy counter (native only)
    job_gpus: str | None = None  # GPUs per (node, job, user) (native only)
    last_xid_gauge: str | None = None  # dcgm: the last XID code as a gauge
    gpu_label: str = "gpu"
    extra_unavailable: frozenset[str] = field(default_factory=frozenset)
    # Who held which GPU when, as recorded in Prometheus: a per-GPU series carrying the
    # job's id in ``attribution_label`` while the job holds the GPU. Native: job_info's
    # ``job_id``; dcgm-exporter with HPC job mapping: every series of an allocated GPU is
    # copied per job with ``hpc_job`` (absent where the site has no job mapping).
    attribution: str | None = None
    attribution_label: str = "job_id"
    # The label naming the node on the attribution series, where it is not ``node_label``:
    # ``factoryctl scheduler-exporter`` writes Slurm's node name in ``node`` beside a
    # dcgm-exporter's ``Hostname``. None: ``node_label``.
    attribution_node_label: str | None = None

    @property
    def attribution_node(self) -> str:
        return self.attribution_node_label or self.node_label

    def unavailable(self) -> frozenset[str]:
        """GPU fields this schema can never provide."""
        provided = set(self.gauges) | {"last_xid"} if self.last_xid_gauge else set(self.gauges)
        return frozenset(GPU_FIELDS - provided) | self.extra_unavailable

    def with_node_label(self, label: str) -> MetricSchema:
        return replace(self, node_label=label)

    def with_scheduler_attribution(self) -> MetricSchema:
        """This schema, with ``factoryctl scheduler-exporter``'s Slurm allocation as the
        attribution history (dcgm-exporter sites without a job mapping). Used instead of
        ``hpc_job`` where both exist: Slurm's allocation is the authority."""
        return replace(
            self,
            attribution=native.SLURM_GPU_JOB_INFO,
            attribution_label="job_id",
            attribution_node_label="node",
        )


# Fields computed from several series; they appear as keys in ``gauges`` only when simple.
GPU_FIELDS: Final = frozenset(
    {
        "utilization",
        "memory_utilization",
        "memory_used_bytes",
        "memory_total_bytes",
        "power_watts",
        "power_limit_watts",
        "energy_joules",
        "temperature_celsius",
        "sm_clock_hz",
        "xid_total",
        "ecc_uncorrected_total",
        "last_xid",
        "throttle_reasons",
        "idle_seconds",
    }
)

NATIVE: Final = MetricSchema(
    name="native",
    marker=native.GPU_UP,
    node_label="node",
    uuid_label="uuid",
    model_label="model",
    inventory=native.GPU_INFO,
    gauges={
        "utilization": Field(native.GPU_UTILIZATION),
        "memory_utilization": Field(native.GPU_MEMORY_UTILIZATION),
        "memory_used_bytes": Field(native.GPU_MEMORY_USED),
        "memory_total_bytes": Field(native.GPU_MEMORY_TOTAL),
        "power_watts": Field(native.GPU_POWER),
        "power_limit_watts": Field(native.GPU_POWER_LIMIT),
        "energy_joules": Field(native.GPU_ENERGY),
        "temperature_celsius": Field(native.GPU_TEMPERATURE),
        "sm_clock_hz": Field(native.GPU_SM_CLOCK),
        "idle_seconds": Field(native.GPU_IDLE_SECONDS),
        # Multi-series fields, aggregated on the server (see source queries):
        "xid_total": Field(native.GPU_XID_ERRORS),
        "ecc_uncorrected_total": Field(native.GPU_ECC_ERRORS),
        "throttle_reasons": Field(native.GPU_CLOCK_EVENT),
    },
    gpu_energy=Field(native.GPU_ENERGY),
    gpu_power=Field(native.GPU_POWER),
    job_info=native.GPU_JOB_INFO,
    job_energy=native.JOB_ENERGY,
    job_gpus=native.JOB_GPUS,
    attribution=native.GPU_JOB_INFO,
    # The native exporter counts XIDs per code; which came last is not a counter's business.
    extra_unavailable=frozenset({"last_xid"}),
)

DCGM_ENERGY: Final = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
DCGM_POWER: Final = "DCGM_FI_DEV_POWER_USAGE"
DCGM_UTIL: Final = "DCGM_FI_DEV_GPU_UTIL"
DCGM_FB_USED: Final = "DCGM_FI_DEV_FB_USED"
DCGM_FB_FREE: Final = "DCGM_FI_DEV_FB_FREE"
DCGM_XID: Final = "DCGM_FI_DEV_XID_ERRORS"

DCGM: Final = MetricSchema(
    name="dcgm",
    marker=DCGM_UTIL,
    node_label="Hostname",
    uuid_label="UUID",
    model_label="modelName",
    inventory=DCGM_UTIL,
    gauges={
        "utilization": Field(DCGM_UTIL, 0.01),
        "memory_utilization": Field("DCGM_FI_DEV_MEM_COPY_UTIL", 0.01),
        "memory_used_bytes": Field(DCGM_FB_USED, MIB),
        # total = used + free (+ reserved on newer drivers): assembled in the source
        "memory_total_bytes": Field(DCGM_FB_FREE, MIB),
        "power_watts": Field(DCGM_POWER),
        "power_limit_watts": Field("DCGM_FI_DEV_POWER_MGMT_LIMIT"),
        "energy_joules": Field(DCGM_ENERGY, 0.001),
        "temperature_celsius": Field("DCGM_FI_DEV_GPU_TEMP"),
        "sm_clock_hz": Field("DCGM_FI_DEV_SM_CLOCK", 1e6),
    },
    gpu_energy=Field(DCGM_ENERGY, 0.001),
    gpu_power=Field(DCGM_POWER),
    last_xid_gauge=DCGM_XID,
    attribution=DCGM_ENERGY,
    attribution_label="hpc_job",
)

SCHEMAS: Final = {s.name: s for s in (NATIVE, DCGM)}
SCHEMA_CHOICES: Final = ("auto", *SCHEMAS)
NODE_LABEL_CANDIDATES: Final = ("Hostname", "hostname", "node", "instance")


def recorded_query(schema: MetricSchema, window: str) -> str:
    """Is attribution being recorded (any series within ``window``)? For a scheduler-
    exporter its always-present gauge, summed: with no job running the allocation is
    still known (nothing held), and the sum is the jobs whose GPUs Slurm does not name."""
    if schema.attribution == native.SLURM_GPU_JOB_INFO:
        return f"sum(last_over_time({native.SLURM_JOBS_GPU_INDICES_UNKNOWN}[{window}]))"
    mapped = f'{schema.attribution}{{{schema.attribution_label}!=""}}'
    return f"count(last_over_time({mapped}[{window}]))"


def indices_unknown_warning(jobs: float) -> str:
    return (
        f"{jobs:.0f} running jobs hold GPUs whose indices Slurm does not give: those GPUs"
        f" are not attributed ({native.SLURM_JOBS_GPU_INDICES_UNKNOWN})"
    )


def scheduler_attribution_query(window: str) -> str:
    """Does this Prometheus record Slurm's allocation (a scheduler-exporter with --jobs
    scraped within ``window``)? Its always-present gauge says, with no job running too."""
    return f"count(last_over_time({native.SLURM_JOBS_GPU_INDICES_UNKNOWN}[{window}]))"


def detection_query() -> str:
    names = "|".join(s.marker for s in SCHEMAS.values())
    return f'count by (__name__) ({{__name__=~"{names}"}})'


def choose(counts: Mapping[str, float], forced: str = "auto") -> MetricSchema:
    """Pick the schema from ``count by (__name__)`` of the markers (native wins a tie)."""
    if forced != "auto":
        if forced not in SCHEMAS:
            raise SchemaUndetected(
                f"unknown metric schema {forced!r}; choose one of {', '.join(SCHEMA_CHOICES)}"
            )
        return SCHEMAS[forced]
    for schema in SCHEMAS.values():
        if counts.get(schema.marker, 0) > 0:
            return schema
    markers = ", ".join(s.marker for s in SCHEMAS.values())
    raise SchemaUndetected(
        f"no GPU metrics found (looked for {markers}): is factoryctl-exporter or "
        "dcgm-exporter scraped by this Prometheus? Use --schema to force one"
    )


def node_label_of(labels: Mapping[str, str]) -> str:
    for label in NODE_LABEL_CANDIDATES:
        if labels.get(label):
            return label
    return "instance"


def node_name(labels: Mapping[str, str], label: str) -> str:
    value = labels.get(label, "")
    if label == "instance":
        # host:port -> host; a node should not be named after its exporter's port.
        host, _, port = value.rpartition(":")
        return host if port.isdigit() and host else value
    return value


def no_gpus_warning(schema: MetricSchema) -> str:
    """Said when a (forced) schema matches nothing: an empty table alone would mislead."""
    return (
        f"no GPU series of the {schema.name} schema ({schema.inventory}) in Prometheus;"
        " wrong --schema, or no exporter scraped"
    )
