"""What every `citygate` command's parser shares: how it is added, and its `--config`.

A module of its own so that the feature commands (cli/audit.py, cli/reports.py, cli/pac.py) can
use it without importing the package that imports them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

DEFAULT_CONFIG = "config/citygate.yaml"

Commands = argparse._SubParsersAction  # what add_subparsers() returns: a parser's list of commands
Handler = Callable[[argparse.Namespace], int]  # runs a command; returns its exit status


def command(
    commands: Commands,
    name: str,
    help: str,
    epilog: str,
    handler: Handler | None = None,
    *,
    config: bool = False,
) -> argparse.ArgumentParser:
    """Add the command `name`: `help` is its line in the list of commands, `epilog` its examples.

    The epilog is printed as written (its examples are lined up by hand). `handler` runs the
    command; a command with actions of its own (`citygate audit verify`) has none. With
    `config`, the command takes `--config`, added first so that it leads the list of options.
    """
    parser = commands.add_parser(
        name, help=help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if config:
        config_argument(parser)
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def command_with_actions(commands: Commands, name: str, help: str, epilog: str) -> Commands:
    """Add the command `name` whose actions are commands of their own (`citygate grants review`).

    Returns the list to add its actions to; which one was given is in `args.<name>_command`.
    """
    parser = command(commands, name, help, epilog)
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")


def config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help="the configuration file (default: %(default)s)"
    )


def close_directory(directory: object) -> None:
    """Close a directory backend that holds connections (LDAP); a static one has nothing to close."""
    close = getattr(directory, "close", None)
    if callable(close):
        close()
