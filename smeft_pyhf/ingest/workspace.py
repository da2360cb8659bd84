"""Load a published HistFactory workspace (JSON, gzipped JSON, XML+ROOT) into a pyhf model.

The loader validates at the boundary: the file is parsed (malformed JSON is reported with line
and column), an optional patch (JSON Patch list, a single PatchSet entry or a whole PatchSet) is
applied, the result is checked against pyhf's schema (errors name the JSON path and the bad
value), modifiers listed twice in one sample are rejected, and the POI is checked against the
normalisation factors the samples actually use.

Example:
    >>> from smeft_pyhf._resources import shipped_dir
    >>> loaded = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
    >>> loaded.poi, loaded.model.config.npars > 10
    ('mu_ttZ', True)
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pyhf

from .._io import sha256_file
from ..exceptions import InputError, WorkspaceError

__all__ = [
    "LoadedWorkspace",
    "candidate_pois",
    "load_workspace",
    "read_json",
]

log = logging.getLogger(__name__)


class LoadedWorkspace(NamedTuple):
    """A workspace ready to fit.

    Attributes:
        workspace: the (patched, combined) :class:`pyhf.Workspace`.
        model: the model built for the chosen measurement and POI (``poi_name=None`` if none).
        data: observed data followed by the auxiliary data, in ``model.config`` order.
        poi: name of the parameter of interest, or ``None``.
        source: the input path as given.
        sha256: sha256 of the input file bytes.
        patch_sha256: sha256 of the patch file bytes, or ``None``.
        warnings: things worth knowing that did not stop the load.
    """

    workspace: pyhf.Workspace
    model: pyhf.pdf.Model
    data: list[float]
    poi: str | None
    source: str
    sha256: str
    patch_sha256: str | None
    warnings: tuple[str, ...]


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a ``.json`` or ``.json.gz`` file.

    Args:
        path: the file.

    Returns:
        The decoded JSON document.

    Raises:
        InputError: missing or unreadable file, malformed JSON (with line and column).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> _ = p.write_text('{"a": 1}')
        >>> read_json(p)
        {'a': 1}
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file does not exist", where=str(path), hint="check the path")
    if path.is_dir():
        raise InputError("is a folder, not a file", where=str(path), hint="give the workspace file")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise InputError(f"cannot read file ({err})", where=str(path)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            f"is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}",
            where=str(path),
            hint="fix the JSON syntax (a missing comma or bracket?)",
        ) from None


def _json_path(path: Sequence[Any]) -> str:
    text = ""
    for item in path:
        text += f"[{item}]" if isinstance(item, int) else f".{item}"
    return text.lstrip(".") or "(top level)"


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _validate_spec(spec: Any, where: str) -> pyhf.Workspace:
    if not isinstance(spec, dict) or "channels" not in spec:
        raise WorkspaceError(
            "is not a HistFactory workspace (no top-level 'channels')",
            where=where,
            hint="give a pyhf workspace JSON; a patch file goes to --patch",
        )
    try:
        return pyhf.Workspace(spec)
    except pyhf.exceptions.InvalidSpecification as err:
        parent = err.parent
        path = _json_path(list(parent.absolute_path))
        raise WorkspaceError(
            f"fails the pyhf workspace schema at {path}: {parent.message} "
            f"(value {_short(parent.instance)})",
            where=where,
            hint="fix that field of the workspace",
        ) from None
    except pyhf.exceptions.InvalidWorkspaceOperation as err:
        raise WorkspaceError(f"is not a consistent workspace: {err}", where=where) from None


def _check_duplicate_modifiers(spec: dict[str, Any], where: str) -> list[str]:
    """Reject a modifier listed twice (same name and type) in one sample.

    The same name with two types (a ``normsys`` and a ``histosys``: the normalisation and shape
    parts of one NP) is legal HistFactory; when the ``histosys`` part changes nothing
    (``hi_data == lo_data == nominal``, as in the ATLAS eRJR signal patches) a note is returned.
    """
    problems = []
    notes = []

    def entries(container: Any, key: str) -> list[dict[str, Any]]:
        # malformed layouts (a dict where a list belongs, ...) are left to the schema check
        items = container.get(key, []) if isinstance(container, dict) else []
        return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []

    for channel in entries(spec, "channels"):
        for sample in entries(channel, "samples"):
            seen: set[tuple[str, str]] = set()
            for modifier in entries(sample, "modifiers"):
                key = (modifier.get("name"), modifier.get("type"))
                if key in seen:
                    problems.append(
                        f"channel '{channel.get('name')}', sample '{sample.get('name')}': "
                        f"{key[1]} modifier '{key[0]}'"
                    )
                seen.add(key)
            names = [m.get("name") for m in entries(sample, "modifiers")]
            for modifier in entries(sample, "modifiers"):
                data = modifier.get("data") or {}
                if (
                    modifier.get("type") == "histosys"
                    and names.count(modifier.get("name")) > 1
                    and isinstance(data, dict)
                    and data.get("hi_data") == data.get("lo_data") == sample.get("data")
                ):
                    notes.append(f"{sample.get('name')}/{modifier.get('name')}")
    if problems:
        listed = "; ".join(sorted(set(problems))[:10])
        more = f" (and {len(set(problems)) - 10} more)" if len(set(problems)) > 10 else ""
        raise WorkspaceError(
            f"a modifier is listed twice in the same sample: {listed}{more}",
            where=where,
            hint="pyhf would count it twice; fix the workspace/patch so each sample lists each "
            "modifier once",
        )
    if not notes:
        return []
    samples = sorted({n.split("/")[0] for n in notes})
    return [
        f"{len(notes)} modifier(s) appear twice in one sample, as a normsys and as a histosys "
        f"that changes nothing (hi_data = lo_data = nominal), in sample(s) {', '.join(samples)} "
        f"(e.g. {', '.join(sorted({n.split('/')[1] for n in notes})[:5])}); legal in pyhf, "
        "the histosys part has no effect"
    ]


def _bad_number(value: Any, *, allow_negative: bool) -> str | None:
    """What is wrong with one number of the workspace (``None`` if nothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # wrong types are the schema's job
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return f"{value}"
    if value < 0 and not allow_negative:
        return f"negative ({value:g})"
    return None


def _bins(values: Any) -> list[tuple[int, Any]]:
    return list(enumerate(values)) if isinstance(values, list) else []


def _check_values(spec: dict[str, Any], where: str) -> list[str]:
    """Reject non-finite or impossible numbers before any model is built or fitted.

    Rejected (a :class:`WorkspaceError` naming the file, channel, sample, modifier and bin):
    NaN or infinite observations, sample yields and modifier data; negative observed counts;
    negative ``staterror``/``shapesys`` uncertainties and ``normsys`` factors; a bin whose
    nominal yields (summed over the samples) are negative; a channel without observations or
    with a different number of observed bins. Negative yields of single samples or ``histosys``
    templates in a bin whose total stays positive are legal HistFactory (negative Monte Carlo
    weights; published workspaces have them) and give a warning instead.

    Returns:
        Warnings about legal but unusual numbers.
    """
    problems: list[str] = []
    layout: list[str] = []
    notes: list[str] = []
    observed = {
        obs.get("name"): obs.get("data")
        for obs in spec.get("observations", [])
        if isinstance(obs, dict)
    }
    for channel in spec.get("channels", []):
        _check_channel(channel, observed, problems, layout, notes)
    _raise_value_problems(layout, problems, where)
    if not notes:
        return []
    return [
        f"{len(notes)} negative yield(s) in single samples or histosys templates (legal while "
        f"each bin's total stays positive): {'; '.join(notes[:5])}"
        + (f" (and {len(notes) - 5} more)" if len(notes) > 5 else "")
    ]


def _check_channel(
    channel: dict[str, Any],
    observed: dict[Any, Any],
    problems: list[str],
    layout: list[str],
    notes: list[str],
) -> None:
    """:func:`_check_values` of one channel: appends to ``problems`` (bad numbers), ``layout``
    (bin counts that disagree) and ``notes`` (legal negative yields)."""
    cname = channel.get("name")
    samples = [s for s in channel.get("samples", []) if isinstance(s, dict)]
    nbins = max((len(s.get("data") or []) for s in samples), default=0)
    data = observed.get(cname)
    if data is None:
        layout.append(f"channel '{cname}' has no observations")
    elif len(data) != nbins:
        layout.append(
            f"channel '{cname}' has {len(data)} observed bin(s) but its samples have {nbins}"
        )
    for i, value in _bins(data):
        bad = _bad_number(value, allow_negative=False)
        if bad:
            problems.append(f"channel '{cname}', observations, bin {i + 1} of {len(data)}: {bad}")
    totals = [0.0] * nbins
    for sample in samples:
        sname = sample.get("name")
        values = sample.get("data")
        if isinstance(values, list) and len(values) != nbins:
            layout.append(
                f"channel '{cname}', sample '{sname}' has {len(values)} bin(s), other "
                f"samples of the channel {nbins}"
            )
        for i, value in _bins(values):
            bad = _bad_number(value, allow_negative=True)
            if bad:
                problems.append(
                    f"channel '{cname}', sample '{sname}', bin {i + 1} of {len(values)}: {bad}"
                )
            elif isinstance(value, (int, float)) and i < nbins:
                totals[i] += value
                if value < 0:
                    notes.append(f"channel '{cname}', sample '{sname}', bin {i + 1}")
        for modifier in sample.get("modifiers", []):
            if isinstance(modifier, dict):
                _check_modifier(modifier, f"channel '{cname}', sample '{sname}'", problems, notes)
    for i, total in enumerate(totals):
        if total < 0:
            problems.append(
                f"channel '{cname}', bin {i + 1} of {nbins}: the samples' nominal yields sum "
                f"to {total:g} (a negative expected count)"
            )


def _check_modifier(
    modifier: dict[str, Any], sample_place: str, problems: list[str], notes: list[str]
) -> None:
    """:func:`_check_values` of one modifier's data (``sample_place`` names its sample)."""
    mtype, mname, mdata = modifier.get("type"), modifier.get("name"), modifier.get("data")
    place = f"{sample_place}, {mtype} '{mname}'"
    if mtype == "histosys" and isinstance(mdata, dict):
        for key in ("hi_data", "lo_data"):
            for i, value in _bins(mdata.get(key)):
                bad = _bad_number(value, allow_negative=True)
                if bad:
                    problems.append(f"{place} {key}, bin {i + 1}: {bad}")
                elif isinstance(value, (int, float)) and value < 0:
                    notes.append(f"{place} {key}, bin {i + 1}")
    elif mtype == "normsys" and isinstance(mdata, dict):
        for key in ("hi", "lo"):
            bad = _bad_number(mdata.get(key), allow_negative=False)
            if bad:
                problems.append(f"{place} {key}: {bad}")
    elif mtype in ("staterror", "shapesys"):
        for i, value in _bins(mdata):
            bad = _bad_number(value, allow_negative=False)
            if bad:
                problems.append(f"{place} data, bin {i + 1}: {bad}")


def _raise_value_problems(layout: list[str], problems: list[str], where: str) -> None:
    """Raise the :class:`WorkspaceError` of :func:`_check_values` (layout first), if any."""
    if layout:
        raise WorkspaceError(
            "the observations do not match the channels: " + "; ".join(layout[:8])
            + (f" (and {len(layout) - 8} more)" if len(layout) > 8 else ""),
            where=where,
            hint="give every channel one observed count per bin of its samples",
        )
    if problems:
        listed = "; ".join(problems[:8])
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise WorkspaceError(
            f"has numbers no likelihood can use: {listed}{more}",
            where=where,
            hint="fix these entries of the workspace (observed counts must be finite and "
            "non-negative, yields and modifier data finite, uncertainties non-negative)",
        )


def _xml_inputs(xml: Path) -> list[str]:
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as err:
        raise InputError(f"is not valid XML: {err}", where=str(xml)) from None
    except OSError as err:
        raise InputError(f"cannot read file ({err})", where=str(xml)) from None
    return [node.text.strip() for node in root.iter("Input") if node.text and node.text.strip()]


def _find_xml_rootdir(xml: Path, rootdir: str | os.PathLike[str] | None = None) -> Path:
    """The folder the ``<Input>`` paths of a top-level HistFactory XML are relative to.

    With ``rootdir`` given, it must hold every input; otherwise the XML's folder and each of
    its parents, then the working folder, are tried in turn.
    """
    inputs = _xml_inputs(xml)
    if rootdir is not None:
        base = Path(rootdir)
        if not base.is_dir():
            raise InputError(
                "--rootdir is not a folder", where=str(base), hint="give the folder the XML's "
                "<Input> paths are relative to"
            )
        missing = [item for item in inputs if not (base / item).exists()]
        if missing:
            raise InputError(
                f"the <Input> file(s) {', '.join(missing[:5])} do not exist under --rootdir {base}",
                where=str(xml),
                hint="give the folder the <Input> paths are relative to",
            )
        return base
    candidates = [*xml.resolve().parents, Path.cwd()]
    for candidate in candidates:
        if all((candidate / item).exists() for item in inputs):
            return candidate
    raise InputError(
        f"the <Input> file(s) {', '.join(inputs[:5])} are found neither next to the XML, in "
        "one of its parent folders nor in the working folder",
        where=str(xml),
        hint="pass the folder they are relative to with --rootdir",
    )


def _multidim_histograms(xml: Path, rootdir: Path) -> list[str]:
    """Histograms of the XML's channels that are not one-dimensional (``TH2``/``TH3``)."""
    import xml.etree.ElementTree as ET

    try:
        import uproot
    except ImportError:  # pragma: no cover - uproot comes with pyhf[xmlio]
        return []
    found = []
    for item in _xml_inputs(xml):
        try:
            channel = ET.parse(rootdir / item).getroot()
        except (OSError, ET.ParseError):
            continue
        default_file = channel.attrib.get("InputFile")
        for node in channel.iter():
            name = node.attrib.get("HistoName")
            filename = node.attrib.get("InputFile", default_file)
            if not name or not filename:
                continue
            key = "/".join(p for p in (node.attrib.get("HistoPath", "").strip("/"), name) if p)
            try:
                with uproot.open(rootdir / filename) as handle:
                    classname = handle[key].classname
            except Exception:  # a diagnosis only; the reader's own error is reported anyway
                continue
            if classname.startswith(("TH2", "TH3")):
                found.append(f"{filename}:{key} ({classname})")
    return sorted(set(found))


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _captured_pyhf_log() -> Iterator[_Captured]:
    """Keep pyhf's log records (and their tracebacks) off stderr while a call runs.

    The caller decides what to do with them: re-log the warnings after a success, or only
    keep them at debug level when the failure is reported as a clean error.
    """
    logger = logging.getLogger("pyhf")
    handler = _Captured()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _load_xml(
    path: Path, rootdir: str | os.PathLike[str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    import pyhf.readxml

    base = _find_xml_rootdir(path, rootdir)
    log.info("reading HistFactory XML %s (rootdir %s)", path, base)
    with _captured_pyhf_log() as captured:
        try:
            spec = pyhf.readxml.parse(str(path), str(base), track_progress=False)
        except Exception as err:  # any failure of the third-party reader
            for record in captured.records:
                log.debug("pyhf.readxml: %s", record.getMessage())
            log.debug("pyhf.readxml failed", exc_info=True)
            multidim = _multidim_histograms(path, base)
            if multidim:
                more = f" (and {len(multidim) - 5} more)" if len(multidim) > 5 else ""
                raise InputError(
                    "cannot read the HistFactory inputs: pyhf.readxml reads one-dimensional "
                    f"histograms only; not one-dimensional: {', '.join(multidim[:5])}{more}",
                    where=str(path),
                    hint="unroll the 2D/3D histograms into 1D ones (one bin after the other) in "
                    "the ROOT file, or give the workspace as pyhf JSON",
                ) from None
            raise InputError(
                f"cannot read the HistFactory XML/ROOT inputs ({type(err).__name__}: {err})",
                where=str(path),
                hint=f"check the <Input> paths and ROOT files (read relative to {base}; "
                "another folder can be given with --rootdir)",
            ) from None
    notes = []
    for record in captured.records:
        if record.levelno >= logging.WARNING:
            notes.append(f"pyhf.readxml: {record.getMessage()}")
            log.warning("pyhf.readxml: %s", record.getMessage())
    return spec, notes


def _select_patch(document: Any, patch_name: str | None, where: str) -> tuple[list[Any], str]:
    """Turn a patch document into a JSON Patch list and a label."""
    if isinstance(document, list):
        if patch_name:
            raise WorkspaceError("is a plain JSON Patch, --patch-name does not apply", where=where)
        return document, Path(where).name
    if isinstance(document, dict) and "patches" in document:
        try:
            patchset = pyhf.PatchSet(document)
        except pyhf.exceptions.InvalidSpecification as err:
            parent = err.parent
            raise WorkspaceError(
                f"fails the PatchSet schema at {_json_path(list(parent.absolute_path))}: "
                f"{parent.message}",
                where=where,
            ) from None
        names = [patch.name for patch in patchset.patches]
        if patch_name is None:
            if len(names) == 1:
                return list(patchset.patches[0].patch), names[0]
            raise WorkspaceError(
                f"is a PatchSet with {len(names)} patches; choose one with --patch-name "
                f"(e.g. {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})",
                where=where,
            )
        for patch in patchset.patches:
            if patch.name == patch_name:
                return list(patch.patch), patch_name
        raise WorkspaceError(
            f"has no patch named '{patch_name}'",
            where=where,
            hint=f"choose one of: {', '.join(names[:20])}",
        )
    if isinstance(document, dict) and "patch" in document:
        return list(document["patch"]), document.get("metadata", {}).get("name", Path(where).name)
    raise WorkspaceError("is not a JSON Patch, a PatchSet or a PatchSet entry", where=where)


def _apply_patch(spec: dict[str, Any], patch: list[Any], where: str) -> dict[str, Any]:
    import jsonpatch

    try:
        return jsonpatch.JsonPatch(patch).apply(copy.deepcopy(spec))
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as err:
        raise WorkspaceError(
            f"cannot be applied to the workspace: {err}",
            where=where,
            hint="is this the patch for this background-only workspace?",
        ) from None


def candidate_pois(workspace: pyhf.Workspace) -> list[str]:
    """Names of the normfactor modifiers that some sample uses (possible POIs).

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json").workspace
        >>> candidate_pois(ws)
        ['mu_WZ', 'mu_ttZ']
    """
    names = {
        modifier["name"]
        for channel in workspace["channels"]
        for sample in channel["samples"]
        for modifier in sample["modifiers"]
        if modifier["type"] == "normfactor"
    }
    return sorted(names)


def _choose_measurement(workspace: pyhf.Workspace, measurement: str | None, where: str) -> str:
    names = list(workspace.measurement_names)
    if not names:
        raise WorkspaceError("has no measurement", where=where)
    if measurement is None:
        return names[0]
    if measurement not in names:
        raise WorkspaceError(
            f"has no measurement '{measurement}'", where=where, hint=f"choose one of {names}"
        )
    return measurement


def _read_spec(
    path: Path, rootdir: str | os.PathLike[str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The workspace document of ``path`` and the notes its reading left (XML only)."""
    name = path.name.lower()
    if name.endswith(".xml"):
        return _load_xml(path, rootdir)
    if rootdir is not None:
        raise InputError(
            "--rootdir applies to HistFactory XML inputs only", where=str(path),
            hint="drop --rootdir for a JSON workspace",
        )
    document = read_json(path)
    if isinstance(document, list) or (
        isinstance(document, dict) and ("patches" in document or "patch" in document)
    ):
        raise WorkspaceError(
            "is a patch, not a workspace",
            where=str(path),
            hint="give the background-only workspace and pass this file with --patch",
        )
    return document, []


def _check_combine_distinct(path: Path, others: Sequence[Path], sha: str) -> None:
    """Refuse to combine a workspace with itself (pyhf's outer join would drop the copy)."""
    seen = {path.resolve(): str(path)}
    hashes = {sha: str(path)}
    for other in others:
        if not other.exists():
            raise InputError("file does not exist", where=str(other), hint="check the path")
        resolved = other.resolve()
        digest = sha256_file(other)
        first = seen.get(resolved) or hashes.get(digest)
        if first is not None:
            same = "is the same file as" if resolved in seen else "has the same content as"
            raise WorkspaceError(
                f"{same} {first}; a workspace combined with itself adds nothing (its channels "
                "are identical, so pyhf keeps one copy)",
                where=str(other),
                hint="give each workspace to combine once",
            )
        seen[resolved] = str(other)
        hashes[digest] = str(other)


def _patched(
    spec: dict[str, Any],
    patch: str | os.PathLike[str] | None,
    patch_name: str | None,
    where: str,
) -> tuple[dict[str, Any], str | None, str]:
    """``spec`` with the patch file applied, the patch's hash (``None`` without a patch) and
    the new ``where``."""
    if patch is None:
        if patch_name is not None:
            raise WorkspaceError("--patch-name given without --patch", where=where)
        return spec, None, where
    patch_path = Path(patch)
    document = read_json(patch_path)
    operations, label = _select_patch(document, patch_name, str(patch_path))
    spec = _apply_patch(spec, operations, str(patch_path))
    patch_sha = sha256_file(patch_path)
    if patch_name:
        patch_sha = hashlib.sha256((patch_sha + ":" + patch_name).encode("utf-8")).hexdigest()
    log.info("applied patch %s (%d operations)", label, len(operations))
    return spec, patch_sha, f"{where} + patch {label}"


def _combined(
    workspace: pyhf.Workspace,
    path: Path,
    combine: Sequence[str | os.PathLike[str]],
    *,
    chosen: str,
    sha: str,
    where: str,
    rootdir: str | os.PathLike[str] | None,
    warnings: list[str],
) -> tuple[pyhf.Workspace, str, str]:
    """``workspace`` combined with the ``combine`` files (their measurements renamed to
    ``chosen``), the combined hash and the new ``where``; appends to ``warnings``."""
    _check_combine_distinct(path, [Path(c) for c in combine], sha)
    extra_hashes = []
    for other_path in combine:
        other_path = Path(other_path)
        other_spec, read_notes = _read_spec(other_path, rootdir)
        warnings.extend(read_notes)
        warnings.extend(_check_duplicate_modifiers(other_spec, str(other_path)))
        other = _validate_spec(other_spec, str(other_path))
        warnings.extend(_check_values(other_spec, str(other_path)))
        renames = {name: chosen for name in other.measurement_names if name != chosen}
        if len(other.measurement_names) > 1:
            other = other.prune(measurements=other.measurement_names[1:])
            renames = {other.measurement_names[0]: chosen}
        if renames and other.measurement_names[0] != chosen:
            other = other.rename(measurements=renames)
        try:
            workspace = pyhf.Workspace.combine(workspace, other, join="outer")
        except pyhf.exceptions.InvalidWorkspaceOperation as err:
            raise WorkspaceError(
                f"cannot be combined with {other_path}: {err}", where=where
            ) from None
        extra_hashes.append(sha256_file(other_path))
        where = f"{where} + {other_path.name}"
        log.info("combined with %s (measurement renamed to %s)", other_path, chosen)
    sha = hashlib.sha256(":".join([sha, *extra_hashes]).encode("utf-8")).hexdigest()
    warnings.append(
        "combined workspaces: parameters are correlated by name "
        f"({', '.join(str(p) for p in combine)})"
    )
    return workspace, sha, where


def _choose_poi(
    workspace: pyhf.Workspace,
    chosen: str,
    poi: str | None,
    require_poi: bool,
    where: str,
    warnings: list[str],
) -> str | None:
    """The POI: ``poi`` if given, else the measurement's; ``None`` (with a warning) when no
    sample uses the measurement's POI and ``require_poi`` is off."""
    meas_poi = workspace.get_measurement(measurement_name=chosen)["config"].get("poi")
    candidates = candidate_pois(workspace)
    if poi is not None:
        if poi not in candidates:
            raise WorkspaceError(
                f"POI '{poi}' is not a normfactor of any sample",
                where=where,
                hint=f"candidate normfactors: {', '.join(candidates) or 'none'}",
            )
        return poi
    if meas_poi in candidates:
        return meas_poi
    if require_poi:
        raise WorkspaceError(
            f"the measurement '{chosen}' declares POI '{meas_poi}' but no sample uses it "
            "(a background-only workspace?)",
            where=where,
            hint="apply a signal patch with --patch, or choose a POI with --poi among the "
            f"normfactors: {', '.join(candidates) or 'none (nothing to measure)'}",
        )
    warnings.append(f"measurement POI '{meas_poi}' is used by no sample; model has no POI")
    return None


def _build_model(
    workspace: pyhf.Workspace, chosen: str, chosen_poi: str | None, where: str
) -> tuple[Any, list[float]]:
    """The pyhf model of measurement ``chosen`` and its observed data (main and auxiliary)."""
    try:
        with _captured_pyhf_log():
            model = workspace.model(
                measurement_name=chosen,
                poi_name=chosen_poi,
            )
            data = [float(x) for x in workspace.data(model)]
    except (pyhf.exceptions.InvalidModel, pyhf.exceptions.InvalidSpecification) as err:
        raise WorkspaceError(f"cannot build a model: {err}", where=where) from None
    except KeyError as err:
        raise WorkspaceError(
            f"cannot build the observed data: no observation for channel {err}", where=where
        ) from None
    if len(data) != model.config.nmaindata + model.config.nauxdata:
        raise WorkspaceError(
            f"the observations have {len(data) - model.config.nauxdata} bin(s) but the model "
            f"{model.config.nmaindata}",
            where=where,
            hint="give every channel's observations with one count per bin",
        )
    log.info(
        "loaded %s: %d channels, %d bins, %d parameters, POI %s",
        where,
        len(model.config.channels),
        model.config.nmaindata,
        model.config.npars,
        chosen_poi,
    )
    return model, data


def load_workspace(
    path: str | os.PathLike[str],
    *,
    patch: str | os.PathLike[str] | None = None,
    patch_name: str | None = None,
    poi: str | None = None,
    measurement: str | None = None,
    combine: Sequence[str | os.PathLike[str]] = (),
    require_poi: bool = True,
    rootdir: str | os.PathLike[str] | None = None,
) -> LoadedWorkspace:
    """Load, patch, validate and build a HistFactory workspace.

    Args:
        path: ``.json``, ``.json.gz`` or a HistFactory top-level ``.xml`` file.
        patch: a JSON Patch, a PatchSet entry or a PatchSet file to apply.
        patch_name: which entry of a PatchSet to apply.
        poi: parameter of interest; overrides the measurement's POI.
        measurement: measurement name (default: the first one).
        combine: more workspaces to combine with ``path`` (outer join, parameters correlated
            by name); their measurements are renamed to the chosen measurement first.
        require_poi: when ``False``, a workspace whose POI no sample uses is built with
            ``poi_name=None`` (and a warning) instead of raising.
        rootdir: for HistFactory XML inputs, the folder their ``<Input>`` paths are relative
            to (``pyhf.readxml``'s ``rootdir``); by default the XML's folder, its parents and
            the working folder are tried.

    Returns:
        A :class:`LoadedWorkspace`.

    Raises:
        InputError: missing file, malformed JSON (line/column) or unreadable XML/ROOT.
        WorkspaceError: schema violation (JSON path and value), duplicated modifiers, NaN,
            infinite or negative counts (file, channel, sample and bin named), observations
            missing or of the wrong length, a patch that does not apply, unknown measurement,
            missing/unknown POI (with candidates), a file combined with itself.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> loaded = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> loaded.model.config.poi_name
        'mu_ttZ'
    """
    path = Path(path)
    where = str(path)
    warnings: list[str] = []
    if not path.exists():
        raise InputError("file does not exist", where=where, hint="check the path")
    spec, read_notes = _read_spec(path, rootdir)
    warnings.extend(read_notes)
    sha = sha256_file(path)

    spec, patch_sha, where = _patched(spec, patch, patch_name, where)
    warnings.extend(_check_duplicate_modifiers(spec, where))
    workspace = _validate_spec(spec, where)
    warnings.extend(_check_values(spec, where))
    chosen = _choose_measurement(workspace, measurement, where)
    if combine:
        workspace, sha, where = _combined(
            workspace, path, combine, chosen=chosen, sha=sha, where=where, rootdir=rootdir,
            warnings=warnings,
        )
    chosen_poi = _choose_poi(workspace, chosen, poi, require_poi, where, warnings)
    model, data = _build_model(workspace, chosen, chosen_poi, where)
    return LoadedWorkspace(
        workspace=workspace,
        model=model,
        data=data,
        poi=chosen_poi,
        source=str(path),
        sha256=sha,
        patch_sha256=patch_sha,
        warnings=tuple(warnings),
    )
