"""Issue 12 part 4 on real parts: slurmctld of every generation runs the shipped
EpilogSlurmctld, which reads a real Prometheus and writes the job's energy into the job's
AdminComment through slurmdbd (``sacct -o AdminComment`` shows it); a site's comment stays,
jobstats' encoded one is not touched, a second run writes nothing; without accounting or
without Prometheus nothing is written, it is logged, and the job ends at once.

The simulator plays the GPUs Slurm hands out (same node, same indices, the Slurm job id)
and a Prometheus scrapes its exporter every second, as in test_prometheus_slurm.py.

Cost: the accounting test reuses the session's ``slurm_accounting_cluster`` (slurmdbd and
MariaDB are started once per generation for the accounting tests), adding the epilog with
``scontrol reconfigure``; each run starts one simulated node and one Prometheus (~3 s) and
runs three 2-second jobs (~12 s per generation; 22.05 ~13 s more, see _with_epilog); the
audit log's entries are read from the file the epilogs wrote (no extra run). The unreachable-Prometheus test runs on the
host's generation only (~4 s).
"""

from __future__ import annotations

import contextlib
import json
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
from factoryctl.lab.debian import RELEASES, DebianRelease, host_codename
from factoryctl.lab.procs import free_port, wait_until
from factoryctl.lab.slurm import SlurmCluster
from factoryctl.lab.stack import Stack, engine_available
from factoryctl.model import Job
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.telemetry.job_energy import from_admin_comment
from tests.integration.simexpo import SimTargets

pytestmark = pytest.mark.integration

KIT = Path(__file__).resolve().parents[2] / "exporters" / "slurm"
NODE = "gpu01"


@contextlib.contextmanager
def _telemetry(state: Path, codename: str) -> Iterator[tuple[SimTargets, str]]:
    """One simulated node and a Prometheus scraping it (the release's own, else any): a
    fresh one per cluster, since job ids repeat across the generations' clusters."""
    engines = [f"prometheus@{r}" for r in (codename, *RELEASES)]
    engines = [e for e in engines if engine_available(e)]
    if not engines:
        pytest.skip("needs prometheus (on PATH or in a lab release)")
    sim = SimFactory(SimConfig(node_names=(NODE,), gpus_per_node=4, jobs=False,
                               start_time=time.time()))  # fmt: skip
    targets = SimTargets(sim).start()
    stack = Stack(state, list(targets.addresses.values()), engines[:1], "1s")
    try:
        stack.start()
        stack.wait_scraped(timeout=60)
        yield targets, next(iter(stack.running.values())).url
    finally:
        stack.stop()
        targets.stop()


def _hook(where: Path, cluster_dir: Path) -> Path:
    """What slurm.conf names: slurmctld runs it (inside its release's root for 24.11 and
    26.05); it notes the environment Slurm gave it, then runs the shipped wrapper on the
    host, where this checkout's factoryctl lives: ``nsenter`` into this test's mount
    namespace and root (PID 1's may be closed to us in a container). The cluster's clients
    come first on PATH (they re-enter the release's root themselves). The Prometheus URL
    is read from a file, so a test can take it away."""
    factoryctl = shutil.which("factoryctl", path=str(Path(sys.executable).parent))
    assert factoryctl is not None, "factoryctl beside this Python (pip install -e .)"
    d, w = cluster_dir, where
    path = w / "epilog.sh"
    path.write_text(
        f"""#!/bin/sh
env | sort > "{w}/epilog-env-$SLURM_JOB_ID"
PATH=/usr/sbin:/usr/bin:/sbin:/bin
exec nsenter --target {os.getpid()} --mount --root --wd=/ env -i \\
  PATH="{d}/bin:{os.environ.get("PATH", "/usr/bin:/bin")}" HOME="{w}" \\
  SLURM_CONF="{d}/etc/slurm.conf" FACTORYCTL_LAB_DIR="{d}" FACTORYCTL="{factoryctl}" \\
  FACTORYCTL_PROMETHEUS_URL="$(cat "{w}/prometheus-url")" \\
  FACTORYCTL_EPILOG_LOG="{w}/energy-epilog.log" FACTORYCTL_EPILOG_TIMEOUT=20 \\
  FACTORYCTL_EPILOG_DETACH="${{FACTORYCTL_EPILOG_DETACH:-1}}" SLURM_JOB_ID="$SLURM_JOB_ID" \\
  {KIT / "factoryctl-energy-epilog.sh"}
"""
    )
    path.chmod(0o755)
    return path


def _job(scheduler: SlurmCLI, job_id: str) -> Job:
    (job,) = [j for j in scheduler.jobs() if j.job_id == job_id]
    return job


def _log(where: Path) -> str:
    path = where / "energy-epilog.log"
    return path.read_text() if path.exists() else ""


def _why(cluster: SlurmCluster, where: Path) -> str:
    ctld = (cluster.dir / "log" / "slurmctld.log").read_text().splitlines()
    said = [line for line in ctld if "pilog" in line.lower() or "script" in line][-8:]
    ps = subprocess.run(["ps", "-eo", "pid,etimes,args"], capture_output=True, text=True)
    ours = [line.strip() for line in ps.stdout.splitlines() if "job-epilog" in line]
    sacct = cluster.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,AdminComment"]).stdout
    files = sorted(p.name for p in where.iterdir())
    return (
        f"log: {_log(where)!r}; files: {files}; still running: {ours}; sacct: {sacct!r};"
        f" slurmctld: {said}"
    )


def _play(targets: SimTargets, scheduler: SlurmCLI, job_ids: list[str]) -> tuple[dict, float]:
    """The simulator plays the GPUs Slurm gave each job for 2 s; the true joules, and how
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
    time.sleep(2)
    with targets.lock:
        targets.sync()
        for job_id in job_ids:
            sim.release(job_id)
        targets.observe(sim)
        return {j: sim.true_energy(j) for j in job_ids}, time.time() - began


def _audit(where: Path) -> dict[str, list[dict]]:
    """The audit log's job-epilog results by job, in order (each after its start)."""
    path = where / ".local" / "state" / "factoryctl" / "audit.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    starts = {r["id"] for r in records if r["event"] == "start"}
    out: dict[str, list[dict]] = {}
    for r in records:
        if r["event"] == "result":
            assert r["id"] in starts and r["verb"] == "job-epilog", r
            out.setdefault(r["job_id"], []).append(r)
    return out


def _sacct_comment(cluster: SlurmCluster, job_id: str) -> str | None:
    out = cluster.run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,AdminComment"],
                      check=True).stdout  # fmt: skip
    for line in out.splitlines():
        listed, _, text = line.partition("|")
        if listed == job_id:
            return text
    return None


@pytest.fixture
def accounting_cluster(request: pytest.FixtureRequest, slurm_release) -> SlurmCluster:
    try:
        cluster: SlurmCluster = request.getfixturevalue("slurm_accounting_cluster")
    except pytest.FixtureLookupError:
        pytest.skip("needs the lab's slurmdbd (the slurm_accounting_cluster fixture)")
    # The session's cluster: a test before this one may have stopped slurmdbd (its "down"
    # case) and failed before starting it again; without it no comment can be written.
    if cluster.dbd is not None and not any(
        p.name == "slurmdbd" and p.alive() for p in cluster.procs
    ):
        cluster.dbd.start_slurmdbd(timeout=30)
    return cluster


@contextlib.contextmanager
def _with_epilog(cluster: SlurmCluster, where: Path) -> Iterator[SlurmCluster]:
    """The session's cluster with EpilogSlurmctld for this test only (reconfigure). 22.05
    does not take a new EpilogSlurmctld on reconfigure (its slurmscriptd keeps the one
    it started with; seen on the lab): there, a cluster of its own (~13 s more)."""
    if cluster.release.slurm_version() < (23, 2):
        base = where / "slurm"
        own = SlurmCluster(nodes=1, gpus_per_node=4, release=cluster.release, base_dir=base,
                           accounting=True,  # type: ignore[call-arg]
                           extra_conf=(f"EpilogSlurmctld={_hook(where, base)}",))  # fmt: skip
        try:
            yield own.start()
        finally:
            own.stop()
        return
    original = cluster.conf_path.read_text()
    cluster.conf_path.write_text(original + f"EpilogSlurmctld={_hook(where, cluster.dir)}\n")
    cluster.scontrol("reconfigure", check=True)
    try:
        yield cluster
    finally:
        cluster.conf_path.write_text(original)
        cluster.scontrol("reconfigure", check=True)


def test_epilog_writes_energy_into_the_accounting(
    slurm_release, accounting_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """The issue's path on every generation: slurmctld's epilog, slurmdbd, ``sacct``."""
    lowercases = slurm_release.slurm_version() < (24, 11)  # 22.05's sacctmgr (see SlurmCLI)
    with (
        _telemetry(tmp_path / "stack", slurm_release.codename) as (targets, url),
        _with_epilog(accounting_cluster, tmp_path) as cluster,
    ):
        (tmp_path / "prometheus-url").write_text(url)
        scheduler = SlurmCLI(env=cluster.env)
        ids = [cluster.sbatch("-w", NODE, "--gres=gpu:1", script="sleep 300") for _ in range(3)]
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
            wait_until(lambda: recorded(plain), 30, "the AdminComment", interval=0.3)
            # Each epilog is bounded by FACTORYCTL_EPILOG_TIMEOUT=20 s (+2 s to kill).
            wait_until(lambda: _log(tmp_path).count("\n") >= 3, 25, "every job's epilog")
        except TimeoutError:
            pytest.fail(f"not every AdminComment written: {_why(cluster, tmp_path)}")
        log = _log(tmp_path)
        # What slurmctld gave the epilog (before the rerun below writes its own).
        given = (tmp_path / f"epilog-env-{plain}").read_text().splitlines()
        names = sorted(line.split("=")[0] for line in given if line.startswith("SLURM"))
        assert "SLURM_JOB_ID" in names
        comment = _sacct_comment(cluster, plain) or ""
        record = parse_record(comment)
        assert record is not None and record.job_id == plain, comment
        assert record.source == "job-counter"
        error = (record.energy_joules - truth[plain]) / truth[plain]
        assert abs(error) <= 0.005, (record, truth[plain])
        assert record.gpu_seconds is not None and record.active_gpu_seconds is not None
        assert abs(record.gpu_seconds - held) <= 1.5, (record, held)
        assert 0 < record.active_gpu_seconds <= record.gpu_seconds
        # Read back from the accounting database (sacct) as energy/job do for a job older
        # than Prometheus' retention: the recorded figure, said to be the record's.
        accounted = scheduler.accounted_job(plain)
        assert accounted is not None and accounted.admin_comment == comment
        assert accounted.start_time is not None and accounted.end_time is not None
        back = from_admin_comment(accounted)
        assert back is not None and back.method == "admin-comment"
        assert back.joules == record.energy_joules
        # The site's note: kept first, ours after it; where sacctmgr would lowercase the
        # whole comment (22.05), left exactly as it was, and the log says why.
        kept = _sacct_comment(cluster, foreign) or ""
        if lowercases:
            assert kept == "billing: project X", kept
            assert f"job {foreign}: this sacctmgr lowercases" in log, log
        else:
            assert kept.startswith(f"billing: project X; factoryctl:v1 job={foreign} "), kept
        # jobstats' encoded record is not touched.
        assert _sacct_comment(cluster, encoded) == "JS1:eyJncHVzIjogMn0="
        assert f"job {encoded}: nothing written: the AdminComment is another tool's" in log
        # Run twice, writes once: the epilog again, in the foreground, exits 0.
        rerun = {**cluster.env, "SLURM_JOB_ID": plain, "FACTORYCTL_EPILOG_DETACH": "0"}
        assert subprocess.run([str(tmp_path / "epilog.sh")], env=rerun, timeout=60).returncode == 0
        assert f"job {plain}: nothing written: already recorded" in _log(tmp_path)
        assert _sacct_comment(cluster, plain) == comment
        # Each run is in factoryctl's audit log (the epilog's HOME is tmp_path): the write,
        # the skips and the refusal, each a start/result pair.
        audit = _audit(tmp_path)
        assert [r["status"] for r in audit[plain]] == ["ok", "skipped"], audit
        assert audit[plain][0]["admin_comment"] == comment
        assert audit[plain][0]["admin_comment_before"] == ""
        assert "already recorded" in audit[plain][1]["message"]
        ((enc,),) = [audit[encoded]]
        assert enc["status"] == "skipped" and enc["admin_comment"] is None
        assert enc["admin_comment_before"] == "JS1:eyJncHVzIjogMn0="
        ((other,),) = [audit[foreign]]
        if lowercases:
            assert other["status"] == "failed", other
            assert other["exit_status"] == int(ExitStatus.REFUSED)
        else:
            assert other["status"] == "ok" and other["admin_comment"] == kept, other
        print(f"slurm {slurm_release.codename}: {comment}; the truth {truth[plain]:.1f} J"
              f" ({error:+.3%}), {held:.1f} GPU-s held; EpilogSlurmctld's environment:"
              f" {' '.join(names)}")  # fmt: skip


def test_epilog_with_prometheus_unreachable_never_holds_the_job(tmp_path: Path) -> None:
    """Prometheus unreachable: logged, exit 0, and the job ends as fast as without an
    epilog. On the host's generation only (no accounting needed: nothing gets that far).
    Slurm's refusal to take a finished job's AdminComment without slurmdbd (seen on 22.05,
    24.11 and 26.05) is tests/unit/test_energy_record.py's, from its message."""
    release = DebianRelease(host_codename())
    if release.codename not in RELEASES:
        pytest.skip(f"the host's release {release.codename} is not one the lab runs")
    base = tmp_path / "slurm"
    (tmp_path / "prometheus-url").write_text(f"http://127.0.0.1:{free_port()}")
    cluster = SlurmCluster(nodes=1, gpus_per_node=4, release=release, base_dir=base,
                           extra_conf=(f"EpilogSlurmctld={_hook(tmp_path, base)}",))  # fmt: skip
    try:
        cluster.start()
        scheduler = SlurmCLI(env=cluster.env)
        submitted = time.time()
        down = cluster.sbatch("-w", NODE, script="true")
        wait_until(lambda: _job(scheduler, down).state.finished, 15, f"job {down} to end",
                   interval=0.2)  # fmt: skip
        took = time.time() - submitted
        said = f"job {down}: nothing recorded (exit {int(ExitStatus.TELEMETRY_UNREACHABLE)})"
        wait_until(lambda: said in _log(tmp_path), 30, f"{said!r} ({_log(tmp_path)})")
        assert _job(scheduler, down).admin_comment == ""
        assert took < 10, took
        given = (tmp_path / f"epilog-env-{down}").read_text()
        names = sorted(line.split("=")[0] for line in given.splitlines() if "SLURM" in line)
        print(f"job {down} ended in {took:.1f}s; EpilogSlurmctld's environment: {names}")
    finally:
        cluster.stop()
