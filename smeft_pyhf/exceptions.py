"""Domain exceptions.

Every error that a user can cause (a bad file, a bad key, a bad value) is raised as a
:class:`SmeftPyhfError` subclass carrying *what* was wrong, *where* (file and field) and *what to
do*. The CLI turns these into a one-paragraph message and exit code 2; library users catch them.

Example:
    >>> from smeft_pyhf.exceptions import InputError
    >>> err = InputError("is not valid JSON", where="ws.json", hint="check the file")
    >>> str(err)
    'ws.json: is not valid JSON. Hint: check the file'
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "InputError",
    "MappingError",
    "SmeftPyhfError",
    "UnmappedParametersError",
    "WorkspaceError",
]


class SmeftPyhfError(Exception):
    """Base class of all errors smeft-pyhf raises on purpose.

    Args:
        message: what was wrong.
        where: the file (and field) concerned, if any.
        hint: what the user can do about it.
    """

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f". Hint: {self.hint}"
        return text


class InputError(SmeftPyhfError):
    """A file could not be read or parsed (missing, malformed JSON/YAML, unwritable output)."""


class WorkspaceError(SmeftPyhfError):
    """A HistFactory workspace is invalid or cannot be used as asked (schema, POI, patch)."""


class MappingError(SmeftPyhfError):
    """A nuisance-parameter mapping YAML is invalid (bad regex, unknown category, bad key)."""


class UnmappedParametersError(MappingError):
    """Some nuisance parameters match no rule of the mapping and are not listed as ignored."""


class ConfigError(SmeftPyhfError):
    """A runcard or sampler configuration is invalid (unknown key, bad range, unknown name)."""


class DataError(SmeftPyhfError):
    """A dataset, theory table or measurement card is inconsistent (NaN, lengths, covariance)."""
