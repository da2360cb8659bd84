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


class _Group(click.Group):
    """Click group that turns domain errors into a one-paragraph message and exit code 2."""

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


def _register() -> None:
    from .compare import compare_command
    from .fit import fit_command
    from .ingest import ingest_command
    from .inspect import inspect_command
    from .plot import plot_command

    cli.add_command(ingest_command, "ingest")
    cli.add_command(inspect_command, "inspect")
    cli.add_command(fit_command, "fit")
    cli.add_command(plot_command, "plot")
    cli.add_command(compare_command, "compare")


_register()


def main() -> None:
    """Entry point of the ``smeft-pyhf`` console script."""
    cli(prog_name="smeft-pyhf")
