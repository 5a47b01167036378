"""The ``factoryctl`` command group. Subcommands load lazily so ``--help`` stays fast.

Errors a user can act on are one line on stderr with an ``ExitStatus``; data goes to
stdout. Nothing here imports textual or httpx: commands import them when they run.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, NamedTuple

import click

from factoryctl import __version__
from factoryctl.cli.env import Environment
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.formats import OUTPUT_FORMATS


class Entry(NamedTuple):
    target: str  # "module:attribute", imported when the command runs (or its --help shows)
    summary: str  # the first paragraph of the command's help, for the group's --help


# Adding a command is one entry here. The summaries let `factoryctl --help` list every
# command without importing its module (click would import each to ask for its short
# help); a test checks each summary against its command's help.
COMMANDS: dict[str, Entry] = {
    "nodes": Entry(
        "factoryctl.cli.inventory:nodes",
        "List nodes: state, reason, GPUs allocated/total, utilization and power.",
    ),
    "node": Entry(
        "factoryctl.cli.inventory:node",
        "Show one node: state and reason, each GPU, the processes on its GPUs (PID, user, "
        "job, command, device memory) and the jobs running on it.",
    ),
    "gpus": Entry(
        "factoryctl.cli.inventory:gpus",
        "List GPUs with their job, utilization, memory, power and temperature.",
    ),
    "jobs": Entry(
        "factoryctl.cli.inventory:jobs",
        "List jobs: GPUs held, mean utilization, idle GPUs and energy in kWh.",
    ),
    "job": Entry(
        "factoryctl.cli.inventory:job",
        "Show one job: its allocation, occupancy, energy and each of its GPUs.",
    ),
    "demo": Entry(
        "factoryctl.cli.demo:demo",
        "Open the console on a simulated factory (no Prometheus or Slurm needed).",
    ),
    "top": Entry(
        "factoryctl.cli.top:top",
        "Open the full-screen console on the configured Prometheus and scheduler.",
    ),
    "triage": Entry(
        "factoryctl.cli.triage:triage_command",
        "What is broken, which jobs and users it hurts, and what to do about it.",
    ),
    "scheduler-exporter": Entry(
        "factoryctl.cli.scheduler_exporter:scheduler_exporter",
        "Serve the scheduler's node states, GPU counts and running jobs' GPUs to Prometheus.",
    ),
    "energy": Entry(
        "factoryctl.cli.energy:energy",
        "Energy by job, user, account or partition between --since and --until (kWh).",
    ),
    "job-epilog": Entry(
        "factoryctl.cli.job_epilog:job_epilog",
        "Record a finished job's GPU energy in its Slurm AdminComment (slurmctld epilog).",
    ),
    "completion": Entry(
        "factoryctl.cli.completion:completion",
        "Print a shell completion script.",
    ),
    "drain": Entry(
        "factoryctl.cli.actions:drain",
        "Drain NODES (a hostlist): running jobs finish, no new jobs start.",
    ),
    "resume": Entry(
        "factoryctl.cli.actions:resume",
        "Resume NODES that factoryctl drained (others need --force).",
    ),
    "reboot": Entry(
        "factoryctl.cli.actions:reboot",
        "Reboot NODES through Slurm (RebootProgram) once they are idle.",
    ),
    "maintenance": Entry(
        "factoryctl.cli.maintenance:maintenance",
        "Maintenance windows: Slurm MAINT reservations (Flags=MAINT,IGNORE_JOBS).",
    ),
    "audit": Entry(
        "factoryctl.cli.maintenance:audit",
        "The audit log: who changed what, when, why, and how it ended.",
    ),
    "rollout": Entry(
        "factoryctl.cli.rollout:rollout",
        "Maintenance campaigns: drain, work, reboot, check and resume nodes in waves.",
    ),
}


def _set(apply: Any) -> Any:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False:
            env = ctx.find_object(Environment)
            if env is not None:
                apply(env, value)

    return callback


def _global_options() -> list[click.Option]:
    """Global options that also work after the subcommand (``factoryctl jobs -o json``)."""
    return [
        click.Option(
            ["-o", "--output"],
            type=click.Choice(OUTPUT_FORMATS),
            expose_value=False,
            help="Output format.",
            callback=_set(lambda env, v: setattr(env, "output", v)),
        ),
        click.Option(
            ["--prometheus"],
            metavar="URL",
            expose_value=False,
            help="Prometheus (or compatible) base URL.",
            callback=_set(lambda env, v: env.settings["prometheus"].__setitem__("url", v)),
        ),
        click.Option(
            ["--schema"],
            type=click.Choice(["auto", "native", "dcgm"]),
            expose_value=False,
            help="GPU metric schema in Prometheus (default: detect).",
            callback=_set(lambda env, v: env.settings["prometheus"].__setitem__("schema", v)),
        ),
        click.Option(
            ["--demo"],
            is_flag=True,
            default=None,
            expose_value=False,
            help="Use the built-in simulated factory.",
            callback=_set(lambda env, v: setattr(env, "demo", True)),
        ),
        click.Option(
            ["--no-color"],
            is_flag=True,
            default=None,
            expose_value=False,
            help="Never color the output.",
            callback=_set(lambda env, v: setattr(env, "color", False)),
        ),
    ]


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module_name, attr = COMMANDS[cmd_name].target.split(":")
            command = getattr(importlib.import_module(module_name), attr)
            assert isinstance(command, click.Command)
            if not isinstance(command, click.Group) and not getattr(
                command, "_globals_added", False
            ):
                taken = {opt for p in command.params for opt in getattr(p, "opts", ())}
                command.params.extend(o for o in _global_options() if not taken & set(o.opts))
                command._globals_added = True  # type: ignore[attr-defined]
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own listing, of stand-in commands that carry each summary as their help:
        the same text at every terminal width, and no command module imported."""
        listing = click.Group(
            commands=[click.Command(name, help=entry.summary) for name, entry in COMMANDS.items()]
        )
        for name in super().list_commands(ctx):
            command = super().get_command(ctx, name)
            if command is not None:
                listing.add_command(command, name)
        click.Group.format_commands(listing, ctx, formatter)


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.option("--prometheus", metavar="URL", help="Prometheus (or compatible) base URL.")
@click.option(
    "--scheduler",
    type=click.Choice(["slurm", "slurmrestd", "none"]),
    help="Scheduler backend for job allocations and actions.",
)
@click.option(
    "--schema",
    type=click.Choice(["auto", "native", "dcgm"]),
    help="GPU metric schema in Prometheus (default: detect).",
)
@click.option("--config", "config_path", metavar="FILE", help="Config file (TOML).")
@click.option("-o", "--output", type=click.Choice(OUTPUT_FORMATS), help="Output format.")
@click.option("--no-color", is_flag=True, help="Never color the output.")
@click.option("--demo", is_flag=True, help="Use the built-in simulated factory.")
@click.version_option(__version__, "--version", prog_name="factoryctl")
@click.pass_context
def cli(
    ctx: click.Context,
    prometheus: str | None,
    scheduler: str | None,
    schema: str | None,
    config_path: str | None,
    output: str | None,
    no_color: bool,
    demo: bool,
) -> None:
    """Operator console for AI factories: GPUs, jobs and energy from Prometheus and Slurm.

    Without a Prometheus URL, nodes, node, jobs, job, triage and top read the scheduler
    alone: GPU telemetry (utilization, power, energy) shows as n/a.
    """
    env = ctx.ensure_object(Environment)
    env.load(config_path)
    if prometheus:
        env.settings["prometheus"]["url"] = prometheus
    if scheduler:
        env.settings["scheduler"]["type"] = scheduler
    if schema:
        env.settings["prometheus"]["schema"] = schema
    env.demo = demo
    env.output = output or env.settings["output"]["format"]
    if env.output not in OUTPUT_FORMATS:
        raise FactoryctlError(
            f"invalid output format {env.output!r} (from config or environment); "
            f"choose one of {', '.join(OUTPUT_FORMATS)}",
            ExitStatus.CONFIG,
        )
    env.color = not no_color and bool(env.settings["output"]["color"])


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None, env: Environment | None = None) -> int:
    """Run the CLI and return its exit status (``sys.exit(main())`` in the entry point)."""
    env = env if env is not None else Environment()
    try:
        result: Any = cli.main(args=argv, prog_name="factoryctl", standalone_mode=False, obj=env)
    except FactoryctlError as err:
        env.stderr.write(f"factoryctl: error: {_one_line(err.message)}\n")
        return int(err.status)
    except click.UsageError as err:
        # Name the subcommand ("factoryctl jobs: ...") but not the group twice.
        path = err.ctx.command_path if err.ctx is not None else ""
        where = f"{path.removeprefix('factoryctl').strip()}: " if " " in path else ""
        env.stderr.write(f"factoryctl: error: {where}{_one_line(err.format_message())}\n")
        return int(ExitStatus.USAGE)
    except click.ClickException as err:
        env.stderr.write(f"factoryctl: error: {_one_line(err.format_message())}\n")
        return int(ExitStatus.ERROR)
    except (click.Abort, KeyboardInterrupt):
        env.stderr.write("factoryctl: interrupted\n")
        return int(ExitStatus.INTERRUPTED)
    except BrokenPipeError:
        # `factoryctl jobs | head` closed the pipe: not an error worth a traceback.
        sys.stderr = None
        return int(ExitStatus.OK)
    if isinstance(result, int):
        return result
    return int(ExitStatus.OK)


def entry() -> None:
    sys.exit(main())
