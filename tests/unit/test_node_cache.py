"""The console's node cache (issue 13, part 5): configuration kept across polls, state,
reason and allocation fresh at every one; and the grouped ``sinfo`` it reads them from.

The ``sinfo -O`` lines are what Slurm printed: 22.05 for the 12,500-node lab cluster of
benchmarks/scheduler_scale.py, 24.11 and 26.05 for a 4-node one with a job, a drain and
a reboot (the 26.05 sample's GresUsed and MAINT line in the forms other runs print).
Fake clock, fake scheduler, no Slurm: milliseconds in all.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from factoryctl.cli.env import Environment
from factoryctl.cli.main import main
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Job, JobState, Node, NodeState
from factoryctl.scheduler.base import NodeStatus
from factoryctl.scheduler.checked import checked
from factoryctl.scheduler.node_cache import NodeCache, merge_states, node_cache
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.scheduler.slurm_sinfo import SINFO_STATES_FORMAT, parse_sinfo_states

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"

SINFO_22_05 = """\
gpu00100|down+drain+not_responding|gpu:0|x
gpu[00005-00099,00101-12500]|down+not_responding|gpu:0|no slurmd (lab)
gpu00002|allocated+drain|gpu:8|a very long reason that goes well past twenty characters | with a pipe
gpu[00001,00003-00004]|allocated|gpu:8|none
"""
SINFO_24_11 = """\
gpu03|idle+reboot_requested|gpu:0|driver
gpu02|idle+drain|gpu:0|fan swap
gpu01|mixed|gpu:2|none
gpu04|idle|gpu:0|none
"""
SINFO_26_05 = """\
gpu03|down+reboot_issued|gpu:0|driver : reboot issued
gpu02|idle+drain|gpu:0|fan swap
gpu01|mixed|gpu:2(IDX:0-1)|none
gpu04|idle+maintenance+reserved|gpu:0|none
"""


# -- the grouped sinfo ---------------------------------------------------------------------
def test_grouped_sinfo_gives_every_node_its_state_reason_and_gpus() -> None:
    states = parse_sinfo_states(SINFO_22_05)
    assert len(states) == 12500
    assert states["gpu00100"] == NodeStatus(NodeState.DOWN, "x", 0)
    assert states["gpu12500"] == NodeStatus(NodeState.DOWN, "no slurmd (lab)", 0)
    # Reason is the last field: a "|" inside it stays in it.
    assert states["gpu00002"] == NodeStatus(
        NodeState.DRAINING,
        "a very long reason that goes well past twenty characters | with a pipe",
        8,
    )
    assert states["gpu00003"] == NodeStatus(NodeState.ALLOCATED, "", 8)  # "none": no reason

    states = parse_sinfo_states(SINFO_24_11)
    assert states == {
        "gpu01": NodeStatus(NodeState.MIXED, "", 2),
        "gpu02": NodeStatus(NodeState.DRAINED, "fan swap", 0),
        "gpu03": NodeStatus(NodeState.REBOOTING, "driver", 0),
        "gpu04": NodeStatus(NodeState.IDLE, "", 0),
    }
    states = parse_sinfo_states(SINFO_26_05)
    assert states["gpu03"] == NodeStatus(NodeState.REBOOTING, "driver : reboot issued", 0)
    assert states["gpu01"] == NodeStatus(NodeState.MIXED, "", 2)  # IDX form: still 2
    assert states["gpu04"].state is NodeState.MAINT


@pytest.mark.parametrize("line", ["gpu01 idle", "gpu01|idle|gpu:0", "|idle|gpu:0|none"])
def test_a_grouped_sinfo_line_of_another_shape_is_an_error(line: str) -> None:
    with pytest.raises(FactoryctlError, match="line not understood") as info:
        parse_sinfo_states(f"gpu02|idle|gpu:0|none\n{line}\n")
    assert info.value.status is ExitStatus.SCHEDULER_ERROR


def test_slurm_cli_reads_states_with_one_grouped_sinfo() -> None:
    seen: list[list[str]] = []

    def runner(
        argv: Sequence[str], env: Mapping[str, str] | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        seen.append(list(argv))
        return subprocess.CompletedProcess(list(argv), 0, SINFO_24_11, "")

    states = SlurmCLI(runner=runner).node_states()
    assert seen == [["sinfo", "--noheader", "--all", "-O", SINFO_STATES_FORMAT]]
    assert states["gpu02"].state is NodeState.DRAINED


# -- merging -------------------------------------------------------------------------------
def cluster_nodes() -> list[Node]:
    return [
        Node("gpu01", NodeState.IDLE, partitions=("gpu",), gpu_count=8),
        Node("gpu02", NodeState.DRAINED, "fan swap", 1.7e9, ("gpu",), 8),
        Node("gpu03", NodeState.MIXED, partitions=("gpu", "debug"), gpu_count=8, gpus_allocated=2),
    ]


def statuses(nodes: Sequence[Node]) -> dict[str, NodeStatus]:
    return {n.name: NodeStatus(n.state, n.reason, n.gpus_allocated) for n in nodes}


def test_merge_takes_state_and_allocation_and_keeps_unchanged_nodes() -> None:
    nodes = cluster_nodes()
    fresh = statuses(nodes) | {"gpu03": NodeStatus(NodeState.ALLOCATED, "", 8)}
    merged = merge_states(nodes, fresh)
    assert merged is not None
    assert merged[0] is nodes[0] and merged[1] is nodes[1]  # untouched: the same objects
    assert merged[2] == Node("gpu03", NodeState.ALLOCATED, "", None, ("gpu", "debug"), 8, 8)


def test_merge_refuses_what_the_states_cannot_say() -> None:
    nodes = cluster_nodes()
    same = statuses(nodes)
    added = same | {"gpu04": NodeStatus(NodeState.IDLE, "", 0)}
    removed = {k: v for k, v in same.items() if k != "gpu03"}
    renamed = removed | {"gpu09": same["gpu03"]}
    reason = same | {"gpu01": NodeStatus(NodeState.DRAINED, "bad DIMM", 0)}
    for states in (added, removed, renamed, reason):
        assert merge_states(nodes, states) is None


# -- the cache -----------------------------------------------------------------------------
class FakeSlurm:
    """Nodes whose state the test moves; counts what each poll read."""

    name = "fake"

    def __init__(self) -> None:
        self.current = cluster_nodes()
        self.reads: list[str] = []
        self.broken = False

    def nodes(self) -> list[Node]:
        self.reads.append("nodes")
        return list(self.current)

    def node_states(self) -> dict[str, NodeStatus]:
        self.reads.append("states")
        if self.broken:
            raise KeyError("StateComplete")
        return statuses(self.current)

    def jobs(self) -> list[Job]:
        self.reads.append("jobs")
        return [Job("7", "carol")]

    def set(self, index: int, **changes: object) -> None:
        from dataclasses import replace

        self.current[index] = replace(self.current[index], **changes)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_state_is_fresh_at_every_poll_and_configuration_is_reread_after_ttl() -> None:
    slurm, clock = FakeSlurm(), Clock()
    cache = NodeCache(slurm, ttl=60.0, clock=clock)
    assert cache.nodes() == slurm.current and slurm.reads == ["nodes"]

    slurm.set(0, state=NodeState.ALLOCATED, gpus_allocated=8)  # a job started
    slurm.set(2, partitions=("gpu",))  # reconfigured: not seen until the TTL ends
    clock.now += 59.0
    polled = cache.nodes()
    assert slurm.reads == ["nodes", "states"]
    assert (polled[0].state, polled[0].gpus_allocated) == (NodeState.ALLOCATED, 8)
    assert polled[2].partitions == ("gpu", "debug")
    assert (cache.full_reads, cache.state_reads) == (1, 1)

    clock.now += 1.0  # 60 s after the full read: read it all again
    assert cache.nodes() == slurm.current and slurm.reads[-1] == "nodes"
    assert cache.nodes()[2].partitions == ("gpu",)
    assert slurm.reads[-1] == "states"

    # Jobs are never cached.
    assert cache.jobs() == [Job("7", "carol")] and cache.jobs() == [Job("7", "carol")]
    assert slurm.reads.count("jobs") == 2


def test_a_reason_or_a_node_that_changed_reads_the_full_list_in_the_same_poll() -> None:
    slurm, clock = FakeSlurm(), Clock()
    cache = NodeCache(slurm, ttl=60.0, clock=clock)
    cache.nodes()
    slurm.set(0, state=NodeState.DRAINED, reason="bad DIMM", reason_time=2e9)
    clock.now += 2.0
    polled = cache.nodes()
    assert slurm.reads == ["nodes", "states", "nodes"]
    assert (polled[0].reason, polled[0].reason_time) == ("bad DIMM", 2e9)

    slurm.current.append(Node("gpu04", NodeState.IDLE, gpu_count=8))
    clock.now += 2.0
    assert [n.name for n in cache.nodes()][-1] == "gpu04"
    assert slurm.reads[-2:] == ["states", "nodes"]


def test_a_clock_that_went_back_reads_the_full_list() -> None:
    slurm, clock = FakeSlurm(), Clock()
    cache = NodeCache(slurm, ttl=60.0, clock=clock)
    cache.nodes()
    clock.now -= 5.0
    cache.nodes()
    assert slurm.reads == ["nodes", "nodes"]


def test_a_state_read_that_trips_is_one_error_and_the_next_poll_starts_over() -> None:
    slurm, clock = FakeSlurm(), Clock()
    cache = NodeCache(slurm, ttl=60.0, clock=clock)
    cache.nodes()
    slurm.broken = True
    with pytest.raises(FactoryctlError) as info:
        cache.nodes()
    assert info.value.status is ExitStatus.SCHEDULER_ERROR
    assert info.value.message == (
        "scheduler fake: node states not understood (KeyError: 'StateComplete')"
    )
    slurm.broken = False
    clock.now += 1.0
    cache.nodes()
    assert slurm.reads == ["nodes", "states", "nodes"]  # nothing merged onto the old list


def test_only_a_backend_that_reads_states_alone_is_cached() -> None:
    slurm = FakeSlurm()
    assert isinstance(node_cache(slurm), NodeCache)
    assert node_cache(slurm, ttl=0) is slurm

    class NoStates:
        def nodes(self) -> list[Node]:
            return []

        def jobs(self) -> list[Job]:
            return []

    plain = checked(NoStates())  # type: ignore[arg-type]
    assert node_cache(plain) is plain  # slurmrestd, the demo: every poll reads everything
    gated = node_cache(checked(slurm))  # type: ignore[arg-type]
    assert isinstance(gated, NodeCache) and gated.name == "fake"


# -- wired where the views open their scheduler, never for actions -------------------------
def slurm_from_fixtures(calls: list[str]) -> SlurmCLI:
    outputs = {
        # The grouped node list (slurm_sinfo) and, where it is not enough, the JSON one.
        "sinfo --noheader --all -O": (FIXTURES / "grouped_sinfo_24.11.txt").read_text(),
        "scontrol -o show node": (FIXTURES / "grouped_scontrol_24.11.txt").read_text(),
        "scontrol --json show node": (FIXTURES / "scontrol_node_24.11.json").read_text(),
        "squeue --json": (FIXTURES / "squeue_24.11.json").read_text(),
    }

    def runner(
        argv: Sequence[str], env: Mapping[str, str] | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        calls.append(" ".join(argv))
        for command, stdout in outputs.items():
            if " ".join(argv).startswith(command):
                return subprocess.CompletedProcess(list(argv), 0, stdout, "")
        return subprocess.CompletedProcess(list(argv), 1, "", f"unexpected {argv}")

    # The job fixture is every job's JSON (the split job read: test_slurm_squeue).
    return SlurmCLI(runner=runner, split_jobs=False)


def environment(tmp_path: Path, scheduler: SlurmCLI) -> Environment:
    env = Environment(
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        stdin_isatty=False,
        environ={"HOME": str(tmp_path), "USER": "dave"},
    )
    env.scheduler_factory = lambda _env: scheduler  # type: ignore[assignment,return-value]
    return env


def test_the_views_read_through_the_cache_and_actions_read_slurm_itself(tmp_path: Path) -> None:
    env = environment(tmp_path, slurm_from_fixtures([]))
    env.load(None)
    env.settings["scheduler"]["type"] = "slurm"
    source = env.source()
    view = source.scheduler  # type: ignore[attr-defined]
    assert isinstance(view, NodeCache)
    assert view.inner is env.scheduler()  # the checked scheduler actions get: uncached


def test_nodes_command_reads_no_jobs(tmp_path: Path) -> None:
    calls: list[str] = []
    env = environment(tmp_path, slurm_from_fixtures(calls))
    status = main(["--scheduler", "slurm", "nodes", "-o", "json"], env)
    assert status == 0, env.stderr.getvalue()  # type: ignore[attr-defined]
    # No squeue: the nodes view shows no job. No JSON: the grouped list is the same list.
    assert [c.split()[:3] for c in calls] == [
        ["sinfo", "--noheader", "--all"],
        ["scontrol", "-o", "show"],
    ]


# -- a plan reads the running jobs alone ---------------------------------------------------
def test_running_jobs_asks_squeue_for_them_and_keeps_only_running_ones() -> None:
    calls: list[str] = []
    slurm = slurm_from_fixtures(calls)
    every = slurm.jobs()
    running = slurm.running_jobs()
    assert calls[-1] == "squeue --json --states=RUNNING,SUSPENDED,COMPLETING,CONFIGURING"
    # The fixture holds finished and pending jobs too: a Slurm that ignores --states
    # (22.05) still yields the running ones alone.
    assert any(j.state is not JobState.RUNNING for j in every)
    assert running == [j for j in every if j.state is JobState.RUNNING] and running


def test_a_plan_reads_running_jobs_through_the_gate(tmp_path: Path) -> None:
    calls: list[str] = []
    env = environment(tmp_path, slurm_from_fixtures(calls))
    status = main(
        ["--scheduler", "slurm", "drain", "gpu01", "--dry-run", "--reason", "x", "-o", "json"],
        env,
    )
    assert status == 0, env.stderr.getvalue()  # type: ignore[attr-defined]
    assert [c.split()[:3] for c in calls] == [
        ["sinfo", "--noheader", "--all"],
        ["scontrol", "-o", "show"],
        ["squeue", "--json", "--states=RUNNING,SUSPENDED,COMPLETING,CONFIGURING"],
    ]

    class NoRunningJobs:  # a backend with jobs() alone: the gate falls back to it
        name = "plain"

        def jobs(self) -> list[Job]:
            return [Job("7", "carol"), Job("8", "dave", state=JobState.PENDING)]

    assert [j.job_id for j in checked(NoRunningJobs()).running_jobs()] == ["7", "8"]  # type: ignore[arg-type]
