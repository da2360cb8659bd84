"""`smeft-pyhf inspect` (being written)."""

from __future__ import annotations

import click

from ..exceptions import SmeftPyhfError


@click.command()
def inspect_command() -> None:
    """Not yet implemented."""
    raise SmeftPyhfError("'inspect' is not implemented yet")
