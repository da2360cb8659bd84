"""`smeft-pyhf plot` (being written)."""

from __future__ import annotations

import click

from ..exceptions import SmeftPyhfError


@click.command()
def plot_command() -> None:
    """Not yet implemented."""
    raise SmeftPyhfError("'plot' is not implemented yet")
