"""The reads without Slurm's big JSON (issue 13, part 5), against that JSON on a real
cluster of every generation.

The grouped node list (``slurm_sinfo``: ``sinfo -O`` checked against ``scontrol -o``)
says exactly what the JSON node list says: states with their drain, down, maintenance
and reboot flags, reasons (a "|", the word "none", a blank, 300 characters), reason
times, partitions in Slurm's order, GRES totals, GPUs allocated and features. A node in
no partition, which sinfo does not list, sends the read to the JSON list. The split job
list (``slurm_squeue``) is every job's JSON, job for job.

One 5-node cluster per release (3 slurmd, 2 declared DOWN), two partitions; about 11 s a
release on a quiet machine (32 s for the three), most of it the cluster's start, waiting
for the maintenance flag to show, and the jobs.
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


def test_split_job_list_is_the_json_job_list(grouped_cluster: SlurmCluster) -> None:
    """Pending jobs from squeue's text, the others from their JSON (``slurm_squeue``):
    the same jobs as every job's JSON, field for field, on every generation; a pending
    job with an AdminComment is read from its JSON. About 3 s a release."""
    c = grouped_cluster
    cli = SlurmCLI(env=c.env)
    array = c.sbatch("--hold", "--array=1-3", "-J", "arr|name x")
    commented = c.sbatch("--hold", "-J", "plain")
    c.scontrol("update", f"JobId={commented}", "AdminComment=energy | x=1", check=True)
    running = c.sbatch("-w", "gpu01", "--gres=gpu:2", "-J", "run")
    c.sbatch("--array=1-2", "-w", "gpu02", "-J", "runarr", script="sleep 300")
    done = c.sbatch("-J", "quick", script="true")
    c.wait_job_running(running)
    wait_until(lambda: done in {j.job_id for j in cli.json_jobs() if j.state.finished}, 20, "end")
    try:
        for _ in range(20):
            before = {j.job_id: j for j in cli.json_jobs()}
            split = {j.job_id: j for j in cli.jobs()}
            if {j.job_id: j for j in cli.json_jobs()} == before:
                break
        assert split == before and cli.split_fallbacks == 0
        assert split[array].name == "arr|name x" and split[array].allocations == ()
        assert split[commented].admin_comment == "energy | x=1"
        assert split[running].gpu_count == 2 and split[done].state.finished
        # From 23.02 the pending ones came from the text: the JSON read was for the others
        # and the one pending job with a comment. 22.05's JSON holds every job anyway.
        assert any(c[:2] == ["squeue", "--noheader"] for c in cli.calls)
        asked = any(a.startswith(f"--jobs={commented}") for c in cli.calls for a in c)
        assert asked is (c.release.slurm_version() >= (23, 2))
    finally:
        c.cancel_all()
