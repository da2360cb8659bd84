"""``smeft-pyhf inspect``: summarise a workspace (no fit) and its NPs per SFitter category.

Example (shell):
    smeft-pyhf inspect workspace.json
    smeft-pyhf inspect BkgOnly.json --patch patch.json --json
    smeft-pyhf inspect 3L_workspace.json --combine 4L_workspace.json --mapping atlas_ttZ_3L4L
    smeft-pyhf inspect new_workspace.json --suggest > mappings/new_analysis.yaml
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..ingest.inspect import draft_mapping, format_inspect, inspect_to_dict, inspect_workspace

__all__ = ["inspect_command"]


@click.command()
@click.argument("workspace", type=click.Path(path_type=Path))
@click.option(
    "--patch",
    type=click.Path(path_type=Path),
    default=None,
    help="JSON Patch, PatchSet entry or PatchSet to apply to the workspace.",
)
@click.option("--patch-name", default=None, help="Which entry of a PatchSet to apply.")
@click.option("--poi", default=None, help="Parameter of interest (default: the measurement's).")
@click.option("--measurement", default=None, help="Measurement name (default: the first).")
@click.option(
    "--combine",
    "combine",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Another workspace to combine with WORKSPACE (parameters correlated by name); repeatable.",
)
@click.option(
    "--mapping",
    default=None,
    help="Mapping YAML path or shipped name (default: the shipped mapping that fits, if any).",
)
@click.option(
    "--no-auto-mapping",
    is_flag=True,
    default=False,
    help="Do not look up a shipped mapping: show suggested categories only.",
)
@click.option(
    "--rootdir", type=click.Path(path_type=Path), default=None,
    help="For HistFactory XML: the folder the <Input> paths are relative to (default: the "
    "XML's folder or a parent that holds them, else the working folder).",
)
@click.option(
    "--json", "as_json", is_flag=True, default=False, help="Print JSON instead of a table."
)
@click.option(
    "--suggest",
    is_flag=True,
    default=False,
    help="Print a draft mapping YAML (one rule per NP, suggested and guessed categories "
    "marked; it loads as it is) instead of a table.",
)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    default=False,
    help="List every parameter of each category (default: the first few).",
)
def inspect_command(
    workspace: Path,
    patch: Path | None,
    patch_name: str | None,
    poi: str | None,
    measurement: str | None,
    combine: tuple[Path, ...],
    mapping: str | None,
    no_auto_mapping: bool,
    rootdir: Path | None,
    as_json: bool,
    suggest: bool,
    show_all: bool,
) -> None:
    """Summarise WORKSPACE without fitting it.

    Shows channels (bins, observed events), samples, modifiers by type (unique names and
    instances), parameters (count, POI, fixed ones, free normalisations) and the nuisance
    parameters per SFitter category under a mapping (given with --mapping, or the shipped one
    that fits). Parameters no mapping covers are listed with SUGGESTED categories (naming
    heuristics); --suggest prints them as a draft mapping YAML to edit. Accepts .json, .json.gz and HistFactory .xml (+ROOT) inputs; a
    background-only workspace is shown without POI.
    """
    result = inspect_workspace(
        workspace,
        patch=patch,
        patch_name=patch_name,
        poi=poi,
        measurement=measurement,
        combine=combine,
        mapping=mapping,
        auto_mapping=not no_auto_mapping,
        rootdir=rootdir,
    )
    if suggest:
        click.echo(draft_mapping(result), nl=False)
    elif as_json:
        click.echo(json.dumps(inspect_to_dict(result), indent=2))
    else:
        click.echo(format_inspect(result, verbose=show_all))
