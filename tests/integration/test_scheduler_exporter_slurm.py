"""``factoryctl scheduler-exporter`` on a real Slurm of every generation: the running jobs'
GPUs, index by index, as Slurm's GRES detail gives them (22.05, 24.11 and 26.05 shape it
differently; ``scheduler/slurm_json.py``), checked against ``scontrol -d show job``.

Cost: one ``--once`` run per release on the session's 4-node cluster (about 1-2 s each
with the two jobs' start). The same series scraped by a real engine and used for a
finished job's energy is in ``test_finished_job_energy.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from factoryctl.hostlists import expand
from factoryctl.lab.slurm import SlurmCluster
from factoryctl.telemetry import schema
from tests.integration.test_scheduler_only import factoryctl, gres_indices


def slurms_word(cluster: SlurmCluster, job_id: str) -> set[tuple[str, str, str]]:
    """(node, gpu, job) for every GPU ``scontrol -d`` shows the job holding."""
    out = cluster.scontrol("-d", "-o", "show", "job", job_id, check=True).stdout
    held = set()
    for hosts, gres in re.findall(r"\bNodes=(\S+) CPU_IDs=\S+ Mem=\S+ GRES=(\S+)", out):
        for node in expand(hosts):
            held.update((node, str(i), job_id) for i in gres_indices(gres))
    assert held, out
    return held


def test_the_running_jobs_gpus_as_slurm_allocated_them(slurm: SlurmCluster, tmp_path: Path):
    # Specific GPUs: the first job takes gpu01's 0-2, so the second gets 3-4 there.
    first = slurm.sbatch("-w", "gpu01", "--gres=gpu:3")
    second = slurm.sbatch("-N", "2", "-w", "gpu01,gpu03", "--gres=gpu:2")
    slurm.wait_job_running(first)
    slurm.wait_job_running(second)
    res = factoryctl(slurm, tmp_path, "scheduler-exporter", "--once")
    assert res.returncode == 0, res.stderr
    samples = [s for f in text_string_to_metric_families(res.stdout) for s in f.samples]
    held = {
        (s.labels["node"], s.labels["gpu"], s.labels["job_id"])
        for s in samples
        if s.name == schema.SLURM_GPU_JOB_INFO and s.value == 1
    }
    truth = slurms_word(slurm, first) | slurms_word(slurm, second)
    assert held == truth
    assert {(n, g) for n, g, j in truth if j == second} >= {("gpu01", "3"), ("gpu01", "4")}
    users = {s.labels["user"] for s in samples if s.name == schema.SLURM_GPU_JOB_INFO}
    assert users == {"root"}
    unknown = [s.value for s in samples if s.name == schema.SLURM_JOBS_GPU_INDICES_UNKNOWN]
    assert unknown == [0]
