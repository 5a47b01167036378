"""Take a snapshot for one view: sources that can fetch less for it are told which.

Each read here runs with the cyclic GC paused (``gc_paused``). A read at 100,000 GPUs
builds some 100,000 containers (answers' dicts, jobs, allocations, rows), all acyclic and
all still alive when it ends: the collector's passes during the build free nothing and
scanned them as they aged, ~150 of the ~650 ms of our CPU in ``jobs -o json`` (the
engine's answers replayed, GC on against off). The console pauses it likewise
(``tui.gcpolicy``); a CLI read is over before any cyclic garbage would matter.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from factoryctl import views
from factoryctl.cli.env import Environment
from factoryctl.model import FactorySnapshot, Job
from factoryctl.telemetry.results import gc_paused

# Job fields a source may be unable to give (null in the rows, named in ``unavailable``).
IDENTITY = frozenset({"user", "account", "partition", "name"})


def snapshot(env: Environment, view: str) -> FactorySnapshot:
    with gc_paused():
        return _snapshot(env, view)


def _snapshot(env: Environment, view: str) -> FactorySnapshot:
    source = env.source()
    # Optional capability: the Prometheus source skips metrics a view does not show.
    take = getattr(source, "snapshot_for_view", None)
    if callable(take):
        snap = take(view)
        assert isinstance(snap, FactorySnapshot)
        return snap
    return source.snapshot()


def node_rows(env: Environment) -> tuple[FactorySnapshot, list[dict[str, Any]]]:
    """The nodes view's snapshot and rows; aggregated by the engine where it can be."""
    with gc_paused():
        return _node_rows(env)


def _node_rows(env: Environment) -> tuple[FactorySnapshot, list[dict[str, Any]]]:
    source = env.source()
    aggregate = getattr(source, "node_rows_for_view", None)
    if callable(aggregate):
        snap, rows = aggregate()
        return snap, list(rows)
    snap = _snapshot(env, "nodes")
    return snap, views.node_rows(snap)


def job_rows(
    env: Environment, include_finished: bool, node_names: bool = True
) -> tuple[FactorySnapshot, list[dict[str, Any]]]:
    """The jobs view's snapshot and rows; aggregated by the engine where it can be.
    ``node_names``: whether the caller needs every node's name (``--node``) in the
    snapshot; the engine's aggregate then reads the node inventory too."""
    source = env.source()
    aggregate = getattr(source, "job_rows_for_view", None)
    if callable(aggregate):
        # Telemetry-only jobs are all running: ``include_finished`` changes nothing there.
        done = aggregate(node_names=node_names)
        if done is not None:
            snap, rows = done
            return snap, list(rows)
    snap = _snapshot(env, "jobs")
    recorded = getattr(source, "with_recorded_jobs", None)
    if include_finished and callable(recorded):
        # No scheduler: finished jobs from the attribution history (None where a scheduler
        # or no such history is there).
        with_history = recorded(snap)
        if with_history is not None:
            # What no source here knows (partition without Slurm) is null, not "".
            unknown = with_history.unavailable & IDENTITY
            rows = views.job_rows(with_history, include_finished=True)
            return with_history, [{**r, **dict.fromkeys(unknown)} for r in rows]
    return snap, views.job_rows(snap, include_finished=include_finished)


def accounted_job(
    env: Environment, snap: FactorySnapshot, job_id: str
) -> tuple[Job, FactorySnapshot] | None:
    """A job the scheduler's live list no longer holds, from its accounting database
    (Slurm purges a finished job from squeue MinJobAge after its end, 5 min by default;
    sacct keeps it), with its energy measured as any finished job's where the source can,
    and the snapshot with it. None: the source reads no scheduler, or the scheduler's
    accounting holds no such job."""
    source = env.source()
    if env.demo or getattr(source, "scheduler", None) is None:
        return None
    from factoryctl.scheduler.checked import checked

    job = checked(env.scheduler()).accounted_job(job_id)  # already checked: the same one
    if job is None:
        return None
    measure = getattr(source, "job_energy", None)
    notes = dict(snap.job_notes)
    if callable(measure) and job.start_time is not None:
        energy = measure([job], snap.time)[job_id]
        if energy.joules is not None:
            job = replace(job, energy_joules=energy.joules, energy_source=energy.method)
        if energy.note:
            notes[job_id] = energy.note
    return job, replace(snap, jobs=(*snap.jobs, job), job_notes=notes)
