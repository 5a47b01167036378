"""The slurmrestd backend against a real slurmrestd (unix socket, local auth) on 22.05."""

from __future__ import annotations

import time

import pytest

from factoryctl.lab.slurm import SlurmCluster
from factoryctl.model import NodeState
from factoryctl.scheduler.base import ReservationRequest
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.scheduler.slurmrestd import open_slurmrestd

pytestmark = [pytest.mark.integration]


def test_reads_over_rest_writes_over_scontrol(slurm: SlurmCluster) -> None:
    sock = (
        slurm.start_slurmrestd()
        if not (slurm.dir / "run" / "slurmrestd.socket").exists()
        else (slurm.dir / "run" / "slurmrestd.socket")
    )
    rest = open_slurmrestd({"slurmrestd_url": f"unix:{sock}", "jwt_file": ""}, slurm.env)
    job = slurm.sbatch("-w", "gpu01", "--gres=gpu:2", script="sleep 60")
    slurm.wait_job_running(job)
    assert rest.detect() == "v0.0.38"
    rest.drain(["gpu01"], "factoryctl: rest test (erin)")
    nodes = {n.name: n for n in rest.nodes()}
    assert nodes["gpu01"].state is NodeState.DRAINING
    assert nodes["gpu01"].reason == "factoryctl: rest test (erin)"
    cli_nodes = {
        n.name: (n.state, n.reason, n.gpus_allocated) for n in SlurmCLI(env=slurm.env).nodes()
    }
    assert {k: (v.state, v.reason, v.gpus_allocated) for k, v in nodes.items()} == cli_nodes
    (j,) = [j for j in rest.jobs() if j.job_id == job]
    assert [(a.node, a.gpu_indices) for a in j.allocations] == [("gpu01", (0, 1))]
    rest.create_reservation(ReservationRequest("rest-m", ("gpu03",), time.time() + 600, 3600))
    assert [(r.name, r.nodes, r.maintenance) for r in rest.reservations()] == [
        ("rest-m", ("gpu03",), True)
    ]
    assert all(p.startswith("/") for p in rest.calls)  # reads went over HTTP


def test_cli_selects_slurmrestd_from_config(slurm: SlurmCluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import io
    import json

    from factoryctl.cli.env import Environment
    from factoryctl.cli.main import main

    sock = slurm.start_slurmrestd()
    out, err = io.StringIO(), io.StringIO()
    env = Environment(
        stdout=out,
        stderr=err,
        stdin_isatty=False,
        environ={
            **slurm.env,
            "HOME": str(tmp_path),
            "USER": "erin",
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "FACTORYCTL_SCHEDULER_TYPE": "slurmrestd",
            "FACTORYCTL_SCHEDULER_SLURMRESTD_URL": f"unix:{sock}",
        },
    )
    assert main(["-o", "json", "drain", "gpu02", "--reason", "via rest", "--yes"], env) == 0, (
        err.getvalue()
    )
    assert json.loads(out.getvalue())["nodes"][0]["result"] == "changed"
    assert isinstance(
        env.scheduler(), type(open_slurmrestd({"slurmrestd_url": f"unix:{sock}"}, {}))
    )
    assert "/openapi/v3" in env.scheduler().calls  # type: ignore[attr-defined]
