"""Largest differences between two results.json files, or between two measurement cards.

Two fits of the same runcard and seed (two revisions of the code, two machines) should give
the same numbers; this prints how far apart they are::

    python benchmarks/compare_results.py A/results.json B/results.json
    python benchmarks/compare_results.py A/results.json B/results.json --json
    python benchmarks/compare_results.py a.card.yaml b.card.yaml

For two results files it compares the best fit (every coefficient; log L apart, as a point
in a flat direction may move while log L stays), every end of every 68 % and 95 % interval
(profiled and marginalised apart; a coefficient whose intervals have a different number of
pieces is listed instead), the ESS, ESS/N, log Z and the 1D profile and
marginal curves (``delta_chi2`` per bin), and prints per group the largest absolute and
relative difference and where it is. Interval ends are also given in widths of the 95 %
interval they belong to (the scale a reader judges them by).

For two cards (YAML) it walks both documents and compares every number (relative to the
larger magnitude); keys that are run-dependent (``seconds``, ``timings``, ``created``) are
left out, and any other key or text that differs is listed (a path that names another folder,
a field one of them lacks).

The files are read as plain JSON/YAML, not through smeft_pyhf's reader, so files written by
other versions of the package compare as well. Exit status 0 in every case: the numbers are
for a reader to judge.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_SKIP_CARD_KEYS = frozenset({"seconds", "timings", "created"})
_FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(nan|inf)$",
                         re.IGNORECASE)


@dataclass
class Largest:
    """The largest absolute and relative difference of a group of numbers, and where.

    Example:
        >>> g = Largest("best fit")
        >>> g.add("ctG", 1.0, 1.001)
        >>> g.add("ctZ", 0.0, 1e-9)
        >>> g.n, round(g.abs_diff, 6), g.abs_where, round(g.rel_diff, 6), g.rel_where
        (2, 0.001, 'ctG', 1.0, 'ctZ')

    ``abs_where`` (and the other ``_where``) stay empty while every difference is 0.
    """

    group: str
    n: int = 0
    abs_diff: float = 0.0
    abs_where: str = ""
    rel_diff: float = 0.0
    rel_where: str = ""
    scaled_diff: float = 0.0
    scaled_where: str = ""
    scaled: bool = False
    mismatched: list[str] = field(default_factory=list)

    def add(self, where: str, a: float, b: float, scale: float | None = None) -> None:
        """Count the pair ``(a, b)`` at ``where``; ``scale``: a width to measure it in.

        Two NaNs, or two equal infinities, are equal; a NaN or infinity against a different
        value is listed in :attr:`mismatched`.
        """
        self.n += 1
        if not (math.isfinite(a) and math.isfinite(b)):
            if not (a == b or (math.isnan(a) and math.isnan(b))):
                self.mismatched.append(f"{where}: {a} vs {b}")
            return
        diff = abs(a - b)
        rel = diff / max(abs(a), abs(b)) if diff else 0.0
        if diff > self.abs_diff:
            self.abs_diff, self.abs_where = diff, where
        if rel > self.rel_diff:
            self.rel_diff, self.rel_where = rel, where
        if scale is not None and scale > 0:
            self.scaled = True
            if diff / scale > self.scaled_diff:
                self.scaled_diff, self.scaled_where = diff / scale, where

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return {"group": self.group, "n": self.n, "abs": self.abs_diff, "abs_at": self.abs_where,
                "rel": self.rel_diff, "rel_at": self.rel_where, "widths": self.scaled_diff,
                "widths_at": self.scaled_where, "mismatched": self.mismatched}


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a number or a number's text (YAML 1.1 reads ``1e-5``
    and ``.nan`` style texts as strings, results files may write NaN as ``"NaN"``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
        return float(value)
    return None


def _segments(entry: dict[str, Any]) -> list[tuple[float, float]]:
    return [(float(_number(lo) or 0.0), float(_number(hi) or 0.0))
            for lo, hi in entry.get("segments", [])]


def compare_results(a: dict[str, Any], b: dict[str, Any]) -> list[Largest]:
    """The largest differences between two results documents, group by group.

    Example:
        >>> r = {"best_fit": {"coefficients": {"c": 1.0}, "log_likelihood": -2.0},
        ...      "intervals": {"c": {"profiled": {"95": {"segments": [[0.0, 2.0]]}}}},
        ...      "sampling": {"ess": 100.0, "log_evidence": 1.5}}
        >>> s = json.loads(json.dumps(r)); s["intervals"]["c"]["profiled"]["95"]["segments"] = [[0.0, 2.1]]
        >>> [(g.group, round(g.abs_diff, 3)) for g in compare_results(r, s) if g.n]
        [('best fit point', 0.0), ('best fit log L', 0.0), ('profiled ends', 0.1), ('ESS', 0.0), ('log Z', 0.0)]
    """
    best = Largest("best fit point")
    for name, value in a.get("best_fit", {}).get("coefficients", {}).items():
        other = b.get("best_fit", {}).get("coefficients", {}).get(name)
        if other is None:
            best.mismatched.append(f"{name}: only in the first file")
            continue
        best.add(name, float(_number(value)), float(_number(other)))  # type: ignore[arg-type]
    best_lp = Largest("best fit log L")
    if "log_likelihood" in a.get("best_fit", {}):
        best_lp.add("log L", float(_number(a["best_fit"]["log_likelihood"])),  # type: ignore[arg-type]
                    float(_number(b["best_fit"]["log_likelihood"])))  # type: ignore[arg-type]
    ends = {kind: Largest(f"{kind} ends") for kind in ("profiled", "marginalised")}
    for name, kinds in a.get("intervals", {}).items():
        for kind, levels in kinds.items():
            group = ends.setdefault(kind, Largest(f"{kind} ends"))
            width = _width(levels.get("95", {}))
            for level, entry in levels.items():
                seg_a = _segments(entry)
                seg_b = _segments(b.get("intervals", {}).get(name, {}).get(kind, {})
                                  .get(level, {}))
                if len(seg_a) != len(seg_b):
                    group.mismatched.append(f"{name} {level}%: {seg_a} vs {seg_b}")
                    continue
                for k, (pa, pb) in enumerate(zip(seg_a, seg_b, strict=True)):
                    for end, va, vb in (("low", pa[0], pb[0]), ("high", pa[1], pb[1])):
                        group.add(f"{name} {level}% piece {k} {end}", va, vb, width)
    ess = Largest("ESS")
    log_z = Largest("log Z")
    samp_a, samp_b = a.get("sampling", {}), b.get("sampling", {})
    if "ess" in samp_a and "ess" in samp_b:
        ess.add("ESS", float(_number(samp_a["ess"])), float(_number(samp_b["ess"])))  # type: ignore[arg-type]
    frac_a = a.get("diagnostics", {}).get("ess_fraction")
    frac_b = b.get("diagnostics", {}).get("ess_fraction")
    if frac_a is not None and frac_b is not None:
        ess.add("ESS/N", float(frac_a), float(frac_b))
    if "log_evidence" in samp_a and "log_evidence" in samp_b:
        log_z.add("log Z", float(_number(samp_a["log_evidence"])),  # type: ignore[arg-type]
                  float(_number(samp_b["log_evidence"])))  # type: ignore[arg-type]
    curves = [_curves(a, b, key) for key in ("profile1d", "marginal1d")]
    return [best, best_lp, *ends.values(), ess, log_z, *curves]


def _width(entry: dict[str, Any]) -> float | None:
    seg = _segments(entry)
    return seg[-1][1] - seg[0][0] if seg else None


def _curves(a: dict[str, Any], b: dict[str, Any], key: str) -> Largest:
    group = Largest(f"{key} delta_chi2")
    for name, curve in a.get(key, {}).items():
        other = b.get(key, {}).get(name)
        if other is None or len(other["delta_chi2"]) != len(curve["delta_chi2"]):
            group.mismatched.append(f"{name}: bins differ or missing")
            continue
        for i, (va, vb) in enumerate(zip(curve["delta_chi2"], other["delta_chi2"], strict=True)):
            na, nb = _number(va), _number(vb)
            if na is not None and nb is not None:
                group.add(f"{name} bin {i}", na, nb)
    return group


def _walk(doc: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            if str(key) not in _SKIP_CARD_KEYS:
                yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _walk(value, f"{path}[{i}]")
    else:
        yield path, doc


def compare_cards(a: Any, b: Any) -> list[Largest]:
    """The largest differences between every number of two card documents; texts and keys
    that differ are listed in the group's ``mismatched``.

    Example:
        >>> g, = compare_cards({"total": 0.3, "stat": "1e-5", "seconds": 9},
        ...                    {"total": 0.3000001, "stat": 1e-5, "seconds": 3})
        >>> g.n, round(g.rel_diff, 7), g.rel_where, g.mismatched
        (2, 3e-07, 'total', [])
    """
    leaves_a, leaves_b = dict(_walk(a)), dict(_walk(b))
    group = Largest("card numbers")
    for path in sorted(leaves_a.keys() | leaves_b.keys()):
        if path not in leaves_a or path not in leaves_b:
            group.mismatched.append(f"{path}: only in the {'first' if path in leaves_a else 'second'}")
            continue
        va, vb = leaves_a[path], leaves_b[path]
        na, nb = _number(va), _number(vb)
        if na is not None and nb is not None:
            group.add(path, na, nb)
        elif va != vb:
            group.mismatched.append(f"{path}: {va!r} vs {vb!r}")
    return [group]


def _read(path: Path) -> Any:
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def main(argv: list[str] | None = None) -> None:
    """Command line: two files in, a table (or ``--json``) out."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--json", action="store_true", help="print the groups as JSON")
    args = parser.parse_args(argv)
    a, b = _read(args.first), _read(args.second)
    is_results = isinstance(a, dict) and "best_fit" in a
    groups = compare_results(a, b) if is_results else compare_cards(a, b)
    if args.json:
        print(json.dumps([g.as_dict() for g in groups], indent=1))
        return
    print(f"{'group':<22} {'n':>6} {'largest abs':>12} {'largest rel':>12} {'in widths':>10}  where")
    for g in groups:
        widths = f"{g.scaled_diff:10.3g}" if g.scaled else f"{'':>10}"
        where = "; ".join(f"{label}: {at}" for label, at in (
            ("abs", g.abs_where), ("rel", g.rel_where), ("widths", g.scaled_where)) if at)
        print(f"{g.group:<22} {g.n:>6} {g.abs_diff:12.4g} {g.rel_diff:12.4g} {widths}  "
              f"{where or '-'}")
        for line in g.mismatched:
            print(f"    differs: {line}")


if __name__ == "__main__":
    main()
