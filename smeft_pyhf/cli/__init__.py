"""The ``smeft-pyhf`` command line: a thin layer over the public API.

Every command reads its input, calls one library function and prints a table (or JSON with
``--json``). Errors that a user can cause are :class:`~smeft_pyhf.exceptions.SmeftPyhfError`
subclasses; they are printed as one paragraph on stderr and the command exits with code 2.
Logging is configured here only (``-v`` for debug output), never in the library.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from typing import Any

import click

from ..exceptions import SmeftPyhfError

__all__ = ["cli", "main"]


# command name -> (module, attribute); a command's module is imported only when it runs (or
# --help lists it), so `smeft-pyhf fit` does not pay for pyhf's and scipy.stats' imports
_COMMANDS = {
    "ingest": (".ingest", "ingest_command"),
    "inspect": (".inspect", "inspect_command"),
    "fit": (".fit", "fit_command"),
    "plot": (".plot", "plot_command"),
    "compare": (".compare", "compare_command"),
}


class _Group(click.Group):
    """Click group that loads its commands on first use and turns domain errors into a
    one-paragraph message and exit code 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS and cmd_name not in self.commands:
            import importlib

            module, attribute = _COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(module, __name__), attribute),
                             cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SmeftPyhfError as err:
            kind = type(err).__name__
            # wrapped at spaces only: a long path stays whole, so it can be copied
            click.echo(textwrap.fill(f"Error ({kind}): {err}", width=100, break_on_hyphens=False,
                                     break_long_words=False), err=True)
            ctx.exit(2)


@click.group(cls=_Group, invoke_without_command=True)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="smeft-pyhf")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """smeft-pyhf: published HistFactory likelihoods in global SMEFT fits.

    With no command, runs `fit` on the embedded default runcard.
    """
    level = logging.WARNING - 10 * min(verbose, 2) if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("matplotlib", "PIL", "pyhf", "cabinetry", "uproot", "numexpr"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if ctx.invoked_subcommand is None:
        from .fit import fit_command

        ctx.invoke(fit_command)


def main() -> None:
    """Entry point of the ``smeft-pyhf`` console script."""
    cli(prog_name="smeft-pyhf")
