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


def test_epilog_writes_energy_into_admin_comment(
    slurm_release, telemetry: tuple[SimTargets, str], tmp_path: Path
) -> None:
    targets, url = telemetry
    sim = targets.sim
    base = tmp_path / "slurm"
    hook = _hook(tmp_path / "epilog.sh", base)
    first_id = 1000 * (RELEASES.index(slurm_release.codename) + 1)
    cluster = SlurmCluster(
        nodes=1,
        gpus_per_node=8,
        release=slurm_release,
        base_dir=base,
        extra_conf=(f"EpilogSlurmctld={hook}", f"FirstJobId={first_id}"),
    )
    try:
        cluster.start()
        (base / "etc" / "prometheus-url").write_text(url)
        scheduler = SlurmCLI(env=cluster.env)
        plain, foreign, encoded = (
            cluster.sbatch("-w", NODE, "--gres=gpu:2", script="sleep 300") for _ in range(3)
        )
        for job_id in (plain, foreign, encoded):
            cluster.wait_job_running(job_id)
        cluster.scontrol("update", f"JobId={foreign}", "AdminComment=billing: project X",
                         check=True)  # fmt: skip
        cluster.scontrol("update", f"JobId={encoded}", "AdminComment=JS1:eyJncHVzIjogMn0=",
                         check=True)  # fmt: skip
        jobs = {j: _job(scheduler, j) for j in (plain, foreign, encoded)}
        with targets.lock:  # the simulator plays the GPUs Slurm gave each job
            targets.sync()
            for job in jobs.values():
                (alloc,) = job.allocations
                sim.assign(job.job_id, job.user, alloc.node, list(alloc.gpu_indices),
                           Workload.TRAINING)  # fmt: skip
            targets.observe(sim)
            began = time.time()
        time.sleep(3)
        with targets.lock:
            targets.sync()
            for job_id in jobs:
                sim.release(job_id)
            targets.observe(sim)
            truth = {j: sim.true_energy(j) for j in jobs}
            held = time.time() - began
        cluster.run(["scancel", plain, foreign, encoded], check=True)

        def recorded(job_id: str) -> bool:
            return find_segment(_job(scheduler, job_id).admin_comment) is not None

        try:
            wait_until(lambda: recorded(plain) and recorded(foreign), 30, "the AdminComment",
                       interval=0.3)  # fmt: skip
        except TimeoutError:
            pytest.fail(f"no AdminComment written: {_why(cluster)}")
        wait_until(lambda: "left intact" in _log(cluster), 15, f"job {encoded} in the log")
        record = parse_record(_job(scheduler, plain).admin_comment)
        assert record is not None and record.job_id == plain
        assert record.source == "job-counter"
        error = (record.energy_joules - truth[plain]) / truth[plain]
        assert abs(error) <= 0.005, (record, truth[plain])
        assert record.gpu_seconds is not None and record.active_gpu_seconds is not None
        assert abs(record.gpu_seconds - 2 * held) <= 2 * 1.5, (record, held)
        assert 0 < record.active_gpu_seconds <= record.gpu_seconds
        # Slurm's own text view shows it too.
        shown = cluster.scontrol("show", "job", plain, check=True).stdout
        assert f"AdminComment={record.segment()}" in shown
        # The site's note stays first; jobstats' encoded record is not touched.
        kept = _job(scheduler, foreign).admin_comment
        assert kept.startswith("billing: project X; factoryctl:v1 job=" + foreign), kept
        assert _job(scheduler, encoded).admin_comment == "JS1:eyJncHVzIjogMn0="
        # Run twice, writes once: the wrapper again, in the foreground, exits 0.
        before = _job(scheduler, plain).admin_comment
        env_again = {**cluster.env, "SLURM_JOB_ID": plain, "FACTORYCTL_EPILOG_DETACH": "0"}
        rc = subprocess.run([str(tmp_path / "epilog.sh")], env=env_again, timeout=60).returncode
        assert rc == 0
        assert f"job {plain}: nothing written: already recorded" in _log(cluster)
        assert _job(scheduler, plain).admin_comment == before
        # Prometheus unreachable: logged, exit 0, the job completes as fast as without.
        (base / "etc" / "prometheus-url").write_text(f"http://127.0.0.1:{free_port()}")
        submitted = time.time()
        down = cluster.sbatch("-w", NODE, script="true")
        wait_until(lambda: _job(scheduler, down).state.finished, 15, f"job {down} to end",
                   interval=0.2)  # fmt: skip
        took = time.time() - submitted
        wait_until(lambda: f"job {down}: nothing recorded (exit 9)" in _log(cluster), 30,
                   f"the epilog's log of job {down} ({_log(cluster)})")  # fmt: skip
        assert _job(scheduler, down).admin_comment == ""
        given = (base / "log" / f"epilog-env-{plain}").read_text()
        names = sorted(line.split("=")[0] for line in given.splitlines() if "SLURM" in line)
        print(f"slurm {slurm_release.codename}: job {down} ended in {took:.1f}s; {record}; "
              f"EpilogSlurmctld env: {' '.join(names)}")  # fmt: skip
        assert took < 10, took
    finally:
        cluster.stop()
