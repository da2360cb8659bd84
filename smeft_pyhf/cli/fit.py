"""`smeft-pyhf fit` (being written)."""

from __future__ import annotations

import click

from ..exceptions import SmeftPyhfError


@click.command()
def fit_command() -> None:
    """Not yet implemented."""
    raise SmeftPyhfError("'fit' is not implemented yet")
