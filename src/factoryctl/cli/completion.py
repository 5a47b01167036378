"""``factoryctl completion SHELL``: click's own completion script for bash, zsh or fish."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from factoryctl.cli.common import get_env


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print a shell completion script.

    \b
    bash:  eval "$(factoryctl completion bash)"   (or save it in /etc/bash_completion.d/)
    zsh:   eval "$(factoryctl completion zsh)"
    fish:  factoryctl completion fish > ~/.config/fish/completions/factoryctl.fish
    """
    from factoryctl.cli.main import cli

    cls = get_completion_class(shell)
    assert cls is not None  # click.Choice restricts the shell to ones click knows
    get_env().write(cls(cli, {}, "factoryctl", "_FACTORYCTL_COMPLETE").source())
