"""The CLI in-process against the simulated factory: output formats, filters, bad input."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from factoryctl.errors import ExitStatus
from factoryctl.telemetry.demo import DemoSource
from factoryctl.telemetry.source import open_source
from tests.conftest import FROZEN_NOW, Result

Run = Callable[..., Result]


def _json(result: Result) -> Any:
    assert result.status == 0, result.stderr
    return json.loads(result.stdout)


def test_demo_jobs_energy_matches_simulator_truth(run_cli: Run) -> None:
    # The --demo path as the CLI builds it, with the handle kept to read the truth.
    held: dict[str, DemoSource] = {}

    def factory(env: Any) -> DemoSource:
        src = open_source(env.settings, demo=True)
        assert isinstance(src, DemoSource)
        held["src"] = src
        return src

    from factoryctl.cli.env import Environment

    out, err = io.StringIO(), io.StringIO()
    environ = {
        "HOME": "/nonexistent",
        "FACTORYCTL_DEMO_NODES": "24",
        # Faults kill jobs and lose GPUs mid-job: the measured energy must stay exact.
        "FACTORYCTL_DEMO_FAULTS_PER_NODE_DAY": "6",
    }
    env = Environment(stdout=out, stderr=err, environ=environ)
    env.source_factory = factory
    from factoryctl.cli.main import main

    assert main(["--demo", "jobs", "-o", "json", "--all"], env) == 0, err.getvalue()
    items = json.loads(out.getvalue())["items"]
    sim = held["src"].sim
    assert len(sim.node_names) == 24
    assert any(e.code == 79 for e in sim.xid_events), "the run should include a lost GPU"
    assert len(items) > 10
    checked = 0
    for item in items:
        truth = sim.true_energy(item["job_id"])
        if truth == 0:
            continue
        assert item["energy_joules"] == pytest.approx(truth, rel=1e-3), item["job_id"]
        assert item["energy_kwh"] == pytest.approx(truth / 3.6e6, rel=1e-3)
        checked += 1
    assert checked > 10


def test_nodes_table_and_state_filter(run_cli: Run, demo_source: DemoSource) -> None:
    res = run_cli("nodes", source=demo_source)
    assert res.status == 0
    lines = res.stdout.splitlines()
    assert lines[0].split()[:3] == ["NODE", "STATE", "ALLOC"]
    assert len(lines) == 1 + 16
    data = _json(run_cli("-o", "json", "nodes", "--state", "idle", source=demo_source))
    assert all(n["state"] == "idle" for n in data["items"])


def test_nodes_hostlist_and_sort(run_cli: Run, demo_source: DemoSource) -> None:
    data = _json(
        run_cli("-o", "json", "nodes", "gpu[003-005]", "--sort", "-power_watts", source=demo_source)
    )
    names = [n["name"] for n in data["items"]]
    assert sorted(names) == ["gpu003", "gpu004", "gpu005"]
    powers = [n["power_watts"] for n in data["items"]]
    assert powers == sorted(powers, reverse=True)


def test_gpus_by_node_and_job(run_cli: Run, demo_source: DemoSource) -> None:
    data = _json(run_cli("-o", "json", "gpus", "--node", "gpu002", source=demo_source))
    assert [g["gpu"] for g in data["items"]] == list(range(8))
    job = next(j for j in demo_source.snapshot().jobs if not j.state.finished)
    data = _json(run_cli("-o", "json", "gpus", "--job", job.job_id, source=demo_source))
    assert len(data["items"]) == job.gpu_count


def test_jobs_user_filter_csv(run_cli: Run, demo_source: DemoSource) -> None:
    user = demo_source.snapshot().jobs[0].user
    res = run_cli("-o", "csv", "jobs", "--user", user, source=demo_source)
    assert res.status == 0
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert rows and all(r["user"] == user for r in rows)


def test_job_and_node_detail(run_cli: Run, demo_source: DemoSource) -> None:
    job = next(j for j in demo_source.snapshot().jobs if not j.state.finished)
    data = _json(run_cli("-o", "json", "job", job.job_id, source=demo_source))
    assert data["job"]["job_id"] == job.job_id and len(data["gpus"]) == job.gpu_count
    node = job.nodes[0]
    data = _json(run_cli("-o", "json", "node", node, source=demo_source))
    assert data["node"]["name"] == node and job.job_id in [j["job_id"] for j in data["jobs"]]
    text = run_cli("node", node, source=demo_source)
    assert text.status == 0 and "State" in text.stdout


@pytest.mark.parametrize(
    ("argv", "status", "needle"),
    [
        (("node", "gpu999"), ExitStatus.NOT_FOUND, "unknown node: gpu999"),
        (("job", "424242"), ExitStatus.NOT_FOUND, "unknown job: 424242"),
        (("nodes", "gpu[001-"), ExitStatus.USAGE, "malformed hostlist"),
        (("gpus", "--node", "gpu[5-1]"), ExitStatus.USAGE, "malformed hostlist"),
        (("-o", "xml", "nodes"), ExitStatus.USAGE, "'xml' is not one of"),
        (("nodes", "--sort", "bogus"), ExitStatus.USAGE, "cannot sort by 'bogus'"),
        (("nodes", "--state", "sleeping"), ExitStatus.USAGE, "--state"),
        (("nosuchcommand",), ExitStatus.USAGE, "No such command"),
    ],
)
def test_bad_input_is_one_line_with_its_status(
    run_cli: Run, demo_source: DemoSource, argv: tuple[str, ...], status: ExitStatus, needle: str
) -> None:
    res = run_cli(*argv, source=demo_source)
    assert res.status == status
    assert needle in res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert res.stdout == ""


def test_config_errors(run_cli: Run, tmp_path: Path) -> None:
    res = run_cli("--config", str(tmp_path / "missing.toml"), "nodes")
    assert res.status == ExitStatus.CONFIG and "config file not found" in res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[output\n")
    res = run_cli("--config", str(bad), "nodes")
    assert res.status == ExitStatus.CONFIG and res.stderr.startswith(
        "factoryctl: error: invalid TOML"
    )
    res = run_cli("--scheduler", "none", "nodes")
    assert res.status == ExitStatus.CONFIG and "no data source" in res.stderr


def test_output_format_from_environment(run_cli: Run, demo_source: DemoSource) -> None:
    res = run_cli("nodes", source=demo_source, environ={"FACTORYCTL_OUTPUT_FORMAT": "json"})
    assert json.loads(res.stdout)["kind"] == "nodes"
    res = run_cli("nodes", source=demo_source, environ={"FACTORYCTL_OUTPUT_FORMAT": "yaml"})
    assert res.status == ExitStatus.CONFIG and "invalid output format" in res.stderr


def test_color_only_on_a_tty(run_cli: Run, demo_source: DemoSource) -> None:
    assert "\x1b[" in run_cli("nodes", source=demo_source, tty=True).stdout
    assert "\x1b[" not in run_cli("--no-color", "nodes", source=demo_source, tty=True).stdout
    assert (
        "\x1b["
        not in run_cli("nodes", source=demo_source, tty=True, environ={"NO_COLOR": "1"}).stdout
    )
    assert "\x1b[" not in run_cli("nodes", source=demo_source).stdout


def test_demo_once_prints_a_summary(run_cli: Run) -> None:
    res = run_cli("demo", "--nodes", "4", "--once")
    assert res.status == 0
    assert "factory  4 nodes, 32 GPUs" in res.stdout


def test_demo_takes_its_factory_from_the_demo_settings(run_cli: Run) -> None:
    # `factoryctl demo` and the global --demo read the same [demo] settings; flags win.
    res = run_cli("demo", "--once", environ={"FACTORYCTL_DEMO_NODES": "3"})
    assert res.status == 0 and "factory  3 nodes, 24 GPUs" in res.stdout
    res = run_cli("demo", "--once", "--nodes", "2", environ={"FACTORYCTL_DEMO_NODES": "3"})
    assert "factory  2 nodes, 16 GPUs" in res.stdout


def test_completion_scripts(run_cli: Run) -> None:
    assert "_FACTORYCTL_COMPLETE" in run_cli("completion", "bash").stdout
    assert "compdef" in run_cli("completion", "zsh").stdout
    assert "complete" in run_cli("completion", "fish").stdout


def test_frozen_clock_is_used(demo_source: DemoSource) -> None:
    assert demo_source.snapshot().time == FROZEN_NOW


def test_node_lists_the_processes_on_its_gpus(run_cli: Run, demo_source: DemoSource) -> None:
    snap = demo_source.snapshot()
    node = next(n.name for n in snap.nodes if n.gpus_allocated)
    busy = {g.index: g.job_ids[0] for g in snap.gpus_of_node(node) if g.job_ids}
    data = _json(run_cli("-o", "json", "node", node, source=demo_source))
    procs = data["processes"]
    assert data["processes_note"] == ""
    assert {p["gpu"]: p["job_id"] for p in procs} == busy
    assert all(p["pid"] > 0 and p["name"] and p["user"] and p["memory_bytes"] for p in procs)
    text = run_cli("node", node, source=demo_source).stdout.splitlines()
    head = next(i for i, line in enumerate(text) if line.split()[:3] == ["GPU", "PID", "USER"])
    assert text[head].split() == ["GPU", "PID", "USER", "JOB", "NAME", "MEM"]
    first = text[head + 1].split()
    assert [int(first[0]), int(first[1]), first[3]] == [
        procs[0]["gpu"],
        procs[0]["pid"],
        busy[procs[0]["gpu"]],
    ]


def test_node_without_process_telemetry_says_so(run_cli: Run, demo_source: DemoSource) -> None:
    from factoryctl.model import FactorySnapshot

    class SnapshotOnly:  # e.g. a scheduler-only source: no processes method
        def snapshot(self) -> FactorySnapshot:
            return demo_source.snapshot()

    node = demo_source.snapshot().nodes[0].name
    res = run_cli("node", node, source=SnapshotOnly())
    assert res.status == 0 and "PROCESSES  n/a" in res.stdout
    assert "note: processes: this source has no per-process telemetry" in res.stderr
    data = _json(run_cli("-o", "json", "node", node, source=SnapshotOnly()))
    assert data["processes"] is None and data["processes_note"]


@pytest.mark.parametrize("width", [40, 60, 80, 100, 200])
def test_help_listing_from_the_summaries_is_what_the_commands_would_list(width: int) -> None:
    """`factoryctl --help` lists commands from COMMANDS without importing them; the text
    must be what click writes from the commands themselves, at any terminal width."""
    import click

    from factoryctl.cli.main import COMMANDS, cli

    ctx = click.Context(cli, info_name="factoryctl", terminal_width=width, max_content_width=100)
    lazy, eager = ctx.make_formatter(), ctx.make_formatter()
    cli.format_commands(ctx, lazy)
    click.Group.format_commands(cli, ctx, eager)  # asks each (imported) command
    assert lazy.getvalue() == eager.getvalue()
    assert lazy.getvalue().count("\n") >= len(COMMANDS)


def test_each_summary_is_the_first_paragraph_of_its_commands_help() -> None:
    import click

    from factoryctl.cli.main import COMMANDS, cli

    ctx = click.Context(cli, info_name="factoryctl")
    for name, entry in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and not command.hidden and command.short_help is None
        first = " ".join((command.help or "").split("\n\n")[0].split())
        assert entry.summary == first, name


def test_demo_summary_counts_what_the_job_rows_count(demo_source: DemoSource) -> None:
    """The summary reads columns (it is the first screen at 100,000 GPUs); its figures
    are the ones the job rows and the GPU objects give."""
    from factoryctl.cli.demo import summary
    from factoryctl.formats import fmt_kwh, fmt_watts
    from factoryctl.views import job_rows

    demo_source.sim.fail_node("gpu004")  # silent GPUs: no power, no utilization
    snap = demo_source.snapshot()
    rows = job_rows(snap)
    text = summary(snap).splitlines()
    power = sum(g.power_watts for g in snap.gpus if g.power_watts is not None)
    energy = sum(r["energy_kwh"] or 0.0 for r in rows)
    assert text[2] == (
        f"power    {fmt_watts(power)} now   running jobs {len(rows)} used {fmt_kwh(energy)} so far"
    )
    idle = sorted((r for r in rows if r["idle_gpus"]), key=lambda r: -r["idle_gpus"])[:5]
    assert idle
    assert text[3] == "idle GPUs held by: " + ", ".join(
        f"job {r['job_id']} ({r['user']}, {r['idle_gpus']})" for r in idle
    )
