"""The one reader of the package's documents: YAML or JSON in, a validated mapping out.

Every document that crosses a boundary (measurement card, mapping, runcard, results file) is read
by :func:`read_document` and checked by :func:`validate_document` against its JSON schema in
``smeft_pyhf/schemas/`` (all schemas use JSON Schema draft 2020-12, :data:`SCHEMA_DRAFT`). The
errors follow one pattern:

* a missing or unreadable file, or text that is not YAML/JSON: :class:`~smeft_pyhf.exceptions.InputError`
  naming the file (and line and column);
* a document that breaks its schema: the error class the caller names (``ConfigError`` for a
  runcard, ``DataError`` for a card, ``MappingError`` for a mapping, ``InputError`` for a results
  file), with ``where`` set to ``<file>: <field>`` (``sampler.train.n_batches``,
  ``rules[0].pattern``), what was expected, and the valid keys or choices with a close match.

YAML is read with the safe loader plus the YAML 1.2 rule for exponent floats, so ``1e-3`` and
``2e4`` are numbers (PyYAML alone reads them as strings); a quoted ``"1e-3"`` stays a string and
a schema asking for a number refuses it. Schemas may mark a number ``"format": "finite"``, which
refuses NaN and infinities.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "doc.yaml"
    >>> _ = path.write_text("rate: 1e-3\\nsteps: 10\\n")
    >>> schema = {"type": "object", "additionalProperties": False,
    ...           "properties": {"rate": {"type": "number"}, "steps": {"type": "integer"}}}
    >>> read_document(path, schema=schema)
    {'rate': 0.001, 'steps': 10}
    >>> _ = path.write_text("rate: 1e-3\\nstesp: 10\\n")
    >>> read_document(path, schema=schema)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    smeft_pyhf.exceptions.DataError: ...doc.yaml: (top level): unknown key 'stesp'. Hint: did you mean 'steps'? valid keys here: rate, steps
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..exceptions import DataError, InputError, SmeftPyhfError

__all__ = [
    "SCHEMA_DRAFT",
    "YamlLoader",
    "field_path",
    "load_schema",
    "parse_yaml",
    "read_document",
    "schema_path",
    "validate_document",
]

#: The JSON Schema draft of every schema in ``smeft_pyhf/schemas/``.
SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"

_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's exponent floats (``1e-3``, ``-2E+4``).

    Example:
        >>> yaml.load("[1e-3, '1e-3', 2.5e4, 7]", Loader=YamlLoader)
        [0.001, '1e-3', 25000.0, 7]
    """


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def schema_path(name: str) -> Path:
    """The file of the shipped schema ``name`` (``"runcard"``, ``"mapping"``, ...).

    Example:
        >>> schema_path("mapping").name
        'mapping.schema.json'
    """
    return _SCHEMAS / f"{name}.schema.json"


@functools.lru_cache(maxsize=16)
def _load_schema(name: str) -> str:
    return schema_path(name).read_text(encoding="utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """A fresh copy of the shipped schema ``name``.

    Example:
        >>> load_schema("runcard")["$schema"] == SCHEMA_DRAFT
        True
    """
    return json.loads(_load_schema(name))


def field_path(parts: Sequence[Any]) -> str:
    """A field path as text: ``["rules", 0, "pattern"]`` -> ``rules[0].pattern``.

    Example:
        >>> field_path(["sampler", "train", "n_batches"]), field_path([])
        ('sampler.train.n_batches', '(top level)')
    """
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def parse_yaml(text: str, *, where: str, loader: type[yaml.SafeLoader] = YamlLoader) -> Any:
    """Parse YAML text; a syntax error becomes an :class:`InputError` with line and column.

    Example:
        >>> parse_yaml("a: [1, 2", where="x.yaml")
        Traceback (most recent call last):
        ...
        smeft_pyhf.exceptions.InputError: x.yaml: is not valid YAML at line 1, column 9 (expected ',' or ']', but got '<stream end>'). Hint: check indentation, quoting and colons
    """
    try:
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        place = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"is not valid YAML{place} ({problem})", where=where,
                         hint="check indentation, quoting and colons") from err


def read_document(
    path: str | os.PathLike[str],
    *,
    schema: str | Mapping[str, Any] | None = None,
    error: type[SmeftPyhfError] = DataError,
    what: str = "file",
    hint: str | None = None,
    loader: type[yaml.SafeLoader] = YamlLoader,
) -> dict[str, Any]:
    """Read a YAML (or, for ``*.json``, JSON) document and validate it against ``schema``.

    Args:
        path: the file.
        schema: a shipped schema's name (see :func:`load_schema`), a schema mapping, or ``None``
            to check only that the document is a mapping.
        error: the exception raised for a document that is not a mapping or breaks the schema.
        what: what the document is, for the messages (``"runcard"``, ``"measurement card"``).
        hint: what to do when the file is missing.
        loader: the YAML loader (a subclass of ``yaml.SafeLoader``).

    Raises:
        InputError: a missing or unreadable file, or text that is not YAML/JSON.
        SmeftPyhfError: ``error``, for a document that is not a mapping or breaks the schema.

    Example:
        >>> read_document("nope.yaml", what="runcard")
        Traceback (most recent call last):
        ...
        smeft_pyhf.exceptions.InputError: nope.yaml: runcard not found. Hint: check the path
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise InputError(f"{what} not found", where=where, hint=hint or "check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise InputError(f"{what} cannot be read ({reason})", where=where) from err
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"is not valid JSON at line {err.lineno}, column {err.colno} "
                             f"({err.msg})", where=where) from err
    else:
        document = parse_yaml(text, where=where, loader=loader)
    if not isinstance(document, dict):
        raise error(f"a {what} must be a mapping (key: value) at the top level", where=where)
    if schema is not None:
        validate_document(document, schema, where=where, error=error)
    return document


def _finite(checker: Any, instance: Any) -> bool:
    return not isinstance(instance, float) or math.isfinite(instance)


@functools.lru_cache(maxsize=1)
def _format_checker() -> Any:
    import jsonschema

    checker = jsonschema.FormatChecker(formats=())
    checker.checks("finite")(lambda instance: _finite(None, instance))
    return checker


@functools.lru_cache(maxsize=16)
def _validator(text: str) -> Any:
    import jsonschema

    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=_format_checker())


def validate_document(
    document: Any,
    schema: str | Mapping[str, Any],
    *,
    where: str,
    error: type[SmeftPyhfError] = DataError,
) -> None:
    """Validate ``document`` against ``schema``; the first problem raises ``error``.

    An unknown key is reported first (it is usually a typo of a missing one), then the
    shallowest other problem.

    Args:
        document: the parsed document.
        schema: a shipped schema's name or a schema mapping.
        where: the file (or object) named in the error; the field path is appended.
        error: the exception class to raise.

    Example:
        >>> schema = {"type": "object", "properties": {"order": {"enum": ["LO", "NLO"]}}}
        >>> validate_document({"order": "NNLO"}, schema, where="rc.yaml")
        Traceback (most recent call last):
        ...
        smeft_pyhf.exceptions.DataError: rc.yaml: order: invalid value 'NNLO'. Hint: did you mean 'NLO'? valid choices: LO, NLO
    """
    text = _load_schema(schema) if isinstance(schema, str) else json.dumps(schema, sort_keys=True)
    errors = list(_validator(text).iter_errors(document))
    if not errors:
        return
    unknown = [e for e in errors if e.validator == "additionalProperties"]
    first = min(unknown or errors, key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
    message, hint = _describe(first)
    raise error(message, where=f"{where}: {field_path(list(first.absolute_path))}", hint=hint)


_TYPE_WORDS = {"integer": "an integer", "number": "a number", "boolean": "true/false",
               "string": "a string", "array": "a list", "object": "a mapping", "null": "null"}


def _close(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? " if close else ""


def _describe(err: Any) -> tuple[str, str | None]:
    """A one-line message and a hint for a jsonschema error."""
    kind, value, schema = err.validator, err.instance, err.schema
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed)) if isinstance(value, dict) else []
        bad = extra[0] if extra else "?"
        shown = ", ".join(allowed[:40]) + (" ..." if len(allowed) > 40 else "")
        hint = _close(bad, allowed) + (f"valid keys here: {shown}" if allowed else
                                        "no other keys are allowed here")
        return f"unknown key {bad!r}", hint
    if kind == "required":
        return err.message, "add the missing key"
    if kind == "enum":
        choices = [str(c) for c in err.validator_value]
        hint = _close(str(value), choices) + "valid choices: " + ", ".join(choices)
        return f"invalid value {value!r}", hint
    if kind == "const":
        return f"invalid value {value!r}", f"the only supported value is {err.validator_value!r}"
    if kind == "type":
        types = err.validator_value if isinstance(err.validator_value, list) else [
            err.validator_value]
        expected = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        return f"expected {expected}, got {value!r}", schema.get("description")
    if kind == "format" and err.validator_value == "finite":
        return f"expected a finite number, got {value!r}", schema.get("description")
    if kind in ("minItems", "maxItems") and isinstance(value, list):
        n = err.validator_value
        if schema.get("minItems") == schema.get("maxItems"):
            return f"expected a list of {n} values, got {len(value)}: {value!r}", None
    if kind in ("oneOf", "anyOf"):
        title = schema.get("title", "value")
        return f"invalid {title}: {value!r}", schema.get("description")
    return err.message, schema.get("description")
