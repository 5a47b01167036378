"""Slurm's accounting (slurmdbd + MariaDB) on every Slurm generation: ``sacct --json``
mapped to jobs, and ``factoryctl energy --by account`` over finished jobs with a real
Prometheus holding their energy; slurmdbd down is a one-line error or a degraded report.

Slurm runs the jobs in two accounts and decides their GPUs; the simulator plays those
GPUs (same node names and indices) while the release's own Prometheus scrapes them, as in
``test_prometheus_slurm``. Cost: one test per generation, 78 s for all three (2 cores,
1-min load average 3.4): 4-7 s each the accounting cluster's start (slurmdbd creates its
schema), ~5 s Prometheus', 6 s the jobs' run, the rest Slurm's and the scrapes' pace.
Plus ~3.5 s for the half-started cluster's clean-up (host release only): ~82 s in all.
It stops the cluster's slurmdbd near its end and starts it again (the fixture is shared).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from factoryctl.cli.env import Environment
from factoryctl.cli.main import main
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.lab.debian import DebianRelease, host_codename
from factoryctl.lab.procs import wait_until
from factoryctl.lab.slurm import SlurmCluster
from factoryctl.lab.slurmdbd import AccountingDaemons
from factoryctl.lab.stack import Stack, engine_available
from factoryctl.model import JobState
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.telemetry.client import PromClient, PromConfig
from tests.integration.conftest import needs_slurm
from tests.integration.simexpo import SimTargets

pytestmark = pytest.mark.integration
TOLERANCE = 0.005  # the exporter's exact per-job counters


@pytest.fixture
def telemetry(
    slurm_accounting_cluster: SlurmCluster, tmp_path: Path
) -> Iterator[tuple[SimTargets, str]]:
    cluster = slurm_accounting_cluster
    engine = f"prometheus@{cluster.release.codename}"
    if not engine_available(engine):
        pytest.skip(f"{engine} is not available here")
    sim = SimFactory(
        SimConfig(node_names=tuple(cluster.live_nodes), gpus_per_node=4, jobs=False,
                  start_time=time.time())
    )  # fmt: skip
    targets = SimTargets(sim).start()
    stack = Stack(tmp_path / "stack", list(targets.addresses.values()), [engine], "1s")
    try:
        stack.start()
        stack.wait_scraped(timeout=60)
        yield targets, stack.running[engine].url
    finally:
        stack.stop()
        targets.stop()


def _energy(cluster: SlurmCluster, url: str, home: Path, *argv: str) -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()
    environ = {**cluster.env, "HOME": str(home), "FACTORYCTL_SCHEDULER_TYPE": "slurm"}
    environ.pop("XDG_CONFIG_HOME", None)
    env = Environment(stdout=out, stderr=err, stdin_isatty=False, environ=environ)
    status = main(["--prometheus", url, "energy", *argv, "-o", "json"], env)
    return status, json.loads(out.getvalue()) if status == 0 else None, err.getvalue()


def _gpu_joules(targets: SimTargets, node: str, gpus: list[int]) -> float:
    sim = targets.sim
    i = sim.node_names.index(node)
    return sum(sim.energy[i * sim.gpn + k] for k in gpus)


def test_accounting_jobs_and_energy_by_account(
    slurm_accounting_cluster: SlurmCluster, telemetry: tuple[SimTargets, str], tmp_path: Path
) -> None:
    cluster, (targets, url) = slurm_accounting_cluster, telemetry
    sim, scheduler = targets.sim, SlurmCLI(env=cluster.env)
    first = time.time()
    # Before the energy window: an array (each task a job) and a cancelled job.
    array = cluster.sbatch("--array=0-2", "--gres=gpu:1", "-J", "sweep", script="true")
    cancelled = cluster.sbatch("--gres=gpu:1", "-A", "proj-b", "-J", "gone", script="sleep 60")
    cluster.wait_job_running(cancelled)
    cluster.run(["scancel", cancelled], check=True)
    wait_until(lambda: not cluster.run(["squeue", "-h", "-t", "R,PD,CG"]).stdout.strip(),
               20, "the array and the cancelled job to end", interval=0.2)  # fmt: skip
    time.sleep(1.1)
    t0 = time.time()
    # The energy window's jobs, in both accounts; Slurm picks the GPUs, the simulator plays them.
    a = cluster.sbatch("-w", "gpu01", "--gres=gpu:2", "-A", "proj-a", "-J", "a", script="sleep 300")
    b = cluster.sbatch("-w", "gpu02", "--gres=gpu:2", "-A", "proj-b", "-J", "b", script="sleep 300")
    c = cluster.sbatch("-w", "gpu01", "--gres=gpu:1", "-A", "proj-b", "-J", "c", script="sleep 300")
    for job_id in (a, b, c):
        cluster.wait_job_running(job_id)
    held = {j.job_id: j for j in scheduler.jobs() if j.job_id in (a, b, c)}
    with targets.lock:
        targets.sync()
        for job_id, job in held.items():
            (alloc,) = job.allocations
            sim.assign(job_id, job.user, alloc.node, list(alloc.gpu_indices), Workload.TRAINING)
        targets.observe(sim)
    time.sleep(3)
    with targets.lock:  # the middle of job a: a window from here cuts it
        targets.sync()
        a_gpus = list(held[a].allocations[0].gpu_indices)
        mid, a_at_mid = time.time(), _gpu_joules(targets, "gpu01", a_gpus)
    time.sleep(3)
    for job_id in (a, b, c):
        cluster.run(["scancel", job_id], check=True)
    with targets.lock:
        targets.sync()
        a_after_mid = _gpu_joules(targets, "gpu01", a_gpus) - a_at_mid
        for job_id in (a, b, c):
            sim.release(job_id, JobState.CANCELLED)
        targets.observe(sim)
        truth = {j: sim.true_energy(j) for j in (a, b, c)}
    end = time.time()
    client = PromClient(PromConfig(url))
    wait_until(
        lambda: (client.query("max(timestamp(factoryctl_job_energy_joules_total))", time.time())
                 .scalar() or 0) > end + 1.5,
        30, "Prometheus to scrape past the jobs' end", interval=0.25,
    )  # fmt: skip
    wait_until(lambda: not cluster.run(["squeue", "-h", "-t", "R,CG"]).stdout.strip(),
               20, "the jobs to end", interval=0.2)  # fmt: skip

    # sacct: every job of both windows, once, with Slurm's own fields.
    accounted = {j.job_id: j for j in scheduler.jobs_between(first - 1, time.time())}
    tasks = [j for j in accounted.values() if j.name == "sweep"]
    assert len(tasks) == 3 and array in {j.job_id for j in tasks}
    assert all(j.gpu_count == 1 and j.state is JobState.COMPLETED for j in tasks)
    assert accounted[cancelled].state is JobState.CANCELLED
    assert accounted[cancelled].account == "proj-b"
    for job_id, account, node, gpus in ((a, "proj-a", "gpu01", 2), (b, "proj-b", "gpu02", 2),
                                        (c, "proj-b", "gpu01", 1)):  # fmt: skip
        job = accounted[job_id]
        assert (job.account, job.user, job.partition) == (account, "root", "gpu")
        assert job.nodes == (node,) and job.gpu_count == gpus
        assert job.start_time is not None and job.end_time is not None
        assert job.state is JobState.CANCELLED

    # factoryctl energy --by account over the finished jobs: proj-a is a, proj-b is b + c.
    since = f"{time.time() - t0:.0f}s"
    status, doc, err = _energy(cluster, url, tmp_path, "--by", "account", "--since", since)
    assert status == 0, err
    rows = {r["account"]: r for r in doc["items"]}
    assert set(rows) == {"proj-a", "proj-b"}, doc
    assert rows["proj-a"]["jobs"] == 1 and rows["proj-b"]["jobs"] == 2
    for account, want in (("proj-a", truth[a]), ("proj-b", truth[b] + truth[c])):
        got = rows[account]["energy_joules"]
        assert got is not None and abs(got - want) / want <= TOLERANCE, (account, got, want)
    assert doc["warnings"] == [], doc["warnings"]

    # A window that starts in the middle of job a counts a's energy from there on only.
    cut = f"{time.time() - mid:.3f}s"
    status, doc, err = _energy(cluster, url, tmp_path, "--by", "job", "--since", cut)
    assert status == 0, err
    row = next(r for r in doc["items"] if r["job_id"] == a)
    # The counter's value at the window's start is its last sample before it: up to one
    # scrape interval (1 s) of the job's 2 GPUs at their power limit off.
    slack = 2 * sim.config.spec.power_limit_watts * 1.0
    assert abs(row["energy_joules"] - a_after_mid) <= slack, (row, a_after_mid)
    assert row["energy_joules"] < truth[a] - slack

    # slurmdbd down: sacct is a one-line "unreachable" error; the report degrades, saying so.
    dbd = next(p for p in cluster.procs if p.name == "slurmdbd" and p.alive())
    dbd.stop()
    try:
        with pytest.raises(FactoryctlError) as down:
            scheduler.jobs_between(first, time.time())
        assert down.value.status is ExitStatus.SCHEDULER_UNREACHABLE
        assert "\n" not in down.value.message
        status, doc, err = _energy(cluster, url, tmp_path, "--by", "account", "--since", since)
        assert status == 0, err
        assert any(w.startswith("accounting unavailable") for w in doc["warnings"]), doc
        assert "accounting unavailable" in err and "Traceback" not in err
    finally:
        # The fixture is the session's: the epilog and slurmrestd tests need slurmdbd up.
        assert cluster.dbd is not None
        cluster.dbd.start_slurmdbd(timeout=30)


@needs_slurm
def test_a_half_started_accounting_cluster_leaves_nothing_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """slurmdbd failing to start (here: made to) after MariaDB is up: start() raises and
    MariaDB, munged and everything else it started are stopped by PID. Host release only
    (the stop path is the same in a chroot); about 2 s."""
    if not DebianRelease(host_codename()).has("mariadbd", "mariadb-install-db", "slurmdbd"):
        pytest.skip("needs mariadb-server and slurmdbd on the host (./dev test installs them)")
    started: list[int] = []

    def fail(self: AccountingDaemons, timeout: float) -> None:
        started.extend(p.pid for p in self.procs if p.pid is not None)
        raise RuntimeError("slurmdbd exited (made to fail)")

    monkeypatch.setattr(AccountingDaemons, "start_slurmdbd", fail)
    cluster = SlurmCluster(nodes=1, gpus_per_node=1, cpus_per_node=2, accounting=True)
    with pytest.raises(RuntimeError, match="made to fail"):
        cluster.start()
    assert len(started) == 2  # munged and mariadbd were running
    for pid in started:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        ), pid
    assert not cluster.dir.exists()
