"""Generate man pages from the click command tree: ``python -m factoryctl.cli.manpage DIR``.

Generated, not hand-kept, so they cannot drift from ``--help``; a test regenerates them
and fails when the committed pages differ.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from factoryctl import __version__
from factoryctl.cli import manual
from factoryctl.errors import EXIT_STATUS_HELP


def esc(text: str) -> str:
    """Escape for roff: backslashes, hyphens in options, and leading control characters."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in out.split("\n")
    )


def _commands(
    group: click.Group, ctx: click.Context
) -> Iterator[tuple[str, click.Command, click.Context]]:
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        sub = click.Context(cmd, info_name=name, parent=ctx)
        yield sub.command_path, cmd, sub
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, sub)


def _options(cmd: click.Command, ctx: click.Context) -> list[str]:
    lines = []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        flags, help_text = record
        lines += [".TP", f"\\fB{esc(flags)}\\fR", esc(help_text) or "."]
    return lines


def _paragraphs(text: str) -> list[str]:
    lines: list[str] = []
    for block in text.split("\n\n"):
        block = block.strip()
        if not block:
            continue
        if block.startswith("\b"):
            lines += [".PP", ".nf", esc(block.lstrip("\b").strip("\n")), ".fi"]
        else:
            lines += [".PP", esc(" ".join(block.split()))]
    return lines


def render(
    path: str, cmd: click.Command, ctx: click.Context, children: list[tuple[str, click.Command]]
) -> str:
    name = path.replace(" ", "-")
    short = cmd.get_short_help_str(limit=80)
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    out = [
        f'.TH {name.upper()} 1 "" "factoryctl {__version__}" "factoryctl manual"',
        ".SH NAME",
        f"{esc(name)} \\- {esc(short)}",
        ".SH SYNOPSIS",
        f"\\fB{esc(path)}\\fR {esc(usage)}",
        ".SH DESCRIPTION",
        # cleandoc: Python 3.13 strips a docstring's indentation when it compiles it, and
        # 3.11 does not; the pages must not depend on the Python that generates them.
        *_paragraphs(inspect.cleandoc(cmd.help or short)),
    ]
    options = _options(cmd, ctx)
    if options:
        out += [".SH OPTIONS", *options]
    if children:
        out += [".SH COMMANDS"]
        for child_path, child in children:
            out += [
                ".TP",
                f"\\fB{esc(child_path.split()[-1])}\\fR",
                f"{esc(child.get_short_help_str(limit=100))}",
            ]
            out += [f"See \\fB{esc(child_path.replace(' ', '-'))}\\fR(1)."]
    examples = manual.EXAMPLES.get(path, [])
    if examples:
        out += [".SH EXAMPLES"]
        for what, command in examples:
            out += [".PP", esc(what), ".RS", ".nf", esc(command), ".fi", ".RE"]
    out += [".SH EXIT STATUS"]
    for status, text in EXIT_STATUS_HELP.items():
        out += [".TP", f"\\fB{int(status)}\\fR", esc(text)]
    if path == "factoryctl":
        out += [".SH ENVIRONMENT"]
        for var, text in manual.ENVIRONMENT:
            out += [".TP", f"\\fB{esc(var)}\\fR", esc(text)]
        out += [".SH FILES"]
        for file, text in manual.FILES:
            out += [".TP", f"\\fI{esc(file)}\\fR", esc(text)]
    see = ["factoryctl(1)"] if path != "factoryctl" else []
    see += [f"{p.replace(' ', '-')}(1)" for p, _ in children]
    see += ["factoryctl-exporter(8)", "scontrol(1)", "prometheus(1)"]
    out += [
        ".SH SEE ALSO",
        ", ".join(f"\\fB{esc(s.split('(')[0])}\\fR({s.split('(')[1]}" for s in see),
    ]
    return "\n".join(out) + "\n"


def generate() -> dict[str, str]:
    """file name -> page text, for the group and every (sub)command."""
    from factoryctl.cli.main import cli

    root = click.Context(cli, info_name="factoryctl", **cli.context_settings)
    entries = list(_commands(cli, root))
    pages = {
        "factoryctl.1": render(
            "factoryctl", cli, root, [(p, c) for p, c, _ in entries if p.count(" ") == 1]
        )
    }
    for path, cmd, ctx in entries:
        depth = path.count(" ")
        children = [
            (p, c) for p, c, _ in entries if p.startswith(path + " ") and p.count(" ") == depth + 1
        ]
        pages[path.replace(" ", "-") + ".1"] = render(path, cmd, ctx, children)
    return pages


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0] if args else "man")
    target.mkdir(parents=True, exist_ok=True)
    pages = generate()
    for stale in target.glob("factoryctl*.1"):
        if stale.name not in pages:
            stale.unlink()
    for name, text in pages.items():
        (target / name).write_text(text)
    print(f"wrote {len(pages)} man pages to {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
