"""Every generation's JSON into the domain, from outputs recorded on real clusters.

The fixtures were recorded by tests/fixtures/slurm/record.py on the lab's Slurm 22.05
(Debian 12), 24.11 (Debian 13) and 26.05 (forky) with one scene: job train-a holds 2
GPUs of gpu01, job multi-b 4 GPUs on each of gpu02 and gpu03, pending-c waits for gpu01;
gpu03 is drained under its job (DRAINING), gpu04 is drained and in a maintenance
reservation. Each source of the same scene must map to the same nodes and jobs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factoryctl.errors import ExitStatus
from factoryctl.model import JobState, NodeState
from factoryctl.scheduler.slurm_json import (
    SlurmShapeError,
    parse_jobs,
    parse_nodes,
    parse_reservations,
    shape_of,
)
from factoryctl.scheduler.slurm_parse import (
    parse_reservations as parse_reservation_text,
)
from factoryctl.scheduler.slurm_parse import (
    parse_scontrol_jobs,
    parse_scontrol_nodes,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
GENERATIONS = ("22.05", "24.11", "26.05")


def _read(name: str) -> str:
    return (FIXTURES / name).read_text()


def _node_sources() -> list[str]:
    names = ["sinfo_22.05.json"]
    names += [f"scontrol_node_{v}.json" for v in GENERATIONS[1:]]
    names += sorted(p.name for p in FIXTURES.glob("rest_v*_nodes_*.json"))
    return names


def _job_sources() -> list[str]:
    names = [f"squeue_{v}.json" for v in GENERATIONS]
    names += [f"scontrol_job_{v}.json" for v in GENERATIONS[1:]]
    names += sorted(p.name for p in FIXTURES.glob("rest_v*_jobs_*.json"))
    return names


def test_fixtures_cover_three_generations() -> None:
    releases = {shape_of(json.loads(_read(n)), n).release[:5] for n in _job_sources()}
    assert {"22.05", "24.11", "26.05"} <= releases


@pytest.mark.parametrize("name", _node_sources())
def test_nodes_of_the_scene(name: str) -> None:
    nodes = {n.name: n for n in parse_nodes(_read(name), name)}
    assert set(nodes) == {"gpu01", "gpu02", "gpu03", "gpu04"}
    assert nodes["gpu01"].state is NodeState.MIXED
    assert (nodes["gpu01"].gpu_count, nodes["gpu01"].gpus_allocated) == (4, 2)
    assert nodes["gpu03"].state is NodeState.DRAINING
    assert nodes["gpu03"].reason == "xid 79 on gpu 2"
    assert nodes["gpu03"].gpus_allocated == 4
    assert nodes["gpu04"].state is NodeState.DRAINED
    assert nodes["gpu04"].reason == "bad DIMM; see dmesg"
    assert nodes["gpu04"].reason_time is not None and nodes["gpu04"].reason_time > 1.7e9
    assert nodes["gpu01"].reason_time is None
    assert all(n.partitions == ("gpu",) for n in nodes.values())


@pytest.mark.parametrize("name", _job_sources())
def test_jobs_of_the_scene(name: str) -> None:
    jobs = {j.name: j for j in parse_jobs(_read(name), name)}
    a, b, c = jobs["train-a"], jobs["multi-b"], jobs["pending-c"]
    assert a.state is JobState.RUNNING and a.user == "root"
    assert [(x.node, x.gpu_indices) for x in a.allocations] == [("gpu01", (0, 1))]
    assert [(x.node, x.gpu_indices) for x in b.allocations] == [
        ("gpu02", (0, 1, 2, 3)),
        ("gpu03", (0, 1, 2, 3)),
    ]
    assert b.gpu_count == 8 and b.partition == "gpu"
    assert a.start_time is not None and a.start_time > 1.7e9 and a.end_time is None
    assert c.state is JobState.PENDING and c.allocations == () and c.start_time is None


@pytest.mark.parametrize("version", GENERATIONS)
def test_scontrol_text_agrees_with_json(version: str) -> None:
    """The fallback without JSON: same nodes (GPUs allocated included) and allocations."""
    json_name = "sinfo_22.05.json" if version == "22.05" else f"scontrol_node_{version}.json"
    from_json = {n.name: n for n in parse_nodes(_read(json_name), json_name)}
    from_text = {n.name: n for n in parse_scontrol_nodes(_read(f"show_node_{version}.txt"))}
    for name, node in from_json.items():
        text = from_text[name]
        assert (text.state, text.reason, text.gpu_count, text.gpus_allocated) == (
            node.state,
            node.reason,
            node.gpu_count,
            node.gpus_allocated,
        ), name
    jobs_json = {j.job_id: j.allocations for j in parse_jobs(_read(f"squeue_{version}.json"), "")}
    jobs_text = {
        j.job_id: j.allocations for j in parse_scontrol_jobs(_read(f"show_job_{version}.txt"))
    }
    assert jobs_text == jobs_json


@pytest.mark.parametrize(
    "name",
    [f"scontrol_reservation_{v}.json" for v in GENERATIONS[1:]]
    + sorted(p.name for p in FIXTURES.glob("rest_v*_reservations_*.json")),
)
def test_reservations_of_the_scene(name: str) -> None:
    (res,) = parse_reservations(_read(name), name)
    version = name.rsplit("_", 1)[1].removesuffix(".json")
    (text,) = parse_reservation_text(_read(f"show_reservation_{version}.txt"))
    assert res.name == "maint-gpu04" and res.nodes == ("gpu04",) and res.maintenance
    assert res.users == ("root",)
    assert (res.start_time, res.end_time) == (text.start_time, text.end_time)


@pytest.mark.parametrize(
    "name",
    [
        "sinfo_reboot_22.05.json",
        "scontrol_node_reboot_24.11.json",
        "scontrol_node_reboot_26.05.json",
    ],
)
def test_a_node_rebooting(name: str) -> None:
    """``scontrol reboot nextstate=RESUME`` on an idle, drained node, before it is back."""
    (node,) = [n for n in parse_nodes(_read(name), name) if n.name == "gpu04"]
    assert node.state is NodeState.REBOOTING


def test_grouped_sinfo_is_a_loud_error() -> None:
    """24.11's sinfo --json lists node groups: never read as 'no nodes'."""
    with pytest.raises(SlurmShapeError) as info:
        parse_nodes(_read("sinfo_24.11.json"), "sinfo --json")
    message = str(info.value)
    assert info.value.status is ExitStatus.SCHEDULER_ERROR
    assert "24.11.5" in message and "v0.0.42" in message and "'sinfo'" in message
    assert "\n" not in message


def _mutated(name: str, change) -> str:  # type: ignore[no-untyped-def]
    doc = json.loads(_read(name))
    change(doc)
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("name", "change", "field"),
    [
        ("scontrol_node_26.05.json", lambda d: d["nodes"][0].pop("state"), "'state'"),
        ("scontrol_node_24.11.json", lambda d: d["nodes"][0].update(state={"x": 1}), "'state'"),
        ("squeue_24.11.json", lambda d: d["jobs"][0].update(start_time="soon"), "'start_time'"),
        ("squeue_26.05.json", lambda d: d["jobs"][0].pop("job_state"), "'job_state'"),
        ("squeue_22.05.json", lambda d: d["jobs"][0].update(job_state=["RUNNING"]), "'job_state'"),
        ("sinfo_22.05.json", lambda d: d.pop("nodes"), "'nodes'"),
        ("scontrol_node_24.11.json", lambda d: d.update(nodes=[]), "no nodes"),
        ("squeue_24.11.json", lambda d: d.pop("meta"), "'meta'"),
        (
            "squeue_24.11.json",
            lambda d: d["meta"]["plugin"].update(data_parser="data_parser/next"),
            "data parser",
        ),
    ],
)
def test_unknown_shapes_are_one_line_scheduler_errors(name: str, change, field: str) -> None:  # type: ignore[no-untyped-def]
    text = _mutated(name, change)
    parse = parse_nodes if "node" in name or "sinfo" in name else parse_jobs
    with pytest.raises(SlurmShapeError) as info:
        parse(text, name)
    message = str(info.value)
    assert info.value.status is ExitStatus.SCHEDULER_ERROR == 12
    assert field in message and "\n" not in message
    if "meta" in json.loads(text):
        assert "Slurm" in message


def test_a_newer_parser_with_the_same_shape_is_read() -> None:
    """A parser newer than any recorded (a later Slurm) is read field by field."""
    text = _mutated(
        "squeue_26.05.json", lambda d: d["meta"]["plugin"].update(data_parser="data_parser/v0.0.47")
    )
    assert {j.name for j in parse_jobs(text, "squeue --json")} >= {"train-a", "multi-b"}
