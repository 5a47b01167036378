"""Issue 12 part 4 on real parts: slurmctld of every generation runs the shipped
EpilogSlurmctld, which reads a real Prometheus and writes the job's energy into its
AdminComment; ``scontrol``/``squeue`` show it, foreign comments stay, a second run writes
nothing, and an unreachable Prometheus neither fails nor delays the job.

Cost: one Prometheus for the module (~2 s) and, per Slurm generation, a one-node cluster
with three 3-second jobs and one that ends at once (~10 s each, ~35 s in all).

The simulator plays the GPUs Slurm hands out (same node, same indices, the Slurm job id)
and Prometheus scrapes its exporter every second, as in test_prometheus_slurm.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from factoryctl.energy_record import find_segment, parse_record
from factoryctl.errors import ExitStatus
from factoryctl.lab.debian import RELEASES
from factoryctl.lab.procs import free_port, wait_until
from factoryctl.lab.slurm import SlurmCluster
from factoryctl.lab.stack import Stack, engine_available
from factoryctl.model import Job
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.sim import SimConfig, SimFactory, Workload
from tests.integration.simexpo import SimTargets

pytestmark = pytest.mark.integration

KIT = Path(__file__).resolve().parents[2] / "exporters" / "slurm"
NODE = "gpu01"


@pytest.fixture(scope="module")
def telemetry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimTargets, str]]:
    """One Prometheus for every generation's cluster: the engine is not what varies here
    (job ids differ per generation: ``FirstJobId``)."""
    engines = [f"prometheus@{r}" for r in RELEASES if engine_available(f"prometheus@{r}")]
    if not engines:
        pytest.skip("needs prometheus (on PATH or in a lab release)")
    sim = SimFactory(
        SimConfig(node_names=(NODE,), gpus_per_node=8, jobs=False, start_time=time.time())
    )
    targets = SimTargets(sim).start()
    stack = Stack(tmp_path_factory.mktemp("epilog-stack"), list(targets.addresses.values()),
                  engines[:1], "1s")  # fmt: skip
    try:
        stack.start()
        stack.wait_scraped(timeout=60)
        yield targets, next(iter(stack.running.values())).url
    finally:
        stack.stop()
        targets.stop()


def _hook(path: Path, cluster_dir: Path) -> Path:
    """What slurm.conf names: slurmctld runs it (inside its release's root for 24.11 and
    26.05); it notes the environment Slurm gave it, then runs the shipped wrapper on the
    host, where this checkout's factoryctl lives: ``nsenter`` into this test's mount
    namespace and root (PID 1's may be closed to us in a container). The cluster's clients
    come first on PATH (they re-enter the release's root themselves)."""
    factoryctl = shutil.which("factoryctl", path=str(Path(sys.executable).parent))
    assert factoryctl is not None, "factoryctl beside this Python (pip install -e .)"
    d = cluster_dir
    path.write_text(
        f"""#!/bin/sh
env | sort > "{d}/log/epilog-env-$SLURM_JOB_ID"
PATH=/usr/sbin:/usr/bin:/sbin:/bin
exec nsenter --target {os.getpid()} --mount --root --wd=/ env -i PATH="{d}/bin:{os.environ.get("PATH", "/usr/bin:/bin")}" \\
  HOME="{d}" SLURM_CONF="{d}/etc/slurm.conf" FACTORYCTL_LAB_DIR="{d}" \\
  FACTORYCTL="{factoryctl}" FACTORYCTL_PROMETHEUS_URL="$(cat "{d}/etc/prometheus-url")" \\
  FACTORYCTL_EPILOG_LOG="{d}/log/energy-epilog.log" FACTORYCTL_EPILOG_TIMEOUT=20 \\
  FACTORYCTL_EPILOG_DETACH="${{FACTORYCTL_EPILOG_DETACH:-1}}" SLURM_JOB_ID="$SLURM_JOB_ID" \\
  {KIT / "factoryctl-energy-epilog.sh"}
"""
    )
    path.chmod(0o755)
    return path


def _job(scheduler: SlurmCLI, job_id: str) -> Job:
    (job,) = [j for j in scheduler.jobs() if j.job_id == job_id]
    return job


def _log(cluster: SlurmCluster) -> str:
    path = cluster.dir / "log" / "energy-epilog.log"
    return path.read_text() if path.exists() else ""


def _why(cluster: SlurmCluster) -> str:
    ctld = (cluster.dir / "log" / "slurmctld.log").read_text().splitlines()
    said = [line for line in ctld if "pilog" in line or "error" in line][-5:]
    return f"log: {_log(cluster)!r}; slurmctld: {said}"


def _cluster(release, tmp_path: Path, url: str, **kwargs: object) -> SlurmCluster:
    base = tmp_path / "slurm"
    hook = _hook(tmp_path / "epilog.sh", base)
    # Job ids differ per generation: one Prometheus holds every generation's job counters.
    first_id = 1000 * (RELEASES.index(release.codename) + 1)
    cluster = SlurmCluster(
        nodes=1,
        gpus_per_node=8,
        release=release,
        base_dir=base,
        extra_conf=(f"EpilogSlurmctld={hook}", f"FirstJobId={first_id}"),
        **kwargs,  # type: ignore[arg-type]
    )
    cluster.start()
    (base / "etc" / "prometheus-url").write_text(url)
    return cluster


def _play(targets: SimTargets, scheduler: SlurmCLI, job_ids: list[str]) -> tuple[dict, float]:
    """The simulator plays the GPUs Slurm gave each job for 3 s; the true joules, and how
    long the GPUs were held."""
    sim = targets.sim
    jobs = [_job(scheduler, j) for j in job_ids]
    with targets.lock:
        targets.sync()
        for job in jobs:
            (alloc,) = job.allocations
            sim.assign(job.job_id, job.user, alloc.node, list(alloc.gpu_indices),
                       Workload.TRAINING)  # fmt: skip
        targets.observe(sim)
        began = time.time()
    time.sleep(3)
    with targets.lock:
        targets.sync()
        for job_id in job_ids:
            sim.release(job_id)
        targets.observe(sim)
        return {j: sim.true_energy(j) for j in job_ids}, time.time() - began


def _sacct_comment(cluster: SlurmCluster, job_id: str) -> str | None:
    out = cluster.run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,AdminComment"],
                      check=True).stdout  # fmt: skip
    for line in out.splitlines():
        listed, _, text = line.partition("|")
        if listed == job_id:
            return text
    return None


def test_epilog_writes_energy_into_the_accounting(
    slurm_release, telemetry: tuple[SimTargets, str], tmp_path: Path
) -> None:
    """The issue's path: slurmctld's epilog, slurmdbd, ``sacct -o AdminComment``."""
    if "accounting" not in SlurmCluster.__dataclass_fields__:
        pytest.skip("needs the lab's slurmdbd (SlurmCluster(accounting=True))")
    targets, url = telemetry
    cluster = _cluster(slurm_release, tmp_path, url, accounting=True)
    try:
        scheduler = SlurmCLI(env=cluster.env)
        ids = [cluster.sbatch("-w", NODE, "--gres=gpu:2", script="sleep 300") for _ in range(3)]
        plain, foreign, encoded = ids
        for job_id in ids:
            cluster.wait_job_running(job_id)
        # Comments set while the job runs go to slurmctld, and with the job to slurmdbd.
        cluster.scontrol("update", f"JobId={foreign}", "AdminComment=billing: project X",
                         check=True)  # fmt: skip
        cluster.scontrol("update", f"JobId={encoded}", "AdminComment=JS1:eyJncHVzIjogMn0=",
                         check=True)  # fmt: skip
        truth, held = _play(targets, scheduler, ids)
        cluster.run(["scancel", *ids], check=True)

        def recorded(job_id: str) -> bool:
            return find_segment(_sacct_comment(cluster, job_id) or "") is not None

        try:
            wait_until(lambda: recorded(plain) and recorded(foreign), 30, "the AdminComment",
                       interval=0.3)  # fmt: skip
            wait_until(lambda: "left intact" in _log(cluster), 15, f"job {encoded} in the log")
        except TimeoutError:
            pytest.fail(f"no AdminComment written: {_why(cluster)}")
        comment = _sacct_comment(cluster, plain) or ""
        record = parse_record(comment)
        assert record is not None and record.job_id == plain, comment
        assert record.source == "job-counter"
        error = (record.energy_joules - truth[plain]) / truth[plain]
        assert abs(error) <= 0.005, (record, truth[plain])
        assert record.gpu_seconds is not None and record.active_gpu_seconds is not None
        assert abs(record.gpu_seconds - 2 * held) <= 3.0, (record, held)
        assert 0 < record.active_gpu_seconds <= record.gpu_seconds
        # The site's note stays first; jobstats' encoded record is not touched.
        kept = _sacct_comment(cluster, foreign) or ""
        assert kept.startswith(f"billing: project X; factoryctl:v1 job={foreign} "), kept
        assert _sacct_comment(cluster, encoded) == "JS1:eyJncHVzIjogMn0="
        # Run twice, writes once: the epilog again, in the foreground, exits 0.
        rerun = {**cluster.env, "SLURM_JOB_ID": plain, "FACTORYCTL_EPILOG_DETACH": "0"}
        assert subprocess.run([str(tmp_path / "epilog.sh")], env=rerun, timeout=60).returncode == 0
        assert f"job {plain}: nothing written: already recorded" in _log(cluster)
        assert _sacct_comment(cluster, plain) == comment
        print(f"slurm {slurm_release.codename}: {comment}; the truth {truth[plain]:.1f} J"
              f" ({error:+.3%}), {2 * held:.1f} GPU-s held")  # fmt: skip
    finally:
        cluster.stop()


def test_epilog_without_accounting_or_prometheus_never_holds_the_job(
    telemetry: tuple[SimTargets, str], tmp_path: Path
) -> None:
    """Slurm without slurmdbd: once the job has ended nothing can take its AdminComment,
    and an unreachable Prometheus: both logged, exit 0, the job ends as fast as without.
    On the host's generation only (the refusal is the same on 22.05, 24.11 and 26.05)."""
    from factoryctl.lab.debian import DebianRelease, host_codename

    targets, url = telemetry
    release = DebianRelease(host_codename())
    if release.codename not in RELEASES:
        pytest.skip(f"the host's release {release.codename} is not one the lab runs")
    cluster = _cluster(release, tmp_path, url)
    try:
        scheduler = SlurmCLI(env=cluster.env)
        job_id = cluster.sbatch("-w", NODE, "--gres=gpu:2", script="sleep 300")
        cluster.wait_job_running(job_id)
        _play(targets, scheduler, [job_id])
        cluster.run(["scancel", job_id], check=True)
        said = f"job {job_id}: nothing recorded (exit {int(ExitStatus.SCHEDULER_ERROR)})"
        wait_until(lambda: said in _log(cluster), 30, f"{said!r} ({_log(cluster)})")
        assert "only Slurm's accounting can take its AdminComment" in _log(cluster)
        assert _job(scheduler, job_id).admin_comment == ""
        # Prometheus unreachable: logged, exit 0, and the job ends at once.
        (cluster.dir / "etc" / "prometheus-url").write_text(f"http://127.0.0.1:{free_port()}")
        submitted = time.time()
        down = cluster.sbatch("-w", NODE, script="true")
        wait_until(lambda: _job(scheduler, down).state.finished, 15, f"job {down} to end",
                   interval=0.2)  # fmt: skip
        took = time.time() - submitted
        said = f"job {down}: nothing recorded (exit {int(ExitStatus.TELEMETRY_UNREACHABLE)})"
        wait_until(lambda: said in _log(cluster), 30, f"{said!r} ({_log(cluster)})")
        assert took < 10, took
        given = (cluster.dir / "log" / f"epilog-env-{down}").read_text()
        names = sorted(line.split("=")[0] for line in given.splitlines() if "SLURM" in line)
        print(f"job {down} ended in {took:.1f}s; EpilogSlurmctld's environment: {names}")
    finally:
        cluster.stop()
