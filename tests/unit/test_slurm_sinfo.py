"""The grouped node list (``slurm_sinfo``) on outputs recorded from real clusters of
22.05, 24.11 and 26.05 (``tests/fixtures/slurm/record.py --grouped``: sinfo, scontrol -o
and the JSON list read at one moment): it must be the JSON list, node for node."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import NodeState
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.scheduler.slurm_json import parse_nodes
from factoryctl.scheduler.slurm_sinfo import (
    SINFO_NODES_FORMAT,
    parse_grouped_nodes,
    parse_sinfo_groups,
    strict_state,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
TAGS = ("22.05", "24.11", "26.05")


def recorded(tag: str) -> tuple[str, str, str]:
    return tuple(  # type: ignore[return-value]
        (FIXTURES / f"grouped_{kind}_{tag}.{ext}").read_text()
        for kind, ext in (("sinfo", "txt"), ("scontrol", "txt"), ("json", "json"))
    )


@pytest.mark.parametrize("tag", TAGS)
def test_grouped_list_is_the_json_list_on_every_generation(tag: str) -> None:
    sinfo, scontrol, doc = recorded(tag)
    grouped = parse_grouped_nodes(sinfo, scontrol)
    assert grouped == parse_nodes(doc, "json")  # every field, in Slurm's order
    by = {n.name: n for n in grouped or ()}
    assert by["gpu01"].state is NodeState.MAINT and by["gpu01"].gpus_allocated == 3
    assert by["gpu01"].partitions == ("debug", "gpu") and by["gpu04"].partitions == ("gpu",)
    assert by["gpu02"].state is NodeState.DRAINED and by["gpu02"].reason == "PSU | t42"
    assert by["gpu03"].features == ("a100", "nvlink") and by["gpu03"].reason == ""
    assert by["gpu04"].reason == "none"  # the word, which sinfo also prints for no reason
    assert by["gpu05"].state is NodeState.REBOOTING and by["gpu05"].gpu_count == 8


def test_a_node_sinfo_does_not_list_sends_the_read_to_json() -> None:
    sinfo, scontrol, _ = recorded("24.11")
    # gpu04 in no partition: sinfo has no line for it, scontrol lists it.
    without = "".join(ln for ln in sinfo.splitlines(True) if not ln.startswith("gpu04|"))
    assert parse_grouped_nodes(without, scontrol) is None
    # A partition scontrol does not name for the node: the two reads disagree.
    moved = sinfo.replace("gpu03|gpu|", "gpu03|debug|")
    assert parse_grouped_nodes(moved, scontrol) is None


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("gpu01|gpu|idle+frobnicated|gpu:8|gpu:0|(null)|Unknown|none", "frobnicated"),
        ("gpu01|gpu|sleeping|gpu:8|gpu:0|(null)|Unknown|none", "sleeping"),
        ("gpu01|gpu|idle+?|gpu:8|gpu:0|(null)|Unknown|none", "'idle+?'"),
        ("gpu01|gpu|idle|gpu:8|gpu:0|(null)|2026-12-06T07:00:00|x", "epoch seconds"),
        ("gpu01|gpu|idle|gpu:8", "line not understood"),
        ("{", "line not understood"),
    ],
)
def test_what_we_cannot_read_is_an_error_never_unknown(line: str, needle: str) -> None:
    with pytest.raises(FactoryctlError) as info:
        parse_sinfo_groups(line + "\n")
    assert info.value.status is ExitStatus.SCHEDULER_ERROR
    assert needle in info.value.message and "\n" not in info.value.message


def test_states_map_as_the_json_states_do() -> None:
    assert strict_state("MIXED+DRAIN") is NodeState.DRAINING
    assert strict_state("idle+drain+maintenance+reserved") is NodeState.DRAINED
    assert strict_state("down+reboot_issued+not_responding") is NodeState.REBOOTING
    assert strict_state("idle+maintenance+reserved") is NodeState.MAINT
    assert strict_state("future") is NodeState.UNKNOWN  # Slurm's own word for it


def test_one_node_with_two_states_is_an_error() -> None:
    text = (
        "gpu01|debug|idle|gpu:8|gpu:0|(null)|Unknown|none\n"
        "gpu01|gpu|down|gpu:8|gpu:0|(null)|Unknown|none\n"
    )
    with pytest.raises(FactoryctlError, match="two different states"):
        parse_sinfo_groups(text)


class Slurm:
    """Answers the grouped reads from the 24.11 recording; the JSON list on request."""

    def __init__(self, sinfo: str | None = None, sinfo_error: str = "") -> None:
        self.sinfo, self.scontrol, self.doc = recorded("24.11")
        self.sinfo = self.sinfo if sinfo is None else sinfo
        self.sinfo_error = sinfo_error
        self.envs: list[Mapping[str, str] | None] = []

    def __call__(
        self, argv: Sequence[str], env: Mapping[str, str] | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        self.envs.append(env)
        if argv[:2] == ["sinfo", "--noheader"]:
            assert argv[-1] == SINFO_NODES_FORMAT
            if self.sinfo_error:
                return subprocess.CompletedProcess(list(argv), 1, "", self.sinfo_error)
            return subprocess.CompletedProcess(list(argv), 0, self.sinfo, "")
        if list(argv) == ["scontrol", "-o", "show", "node"]:
            return subprocess.CompletedProcess(list(argv), 0, self.scontrol, "")
        if list(argv) == ["scontrol", "--json", "show", "node"]:
            return subprocess.CompletedProcess(list(argv), 0, self.doc, "")
        raise AssertionError(f"unexpected {argv}")


def test_the_backend_reads_two_small_outputs_and_no_json() -> None:
    runner = Slurm()
    cli = SlurmCLI(runner=runner)
    assert cli.nodes() == parse_nodes(runner.doc, "json")
    assert [c[:3] for c in cli.calls] == [
        ["sinfo", "--noheader", "--all"],
        ["scontrol", "-o", "show"],
    ]
    # Reason times as epoch seconds, whatever the site's own SLURM_TIME_FORMAT.
    assert (runner.envs[0] or {}).get("SLURM_TIME_FORMAT") == "%s"


def test_the_backend_falls_back_to_json_where_the_reads_disagree() -> None:
    sinfo, _, _ = recorded("24.11")
    runner = Slurm(sinfo="".join(ln for ln in sinfo.splitlines(True) if "gpu04|" not in ln))
    cli = SlurmCLI(runner=runner)
    nodes = cli.nodes()
    assert nodes == parse_nodes(runner.doc, "json") and cli.grouped_fallbacks == 1
    assert [" ".join(c[:2]) for c in cli.calls][-1] == "scontrol --json"
    cli.nodes()  # tried again at the next read: the disagreement may have passed
    assert [" ".join(c[:2]) for c in cli.calls].count("sinfo --noheader") == 2


def test_a_sinfo_without_the_fields_is_asked_once() -> None:
    runner = Slurm(sinfo_error="Invalid node format specification: Timestamp")
    cli = SlurmCLI(runner=runner)
    assert cli.nodes() == cli.nodes() == parse_nodes(runner.doc, "json")
    assert [" ".join(c[:2]) for c in cli.calls] == [
        "sinfo --noheader",
        "scontrol --json",
        "scontrol --json",
    ]
    # Any other sinfo failure is the error it is, not a silent switch.
    broken = SlurmCLI(runner=Slurm(sinfo_error="slurm_load_partitions: Access denied"))
    with pytest.raises(FactoryctlError, match="Access denied"):
        broken.nodes()
