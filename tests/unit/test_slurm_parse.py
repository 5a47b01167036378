"""Slurm's states, GRES strings and ``scontrol -o`` text into the domain (22.05.8 scene 2).

Every generation's JSON is tested in test_slurm_json.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import JobState, NodeState
from factoryctl.scheduler.slurm_json import parse_jobs, parse_nodes
from factoryctl.scheduler.slurm_parse import (
    gpu_count,
    gpu_indices,
    map_node_state,
    parse_reservations,
    parse_scontrol_jobs,
    parse_scontrol_line,
    parse_scontrol_nodes,
    split_state,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


def _read(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize(
    ("compound", "expected"),
    [
        ("IDLE", NodeState.IDLE),
        ("MIXED", NodeState.MIXED),
        ("ALLOCATED", NodeState.ALLOCATED),
        ("MIXED+DRAIN", NodeState.DRAINING),
        ("ALLOCATED+DRAIN", NodeState.DRAINING),
        ("IDLE+DRAIN", NodeState.DRAINED),
        ("IDLE+DRAIN+COMPLETING", NodeState.DRAINING),
        ("DOWN+DRAIN+REBOOT_ISSUED", NodeState.REBOOTING),
        ("IDLE+DRAIN+REBOOT_REQUESTED", NodeState.REBOOTING),
        ("MIXED+REBOOT_REQUESTED", NodeState.REBOOTING),
        ("IDLE+MAINTENANCE+RESERVED", NodeState.MAINT),
        ("IDLE+DRAIN+MAINTENANCE+RESERVED", NodeState.DRAINED),
        ("DOWN", NodeState.DOWN),
        ("DOWN+DRAIN", NodeState.DOWN),
        ("IDLE+NOT_RESPONDING", NodeState.IDLE),
        ("IDLE+FAIL", NodeState.DRAINED),
        ("FUTURE", NodeState.UNKNOWN),
    ],
)
def test_compound_states_map_to_operator_states(compound: str, expected: NodeState) -> None:
    base, flags = split_state(compound)
    assert map_node_state(base, flags) is expected


def test_gres_strings() -> None:
    assert gpu_count("gpu:8") == 8
    assert gpu_count("gpu:h100:8(S:0-1)") == 8
    assert gpu_count("gpu:a100:4,gpu:h100:4") == 8
    assert gpu_count("(null)") == 0
    assert gpu_indices("gpu:2(IDX:0-1)") == (0, 1)
    assert gpu_indices("gpu:h100:3(IDX:0,2-3)") == (0, 2, 3)
    assert gpu_indices("gpu:0") == ()


def test_sinfo_json_while_draining() -> None:
    nodes = {n.name: n for n in parse_nodes(_read("sinfo_drain_scene2_22.05.json"), "sinfo --json")}
    assert nodes["gpu01"].state is NodeState.DRAINING  # MIXED+DRAIN with a 2-GPU job
    assert nodes["gpu01"].reason == "factoryctl: disk swap (alice)"
    assert nodes["gpu01"].gpus_allocated == 2 and nodes["gpu01"].gpu_count == 8
    assert nodes["gpu02"].state is NodeState.MIXED
    assert nodes["gpu04"].state is NodeState.DRAINED
    assert nodes["gpu04"].reason == "NHC: check_gpu failed"
    assert nodes["gpu04"].reason_time is not None
    assert nodes["gpu01"].partitions == ("gpu",)


def test_sinfo_json_rebooting() -> None:
    nodes = {
        n.name: n for n in parse_nodes(_read("sinfo_reboot_scene2_22.05.json"), "sinfo --json")
    }
    assert nodes["gpu02"].state is NodeState.REBOOTING
    assert nodes["gpu02"].reason.startswith("factoryctl: firmware (bob)")
    assert nodes["gpu01"].state is NodeState.DRAINED  # drained inside a MAINT reservation
    assert nodes["gpu03"].state is NodeState.IDLE


def test_squeue_json_allocations_with_gpu_indices() -> None:
    jobs = {j.job_id: j for j in parse_jobs(_read("squeue_scene2_22.05.json"), "squeue --json")}
    assert jobs["1"].state is JobState.RUNNING
    assert jobs["1"].user == "root" and jobs["1"].name == "train-a"
    assert [(a.node, a.gpu_indices) for a in jobs["1"].allocations] == [("gpu01", (0, 1))]
    assert jobs["2"].nodes == ("gpu02", "gpu03") and jobs["2"].gpu_count == 16
    assert jobs["3"].state is JobState.PENDING and jobs["3"].allocations == ()
    assert jobs["1"].start_time is not None and jobs["1"].end_time is None


def test_scontrol_jobs_agree_with_squeue() -> None:
    from_squeue = {
        j.job_id: j.allocations
        for j in parse_jobs(_read("squeue_scene2_22.05.json"), "squeue --json")
    }
    from_scontrol = {
        j.job_id: j.allocations for j in parse_scontrol_jobs(_read("show_job_scene2_22.05.txt"))
    }
    assert from_scontrol == from_squeue


def test_scontrol_nodes_reason_runs_to_end_of_line() -> None:
    nodes = {n.name: n for n in parse_scontrol_nodes(_read("show_node_reboot_scene2_22.05.txt"))}
    assert nodes["gpu02"].reason == "factoryctl: firmware (bob) : reboot issued"
    assert nodes["gpu02"].state is NodeState.REBOOTING
    assert nodes["gpu04"].reason == "NHC: check_gpu failed"
    line = (
        "NodeName=n1 State=IDLE+DRAIN OS=Linux 6.1 #1 SMP Reason=a=b; c [root@2026-01-01T00:00:00]"
    )
    fields = parse_scontrol_line(line)
    assert fields["Reason"] == "a=b; c"
    assert fields["OS"] == "Linux 6.1 #1 SMP"


def test_reservations() -> None:
    (res,) = parse_reservations(_read("show_reservation_scene2_22.05.txt"))
    assert res.name == "maint_test" and res.nodes == ("gpu01",)
    assert res.maintenance and res.state == "ACTIVE"
    assert res.end_time - res.start_time == 3600
    assert parse_reservations("No reservations in the system\n") == []


def test_garbage_json_is_a_scheduler_error() -> None:
    with pytest.raises(FactoryctlError) as info:
        parse_nodes("sinfo: error: something\n", "sinfo --json")
    assert info.value.status is ExitStatus.SCHEDULER_ERROR


def test_json_errors_with_no_data_mean_unreachable() -> None:
    text = '{"errors": [{"error": "Unspecified error", "errno": -1}], "nodes": []}'
    with pytest.raises(FactoryctlError) as info:
        parse_nodes(text, "sinfo --json")
    assert info.value.status is ExitStatus.SCHEDULER_UNREACHABLE


FLAGS = [
    "DRAIN",
    "COMPLETING",
    "MAINTENANCE",
    "RESERVED",
    "REBOOT_ISSUED",
    "REBOOT_REQUESTED",
    "NOT_RESPONDING",
    "POWER_DOWN",
    "CLOUD",
    "FAIL",
    "PLANNED",
]


def test_every_flag_combination_maps_sensibly() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    @given(
        st.sampled_from(
            ["idle", "mixed", "allocated", "down", "completing", "future", "unknown", "error"]
        ),
        st.lists(st.sampled_from(FLAGS), unique=True, max_size=5),
    )
    def check(base: str, flags: list[str]) -> None:
        state = map_node_state(base, flags)
        if "DRAIN" in flags or "FAIL" in flags or "REBOOT_ISSUED" in flags:
            # Whatever else is going on, a drained or rebooting node is never "in service".
            assert not state.in_service
        if {"REBOOT_ISSUED", "REBOOT_REQUESTED"} & set(flags):
            assert state is NodeState.REBOOTING
        if state is NodeState.DRAINING:
            assert base in ("mixed", "allocated", "completing") or "COMPLETING" in flags

    check()
