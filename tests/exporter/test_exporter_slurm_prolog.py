"""The job-map prolog/epilog inside a real Slurm cluster, read back by the exporter.

Needs the Slurm lab (``factoryctl.lab.slurm``, from the Slurm issue): skipped without it,
without slurm-wlm + munge, or without root.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from factoryctl.exporter.attribution import Attributor, JobMapDir, ProcResolver
from factoryctl.exporter.collection import Exporter
from factoryctl.exporter.simulated import SimBackend
from factoryctl.lab.procs import wait_until
from factoryctl.sim import SimConfig, SimFactory

lab = pytest.importorskip("factoryctl.lab.slurm", reason="needs the Slurm lab")

pytestmark = [pytest.mark.integration]

KIT = Path(__file__).resolve().parents[2] / "exporters" / "slurm"


def hook(tmp_path: Path, name: str, maps: Path) -> Path:
    """slurmd runs hooks with its own environment: point each node at its own map dir."""
    script = tmp_path / f"{name}.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'FACTORYCTL_JOB_MAP_DIR="{maps}/$SLURMD_NODENAME" '
        f"exec {KIT / f'factoryctl-jobmap-{name}.sh'}\n"
    )
    script.chmod(0o755)
    return script


def test_prolog_and_epilog_in_real_slurm(tmp_path, slurm_release):
    """On every Slurm generation (``slurm_release``): its slurmd runs the kit's scripts."""
    maps = tmp_path / "maps"
    cluster = lab.SlurmCluster(
        nodes=2,
        gpus_per_node=4,
        release=slurm_release,
        shared=(str(KIT),),
        prolog=str(hook(tmp_path, "prolog", maps)),
        epilog=str(hook(tmp_path, "epilog", maps)),
    ).start()
    try:
        a = cluster.sbatch("-w", "gpu01", "--gres=gpu:2", script="sleep 300")
        b = cluster.sbatch("-w", "gpu01", "--gres=gpu:1", script="sleep 300")
        c = cluster.sbatch("-w", "gpu02", "--gres=gpu:4", script="sleep 300")
        for job in (a, b, c):
            cluster.wait_job_running(job)
        n1, n2 = JobMapDir(maps / "gpu01"), JobMapDir(maps / "gpu02")
        wait_until(
            lambda: (
                n1.read() == {0: (a,), 1: (a,), 2: (b,)}
                and n2.read() == {i: (c,) for i in range(4)}
            ),
            30,
            f"the prolog's job map ({n1.read()}, {n2.read()})",
        )
        # The exporter of gpu01 attributes its GPUs from that map.
        sim = SimFactory(SimConfig(nodes=1, node_names=("gpu01",), gpus_per_node=4, jobs=False))
        exporter = Exporter(
            SimBackend(sim, "gpu01", follow_clock=False),
            "gpu01",
            Attributor(n1, ProcResolver(tmp_path / "no-proc")),
        )
        snap = exporter.collect_once(sim.now)
        held = {i: [r.job_id for r in refs] for i, refs in snap.attribution.items() if refs}
        assert held == {0: [a], 1: [a], 2: [b]}
        cluster.run(["scancel", a], check=True)
        wait_until(lambda: n1.read() == {2: (b,)}, 30, f"the epilog of {a} ({n1.read()})")
        cluster.run(["scancel", b, c], check=True)
        wait_until(lambda: n1.read() == {} and n2.read() == {}, 30, "every epilog")
    finally:
        cluster.stop()
