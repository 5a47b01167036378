"""The grouped node list (``slurm_sinfo``: ``sinfo -O`` checked against ``scontrol -o``)
says exactly what Slurm's JSON node list says, on a real cluster of every generation
(issue 13, part 5): states with their drain, down, maintenance and reboot flags, reasons
(a "|", the word "none", a blank, 300 characters), reason times, partitions in Slurm's
order, GRES totals, GPUs allocated and features. A node in no partition, which sinfo
does not list, sends the read to the JSON list.

One 5-node cluster per release (3 slurmd, 2 declared DOWN), two partitions; about 4 s a
release, most of it the cluster's start and the job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from factoryctl.lab.procs import wait_until
from factoryctl.lab.slurm import SlurmCluster
from factoryctl.model import Node, NodeState
from factoryctl.scheduler.slurm_cli import SlurmCLI

LONG = "PSU swap | ticket 42: " + "x" * 278  # longer than any sinfo default width


@pytest.fixture(scope="session")
def grouped_cluster(make_slurm_cluster: Callable[..., SlurmCluster]) -> SlurmCluster:
    return make_slurm_cluster(
        nodes=3,
        extra_nodes=2,
        gpus_per_node=8,
        extra_conf=["PartitionName=debug Nodes=gpu[01-02,05] State=UP"],
    )


def settled(cli: SlurmCLI) -> tuple[list[Node], list[Node]]:
    """(grouped, JSON) read back to back while no state moved between two JSON reads: a
    node may be mid-reboot, and the two paths are separate reads of slurmctld."""
    for _ in range(20):
        before = cli.json_nodes()
        grouped = cli.nodes()
        if cli.json_nodes() == before:
            return grouped, before
    raise AssertionError("node states never settled for three reads")


def test_grouped_node_list_is_the_json_node_list(grouped_cluster: SlurmCluster) -> None:
    c = grouped_cluster
    cli = SlurmCLI(env=c.env)
    job = c.sbatch("-w", "gpu01", "--gres=gpu:3")
    c.wait_job_running(job)
    try:
        c.scontrol("update", "NodeName=gpu02", "State=DRAIN", f"Reason={LONG}", check=True)
        c.scontrol("update", "NodeName=gpu03", "AvailableFeatures=a100,nvlink", check=True)
        c.scontrol("update", "NodeName=gpu03", "ActiveFeatures=a100", check=True)
        cli.clear_reason(["gpu03"])  # a blank reason
        c.scontrol("update", "NodeName=gpu04", "State=DOWN", "Reason=none", check=True)
        c.scontrol("reboot", "nextstate=resume", "reason=fw", "gpu05", check=True)
        c.scontrol(
            "create", "reservation", "ReservationName=m1", "Nodes=gpu01", "StartTime=now",
            "Duration=60", "Users=root", "Flags=MAINT,IGNORE_JOBS", check=True,
        )  # fmt: skip
        in_force = lambda: next(n for n in cli.json_nodes() if n.name == "gpu01")  # noqa: E731
        wait_until(lambda: in_force().state is NodeState.MAINT, 30, "maintenance in force")
        grouped, full = settled(cli)
        assert grouped == full  # every field of every node, in Slurm's order
        assert cli.grouped_fallbacks == 0
        by = {n.name: n for n in grouped}
        assert by["gpu01"].gpus_allocated == 3 and by["gpu01"].gpu_count == 8
        assert by["gpu01"].partitions == full[0].partitions and len(by["gpu01"].partitions) == 2
        assert by["gpu02"].state is NodeState.DRAINED and by["gpu02"].reason == LONG
        assert by["gpu02"].reason_time is not None
        assert by["gpu03"].features == ("a100", "nvlink")
        assert by["gpu04"].reason == "none"
        assert by["gpu05"].state is NodeState.REBOOTING and by["gpu01"].state is NodeState.MAINT
        assert {n.state for n in grouped} >= {NodeState.DRAINED, NodeState.REBOOTING}
        commands = [" ".join(a[:3]) for a in cli.calls]
        assert "sinfo --noheader --all" in commands and "scontrol -o show" in commands

        # gpu04 out of every partition: sinfo no longer lists it, the JSON list still does.
        c.scontrol("update", "PartitionName=gpu", "Nodes=gpu[01-03,05]", check=True)
        grouped, full = settled(cli)
        assert grouped == full and "gpu04" in {n.name for n in grouped}
        assert next(n for n in grouped if n.name == "gpu04").partitions == ()
        assert cli.grouped_fallbacks >= 1
    finally:
        c.scontrol("update", "PartitionName=gpu", "Nodes=ALL")
        c.scontrol("delete", "ReservationName=m1")
        c.cancel_all()


def _states(cli: SlurmCLI) -> dict[str, Any]:
    return {n.name: (n.state, n.reason) for n in cli.nodes()}


def test_a_drain_shows_at_the_next_grouped_read(grouped_cluster: SlurmCluster) -> None:
    """Nothing of a node's state is kept between reads: a drain and a resume show at the
    very next read."""
    c = grouped_cluster
    cli = SlurmCLI(env=c.env)
    c.scontrol("update", "NodeName=gpu03", "State=DRAIN", "Reason=next poll", check=True)
    assert _states(cli)["gpu03"] == (NodeState.DRAINED, "next poll")
    c.scontrol("update", "NodeName=gpu03", "State=RESUME", check=True)
    assert _states(cli)["gpu03"][0] is NodeState.IDLE
