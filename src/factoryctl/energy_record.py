"""The job's GPU energy as factoryctl records it in Slurm's ``AdminComment``.

At job end the slurmctld epilog (``exporters/slurm/factoryctl-energy-epilog.sh``) writes
one segment, e.g.::

    factoryctl:v1 job=4242 energy_j=123456.7 gpu_s=3600.0 active_gpu_s=3400.0 src=job-counter

so ``sacct -o JobID,AdminComment`` carries the figure for as long as the site keeps
accounting, long after Prometheus' retention has dropped the samples.

The segment is ours; the rest of the comment is not. A site (or another tool) may keep its
own text there: we append our segment after it with ``; `` and later replace only our own
segment. A comment that is one encoded record (Princeton jobstats' ``JS1:<base64>``) would
be broken by anything appended, so it is left as it is. Pure and stdlib-only: the epilog
command, the Slurm readers and the reports share it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

PREFIX = "factoryctl:"
VERSION = 1
SEPARATOR = "; "
# Our own ceiling for the whole comment (Slurm sets none that matters here): a foreign
# comment that long is someone's data, not a note, and is left alone.
MAX_COMMENT = 1024
# Foreign comments that are a single encoded value: appending would corrupt them.
ENCODED_PREFIXES = ("JS1:",)
# Where the figure came from: the exporter's exact per-job counters, or each allocated
# GPU's energy counter over the job's [start, end] (dcgm-exporter sites).
SOURCES = ("job-counter", "gpu-counter")

_SEGMENT = re.compile(r"factoryctl:v(\d+)\b([^;]*)")
_JOB_ID = re.compile(r"^[0-9]+([_+][0-9]+)?$")


class RecordError(ValueError):
    """A factoryctl segment we cannot read (a newer version, a bad value)."""


@dataclass(frozen=True, slots=True)
class EnergyRecord:
    job_id: str
    energy_joules: float
    gpu_seconds: float | None = None
    active_gpu_seconds: float | None = None  # None where the source cannot say (dcgm)
    source: str = "job-counter"

    def segment(self) -> str:
        """The compact, versioned text of this record (no ``;``, no newline)."""
        if not _JOB_ID.match(self.job_id):
            raise RecordError(f"invalid job id {self.job_id!r}")
        if self.source not in SOURCES:
            raise RecordError(f"unknown energy source {self.source!r}")
        parts = [
            f"{PREFIX}v{VERSION}",
            f"job={self.job_id}",
            f"energy_j={_num(self.energy_joules)}",
        ]
        if self.gpu_seconds is not None:
            parts.append(f"gpu_s={_num(self.gpu_seconds)}")
        if self.active_gpu_seconds is not None:
            parts.append(f"active_gpu_s={_num(self.active_gpu_seconds)}")
        parts.append(f"src={self.source}")
        return " ".join(parts)


def _num(value: float) -> str:
    if not math.isfinite(value) or value < 0:
        raise RecordError(f"not a recordable quantity: {value!r}")
    return f"{value:.1f}"


def find_segment(comment: str) -> str | None:
    """Our segment of ``comment``, as written, or None."""
    m = _SEGMENT.search(comment or "")
    return m.group(0).strip() if m else None


def parse_record(comment: str) -> EnergyRecord | None:
    """The record in ``comment`` (None: the comment has no factoryctl segment). Raises
    ``RecordError`` for a segment that is ours but not readable: a figure nobody can
    trust is said so, never read as zero."""
    m = _SEGMENT.search(comment or "")
    if m is None:
        return None
    version = int(m.group(1))
    if version != VERSION:
        raise RecordError(f"factoryctl record version v{version} is not understood (v{VERSION})")
    fields: dict[str, str] = {}
    for token in m.group(2).split():
        key, eq, value = token.partition("=")
        if not eq or not key:
            raise RecordError(f"malformed token {token!r} in factoryctl record")
        fields[key] = value
    try:
        job_id, energy = fields["job"], fields["energy_j"]
    except KeyError as missing:
        raise RecordError(f"factoryctl record lacks {missing.args[0]}=") from None

    def number(key: str) -> float | None:
        if key not in fields:
            return None
        try:
            value = float(fields[key])
        except ValueError:
            raise RecordError(f"factoryctl record: {key}={fields[key]!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise RecordError(f"factoryctl record: {key}={fields[key]!r} is not a quantity")
        return value

    joules = number("energy_j")
    assert joules is not None and energy
    source = fields.get("src", "")
    if source not in SOURCES:
        raise RecordError(f"factoryctl record: unknown src={source!r}")
    return EnergyRecord(job_id, joules, number("gpu_s"), number("active_gpu_s"), source)


@dataclass(frozen=True, slots=True)
class Merge:
    """What to write: ``comment`` (None: write nothing) and why, for the log."""

    comment: str | None
    reason: str


def merge(existing: str, record: EnergyRecord, limit: int = MAX_COMMENT) -> Merge:
    """The AdminComment with ``record`` in it, never losing anyone else's text.

    Idempotent: a comment that already holds our segment for this job is not rewritten
    (an epilog run twice writes once)."""
    segment = record.segment()
    text = existing or ""
    m = _SEGMENT.search(text)
    if m is not None:
        ours = m.group(0).strip()
        try:
            old = parse_record(ours)
        except RecordError:
            old = None
        if old is not None and old.job_id == record.job_id:
            return Merge(None, f"already recorded for job {record.job_id}: {ours}")
        # Ours, but stale or unreadable (a requeued job's copy, an older format): replace
        # exactly that span, keep what surrounds it.
        new = (text[: m.start()] + segment + text[m.end() :]).strip()
    elif not text.strip():
        new = segment
    elif text.lstrip().startswith(ENCODED_PREFIXES):
        return Merge(None, "the AdminComment is another tool's encoded record; left intact")
    else:
        new = text.rstrip().rstrip(";").rstrip() + SEPARATOR + segment
    if len(new) > limit:
        return Merge(
            None,
            f"no room: the AdminComment would be {len(new)} characters (limit {limit});"
            " left intact",
        )
    return Merge(new, "recorded" if m is None else "replaced our older segment")
