"""The runcard's ``sampler`` block: its JSON schema, generated from the sampler's dataclasses,
and the sampler configuration built from a validated block.

The schema of the block is derived from :class:`~smeft_pyhf.sampler.pipeline.SamplerConfig` and
its step configurations (:class:`~smeft_pyhf.sampler.config.PrescaleConfig`,
:class:`~smeft_pyhf.sampler.config.FlowConfig`, :class:`~smeft_pyhf.sampler.config.PretrainConfig`,
:class:`~smeft_pyhf.sampler.config.TrainConfig`, :class:`~smeft_pyhf.sampler.sampling.SampleConfig`,
:class:`~smeft_pyhf.sampler.profiling.ProfileConfig`), one property per field with the type of its
annotation (:func:`dataclass_schema`): ``int`` -> integer, ``float`` -> finite number (``inf``
allowed where the field's metadata says ``allow_inf``), ``bool``, ``str``, ``Literal[...]`` ->
the choices, ``X | None`` -> also null, ``tuple[float, float]`` -> a list of two numbers, a
nested dataclass -> a mapping of its fields. Unknown keys are refused with the valid ones.
Field metadata ``minimum``, ``maximum``, ``exclusiveMinimum`` and ``exclusiveMaximum`` become the
JSON Schema bounds; other value checks are the dataclasses' own (``__post_init__``), raised again
naming the runcard and the step.

Numbers must be numbers: YAML ``1e-3`` is one (the reader follows YAML 1.2 there), a quoted
``"1e-3"`` is a string and is refused. Integers may be written as integral floats (``1.0e+8``).

Example:
    >>> schema = sampler_schema()
    >>> schema["properties"]["train"]["properties"]["n_batches"]["type"]
    'integer'
    >>> build_sampler_config({"paper": "combined", "train": {"n_batches": 7}}).train.n_batches
    7
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from ..exceptions import ConfigError
from ..formats.reader import load_schema, validate_document

__all__ = ["build_sampler_config", "dataclass_schema", "runcard_schema", "sampler_schema"]

_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _type_schema(annotation: Any, *, allow_inf: bool = False) -> dict[str, Any]:
    """The JSON schema of one type annotation (see the module docstring)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        nullable = len(options) < len(args)
        if len(options) == 1:
            inner = _type_schema(options[0], allow_inf=allow_inf)
            if not nullable:
                return inner
            if isinstance(inner.get("type"), str):
                return {**inner, "type": [inner["type"], "null"]}
            if "enum" in inner:
                return {**inner, "enum": [*inner["enum"], None]}
            return {"anyOf": [inner, {"type": "null"}]}
        schemas = [_type_schema(a, allow_inf=allow_inf) for a in options]
        return {"anyOf": schemas + ([{"type": "null"}] if nullable else [])}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _type_schema(args[0], allow_inf=allow_inf)}
        return {"type": "array", "minItems": len(args), "maxItems": len(args),
                "prefixItems": [_type_schema(a, allow_inf=allow_inf) for a in args]}
    if dataclasses.is_dataclass(annotation):
        return dataclass_schema(annotation)
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        return {"type": "number"} if allow_inf else {"type": "number", "format": "finite"}
    if annotation is str:
        return {"type": "string"}
    return {}


def dataclass_schema(cls: type) -> dict[str, Any]:
    """The JSON schema of a mapping of (some of) the fields of the dataclass ``cls``.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Step:
        ...     rate: float = 1e-3
        ...     chunk: int | None = None
        ...     mode: Literal["a", "b"] = "a"
        >>> dataclass_schema(Step)["properties"]
        {'rate': {'type': 'number', 'format': 'finite', 'default': 0.001}, 'chunk': {'type': ['integer', 'null'], 'default': None}, 'mode': {'enum': ['a', 'b'], 'default': 'a'}}
    """
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        schema = _type_schema(hints[field.name],
                              allow_inf=bool(field.metadata.get("allow_inf", False)))
        schema.update({k: field.metadata[k] for k in _BOUNDS if k in field.metadata})
        if field.default is not dataclasses.MISSING:
            schema["default"] = _plain(field.default)
        properties[field.name] = schema
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "title": cls.__name__}


def _sampler_class() -> type:
    from ..sampler.pipeline import SamplerConfig

    return SamplerConfig


@functools.lru_cache(maxsize=1)
def sampler_schema() -> dict[str, Any]:
    """The schema of the runcard's ``sampler`` block: :class:`SamplerConfig`'s fields and
    ``paper`` (the Table 5 column to start from).

    Example:
        >>> sampler_schema()["properties"]["paper"]
        {'enum': ['top', 'higgs', 'combined'], 'default': 'top', 'description': "the column of the paper's Table 5 the settings start from"}
    """
    from ..sampler.config import Sector

    schema = dataclass_schema(_sampler_class())
    schema["properties"]["paper"] = {
        "enum": list(typing.get_args(Sector)), "default": "top",
        "description": "the column of the paper's Table 5 the settings start from"}
    schema["description"] = load_schema("runcard")["properties"]["sampler"]["description"]
    return schema


@functools.lru_cache(maxsize=1)
def runcard_schema() -> dict[str, Any]:
    """The complete runcard schema: ``smeft_pyhf/schemas/runcard.schema.json`` with its
    ``sampler`` block from :func:`sampler_schema`.

    Example:
        >>> runcard_schema()["properties"]["sampler"]["additionalProperties"]
        False
    """
    schema = load_schema("runcard")
    schema["properties"]["sampler"] = sampler_schema()
    return schema


def _convert(annotation: Any, value: Any) -> Any:
    """A validated value as the field's type (integral floats to ``int``, lists to tuples)."""
    if value is None:
        return None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _convert(options[0], value) if len(options) == 1 else value
    if origin is tuple:
        kinds = (args[0],) * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        return tuple(_convert(k, v) for k, v in zip(kinds, value, strict=True))
    if annotation is int:
        return int(value)  # the schema allows integral floats such as 1.0e+8
    if annotation is float:
        return float(value)
    return value


def _build(config: Any, block: Mapping[str, Any], where: str) -> Any:
    """``config`` with the settings of a validated ``block`` (nested dataclasses recursed)."""
    hints = typing.get_type_hints(type(config))
    changes = {
        key: _build(getattr(config, key), value, f"{where}.{key}")
        if dataclasses.is_dataclass(getattr(config, key)) else _convert(hints[key], value)
        for key, value in block.items()
    }
    try:
        return dataclasses.replace(config, **changes)
    except ConfigError as err:  # a check of the config itself: name the runcard and the step
        raise ConfigError(err.message, where=where, hint=err.hint) from err


def build_sampler_config(block: Mapping[str, Any] | None, *, where: str = "sampler") -> Any:
    """The sampler configuration of a runcard's ``sampler`` block.

    The block is validated against :func:`sampler_schema` (a runcard read by
    :func:`~smeft_pyhf.fit.runcard.load_runcard` already was); ``paper`` picks the Table 5
    column to start from (``top``, the default; ``higgs``; ``combined``, for fits of 40-50
    coefficients), then every setting given replaces the column's value.

    Args:
        block: ``{"paper": ..., step: {setting: value}, setting: value}``, or ``None``.
        where: file and field shown in errors (``"rc.yaml: sampler"``).

    Raises:
        ConfigError: an unknown step or setting (with the valid ones and a close match), a value
            of the wrong type, or one the configuration refuses, naming ``where`` and the field.

    Example:
        >>> build_sampler_config({"train": {"n_batches": "many"}}, where="rc.yaml: sampler")
        Traceback (most recent call last):
        ...
        smeft_pyhf.exceptions.ConfigError: rc.yaml: sampler: train.n_batches: expected an integer, got 'many'
    """
    block = dict(block or {})
    validate_document(block, sampler_schema(), where=where, error=ConfigError)
    column = block.pop("paper", None)
    cls = _sampler_class()
    base = cls() if column is None else cls.paper(column)
    return _build(base, block, where)
