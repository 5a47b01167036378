"""slurmrestd's ``/slurmdb/`` jobs on every Slurm generation: the REST path's finished jobs
are sacct's (``SlurmCLI.jobs_between``), and slurmdbd down is a one-line error.

Reuses the session's ``slurm_accounting_cluster`` (slurmdbd and MariaDB already up for
the accounting tests; ~10 s of its own start otherwise) and adds its slurmrestd (JWT, with
the slurmdbd plugin). Cost, run after test_accounting_slurm (which leaves slurmdbd stopped:
restarted here, and again after this test stops it): 7.4 s on 22.05, 1.6 s or less each
on 24.11 and 26.05, ~10.5 s in all (2 cores, 1-min load average 0.6). Run alone: 5.1,
2.8 and 3.0 s. Most of it is the jobs' run and slurmdbd's records (22.05 writes them a
second or two after the jobs end), slurmrestd's start and slurmdbd's restarts.
"""

from __future__ import annotations

import time

import pytest

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.lab.procs import wait_until
from factoryctl.lab.slurm import SlurmCluster
from factoryctl.model import Job, JobState
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.scheduler.slurmrestd import open_slurmrestd

pytestmark = pytest.mark.integration


def _dbd_running(cluster: SlurmCluster) -> bool:
    return any(p.name == "slurmdbd" and p.alive() for p in cluster.procs)


def _key(jobs: list[Job]) -> dict[str, tuple[str, str, JobState, int, tuple[str, ...]]]:
    return {j.job_id: (j.account, j.user, j.state, j.gpu_count, j.nodes) for j in jobs}


def test_rest_finished_jobs_are_saccts(slurm_accounting_cluster: SlurmCluster) -> None:
    cluster = slurm_accounting_cluster
    if not cluster.jwt:
        pytest.skip(f"{cluster.release.codename} has no slurm-wlm-jwt-plugin")
    assert cluster.dbd is not None
    if not _dbd_running(cluster):  # test_accounting_slurm ends by stopping it
        cluster.dbd.start_slurmdbd(timeout=30)
    url = cluster.start_slurmrestd_jwt()
    rest = open_slurmrestd(
        {"slurmrestd_url": url}, {"SLURM_JWT": cluster.jwt_token(), "USER": "root"}
    )
    cli = SlurmCLI(env=cluster.env)
    first = time.time()
    array = cluster.sbatch("--array=0-1", "--gres=gpu:1", "-J", "rest-sweep", script="true")
    pair = cluster.sbatch("--gres=gpu:2", "-A", "proj-b", "-J", "rest-b", script="true")
    held = cluster.sbatch("--gres=gpu:1", "-A", "proj-b", "-J", "rest-gone", script="sleep 60")
    cluster.wait_job_running(held)
    cluster.run(["scancel", held], check=True)

    def recorded() -> bool:  # every job (both tasks) ended, in slurmdbd
        jobs = [j for j in cli.jobs_between(first - 1, time.time()) if j.name.startswith("rest")]
        return len(jobs) == 4 and all(j.state.finished for j in jobs)

    wait_until(recorded, 20, "slurmdbd to record the jobs' ends", interval=0.25)
    until = time.time()
    by_cli = _key(cli.jobs_between(first - 1, until))
    by_rest = _key(rest.jobs_between(first - 1, until))
    assert by_rest == by_cli
    tasks = [k for k, v in by_rest.items() if v[3] == 1 and v[2] is JobState.COMPLETED]
    assert array in tasks and len(tasks) == 2  # each array task a job of its own
    assert by_rest[pair][:4] == ("proj-b", "root", JobState.COMPLETED, 2)
    assert by_rest[held][:4] == ("proj-b", "root", JobState.CANCELLED, 1)
    assert rest.calls[-1].startswith(f"GET /slurmdb/{rest.version}/jobs")

    dbd = next(p for p in cluster.procs if p.name == "slurmdbd" and p.alive())
    dbd.stop()
    try:
        with pytest.raises(FactoryctlError) as down:
            rest.jobs_between(first - 1, time.time())
        assert down.value.status is ExitStatus.SCHEDULER_UNREACHABLE, down.value.message
        assert "\n" not in down.value.message
        assert "/slurmdb/" in down.value.message
    finally:
        cluster.dbd.start_slurmdbd(timeout=30)  # for the tests of the fixture after this one
