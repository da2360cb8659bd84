"""`smeft-pyhf ingest` (being written)."""

from __future__ import annotations

import click

from ..exceptions import SmeftPyhfError


@click.command()
def ingest_command() -> None:
    """Not yet implemented."""
    raise SmeftPyhfError("'ingest' is not implemented yet")
