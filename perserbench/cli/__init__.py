"""The ``perserbench`` command line.

One Typer app; each command group lives in its own module under ``perserbench.cli`` and
registers itself on :data:`app` when imported. User errors (:class:`PerserbenchError`)
become one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from perserbench.errors import PerserbenchError

app = typer.Typer(
    name="perserbench",
    help="Benchmark for listener-personalized speech emotion recognition.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Command modules; each does `from perserbench.cli import app` and adds its commands.
_COMMAND_MODULES = (
    "perserbench.cli.run",
    "perserbench.cli.data",
    "perserbench.cli.features",
    "perserbench.cli.compare",
    "perserbench.cli.stats",
    "perserbench.cli.bench",
    "perserbench.cli.leaderboard",
    "perserbench.cli.new_method",
)

for _module in _COMMAND_MODULES:
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as _exc:  # a command group not written yet
        if _exc.name != _module:
            raise


def main() -> None:
    try:
        app()
    except PerserbenchError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
