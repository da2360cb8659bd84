"""Small I/O helpers: atomic writes and content hashes.

Nothing half-written stays on disk: every file is written to a temporary sibling and renamed
into place; a folder is built under a temporary name and renamed when complete.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_text(d / "a.txt", "hello")
    >>> (d / "a.txt").read_text()
    'hello'
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .exceptions import InputError

__all__ = [
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable_parent",
    "sha256_file",
]


def check_writable_parent(path: str | os.PathLike[str], *, option: str = "output path") -> None:
    """Raise :class:`InputError` unless ``path``'s folder exists, is a folder and is writable.

    Args:
        path: the file (or folder) about to be written.
        option: how the hint names the user's choice (e.g. ``"--output"``).

    Example:
        >>> check_writable_parent("/nonexistent-folder/card.yaml", option="--output")
        Traceback (most recent call last):
        ...
        smeft_pyhf.exceptions.InputError: /nonexistent-folder/card.yaml: cannot write output: folder '/nonexistent-folder' does not exist. Hint: create the folder first or choose another --output
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise InputError(
            f"cannot write output: folder '{parent}' does not exist",
            where=str(path),
            hint=f"create the folder first or choose another {option}",
        )
    if not parent.is_dir():
        raise InputError(
            f"cannot write output: '{parent}' is not a folder",
            where=str(path),
            hint=f"choose another {option} inside an existing folder",
        )
    if not os.access(parent, os.W_OK):
        raise InputError(
            f"cannot write output: folder '{parent}' is not writable",
            where=str(path),
            hint=f"choose an {option} in a folder you can write to",
        )


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    Raises:
        InputError: if the folder is missing or not writable.
    """
    path = Path(path)
    check_writable_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    except OSError as err:
        raise InputError(
            f"cannot write output: {err.strerror}",
            where=str(path),
            hint="choose an output path in a folder you can write to",
        ) from err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically. See :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name; rename it to ``path`` only on success.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_directory(root / "out") as tmp:
        ...     _ = (tmp / "f.txt").write_text("x")
        >>> sorted(p.name for p in (root / "out").iterdir())
        ['f.txt']
    """
    path = Path(path)
    check_writable_parent(path)
    if path.exists() and not overwrite:
        raise InputError(
            "output folder already exists",
            where=str(path),
            hint="remove it, choose another --output, or pass --overwrite",
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x"
        >>> _ = p.write_bytes(b"")
        >>> sha256_file(p)[:12]
        'e3b0c44298fc'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
