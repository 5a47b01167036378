"""The lab cluster itself: fake GPUs reach jobs, Prolog/Epilog run, stop leaves nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from factoryctl.lab.debian import DebianRelease
from factoryctl.lab.leftovers import our_processes
from factoryctl.lab.procs import wait_until
from factoryctl.lab.slurm import SlurmCluster

pytestmark = [pytest.mark.integration]


def test_gpus_prolog_epilog_and_clean_stop(tmp_path: Path, slurm_release: DebianRelease) -> None:
    out = tmp_path / "out"
    out.mkdir()
    hook = tmp_path / "hook.sh"
    hook.write_text(
        "#!/bin/sh\n"
        f'echo "$0 $SLURM_JOB_ID $SLURMD_NODENAME $CUDA_VISIBLE_DEVICES $SLURM_JOB_GPUS" >> {out}/hooks.log\n'
    )
    hook.chmod(0o755)
    prolog, epilog = tmp_path / "prolog.sh", tmp_path / "epilog.sh"
    prolog.symlink_to(hook)
    epilog.symlink_to(hook)
    cluster = SlurmCluster(
        nodes=2, gpus_per_node=4, prolog=str(prolog), epilog=str(epilog), release=slurm_release
    )
    t0 = time.monotonic()
    cluster.start()
    try:
        assert time.monotonic() - t0 < 20
        assert str(cluster.dir).startswith(("/tmp", str(Path("/tmp").resolve())))
        conf = cluster.conf_path.read_text()
        for key in (
            "StateSaveLocation",
            "SlurmdSpoolDir",
            "SlurmctldPidFile",
            "SlurmdPidFile",
            "AuthInfo",
        ):
            (line,) = [x for x in conf.splitlines() if x.startswith(key + "=")]
            assert str(cluster.dir) in line, line
        script = f'echo "$CUDA_VISIBLE_DEVICES|$SLURM_JOB_GPUS" > {out}/job.txt; sleep 60'
        job = cluster.sbatch("-w", "gpu02", "--gres=gpu:2", script=script)
        wait_until(lambda: (out / "job.txt").exists(), 20, "job output")
        assert (out / "job.txt").read_text().strip() == "0,1|0,1"
        detail = cluster.scontrol("-o", "-d", "show", "job", job, check=True).stdout
        assert "GRES=gpu:2(IDX:0-1)" in detail
        cluster.run(["scancel", job], check=True)
        wait_until(lambda: f"{epilog} {job} " in (out / "hooks.log").read_text(), 20, "epilog")
        lines = (out / "hooks.log").read_text().splitlines()
        assert any(line.startswith(f"{prolog} {job} gpu02") for line in lines), lines
        assert any(line.startswith(f"{epilog} {job} gpu02") for line in lines), lines
    finally:
        directory = cluster.dir
        cluster.stop()
    assert our_processes(directory) == []
    assert not directory.exists()
