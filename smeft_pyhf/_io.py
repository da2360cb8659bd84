"""Safe output: atomic files and folders, output locks, tensor files, content hashes.

Nothing half-written stays on disk and nothing the tool did not write is ever deleted:

* a file is written to a hidden temporary sibling and renamed into place
  (:func:`atomic_write_bytes`); renaming replaces a symbolic link itself, never its target;
* a folder is built under a hidden temporary name and published when complete
  (:func:`atomic_directory`); it carries a manifest of the files the tool wrote, and only a folder
  whose every file is in its manifest (or an empty one) is ever replaced. Replacing swaps the two
  folders in one step where the system allows it (Linux ``renameat2``), so a kill leaves either
  the old or the new folder whole;
* temporary siblings left by a killed process are removed the next time the same path is
  written (their names carry host and pid, so a live writer's are never touched);
* one process at a time writes an output (:func:`output_lock`); a lock left by a dead process
  is taken over with a warning;
* files and folders get the permissions the umask allows, as with a plain ``open``.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_text(d / "a.txt", "hello")
    >>> (d / "a.txt").read_text()
    'hello'
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .exceptions import InputError

log = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_NAME",
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_replaceable_folder",
    "check_writable_parent",
    "load_tensors",
    "output_lock",
    "record_in_manifest",
    "remove_stale_siblings",
    "save_tensors",
    "sha256_file",
]

MANIFEST_NAME = ".smeft-pyhf-manifest.json"
"""File inside every folder :func:`atomic_directory` writes: the files the tool put there."""

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname() or "host")[:40]
_TAG = re.compile(
    r"\.(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.[A-Za-z0-9_]+(?P<kind>\.tmp|\.partial|\.old)"
)


# ------------------------------------------------------------------ permissions and names
def current_umask() -> int:
    """The process umask (read without changing it where ``/proc`` allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _follow_umask(path: str | os.PathLike[str], *, folder: bool) -> None:
    """``mkstemp``/``mkdtemp`` create 0600/0700: give ``path`` what a plain ``open`` would."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{_HOST}-{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def remove_stale_siblings(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary siblings of ``path`` left by dead processes of this host.

    They are the hidden ``.NAME.HOST-PID.XXXX.tmp`` files and ``.NAME.HOST-PID.XXXX.partial``
    folders that :func:`atomic_write_bytes` and :func:`atomic_directory` create; those of a
    process that still runs, or of another host, are left alone. A folder set aside while it
    was being replaced (``.NAME.HOST-PID.XXXX.old``) is put back at ``path`` if the process died
    before the new one took its place, and removed otherwise.

    Returns:
        The paths removed.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / f".out.{_HOST}-999999999.abcd1234.tmp").write_text("torn")
        >>> [p.name.endswith(".tmp") for p in remove_stale_siblings(d / "out")]
        [True]
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    removed: list[Path] = []
    prefix = f".{path.name}."
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    stale = []
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        match = _TAG.fullmatch(entry.name[len(prefix) - 1:])
        if match is None or match["host"] != _HOST or _pid_alive(int(match["pid"])):
            continue
        stale.append((match["kind"] != ".old", entry))  # set-aside folders first
    for _, entry in sorted(stale):
        if entry.name.endswith(".old") and not os.path.lexists(path):
            os.rename(entry, path)
            log.warning("put back %s at %s: a run was killed while replacing it", entry, path)
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        log.warning("removed %s, left by a run that was killed", entry)
        removed.append(entry)
    return removed


# ------------------------------------------------------------------ files
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

    A symbolic link at ``path`` is replaced by the file; its target is left untouched. The
    file's permissions follow the umask.

    Raises:
        InputError: if the folder is missing or not writable.
    """
    path = Path(path)
    check_writable_parent(path)
    remove_stale_siblings(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent or ".")
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
        _follow_umask(tmp, folder=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically. See :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


# ------------------------------------------------------------------ folders
def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux ``renameat2``; False where the system or file system does not offer it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if call(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(dst))


_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (True), or report that the system cannot (False)."""
    return _renameat2(a, b, _RENAME_EXCHANGE)


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; raise ``FileExistsError`` if ``dst`` exists."""
    if _renameat2(src, dst, _RENAME_NOREPLACE):
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "exists", str(dst))
    os.rename(src, dst)


def _listing(folder: Path) -> list[str]:
    """Relative paths of everything below ``folder`` (links not followed), sorted."""
    out = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        out += [str(rel / name) for name in files]
        out += [str(rel / name) + "/" for name in dirs if (Path(root) / name).is_symlink()]
    return sorted(p.removeprefix("./") for p in out)


def check_replaceable_folder(path: str | os.PathLike[str], *, option: str = "--output") -> None:
    """Raise :class:`InputError` unless ``path`` may be replaced by a new output folder.

    Replaceable are an empty folder and a folder written by :func:`atomic_directory` that
    holds nothing beyond the files of its manifest. Never a symbolic link (its target would be
    lost), a file, or a folder holding files the tool did not write (a project folder given as
    ``-o .``, say).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "notes.txt").write_text("mine")
        >>> check_replaceable_folder(d)
        Traceback (most recent call last):
        ...
        smeft_pyhf.exceptions.InputError: ...: will not replace a folder smeft-pyhf did not write (it holds notes.txt). Hint: choose another --output; --overwrite replaces only a results folder written by smeft-pyhf
    """
    path = Path(path)
    hint = f"choose another {option}; --overwrite replaces only a results folder written by smeft-pyhf"
    if path.is_symlink():
        raise InputError(
            f"will not replace a symbolic link (to '{os.readlink(path)}')",
            where=str(path),
            hint=f"give the folder it points to as {option}, or choose another {option}",
        )
    if not path.is_dir():
        raise InputError("exists and is not a folder", where=str(path), hint=hint)
    if path.resolve() == Path.cwd().resolve() or path.resolve() in Path.cwd().resolve().parents:
        raise InputError("will not replace the working folder or a folder above it",
                         where=str(path), hint=hint)
    present = _listing(path)
    if not present:
        return
    manifest = path / MANIFEST_NAME
    written: set[str] = set()
    if manifest.is_file() and not manifest.is_symlink():
        with contextlib.suppress(OSError, ValueError, TypeError):
            written = set(json.loads(manifest.read_text())["files"])
    foreign = [p for p in present if p != MANIFEST_NAME and p not in written]
    if not written or foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise InputError(
            f"will not replace a folder smeft-pyhf did not write (it holds {shown})",
            where=str(path),
            hint=hint,
        )


class _Blocked(Exception):
    """The finished folder cannot be published at its path (see :func:`atomic_directory`)."""


def record_in_manifest(folder: str | os.PathLike[str], files: list[str]) -> None:
    """Add ``files`` (names relative to ``folder``) to the manifest of a folder the tool wrote.

    A folder without a manifest is left as it is: it was not written by
    :func:`atomic_directory`, so it stays a folder that is never replaced.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_directory(root / "out") as tmp:
        ...     _ = (tmp / "results.json").write_text("{}")
        >>> _ = (root / "out" / "extra.png").write_bytes(b"")
        >>> record_in_manifest(root / "out", ["extra.png"])
        >>> check_replaceable_folder(root / "out")
    """
    manifest = Path(folder) / MANIFEST_NAME
    if not manifest.is_file() or manifest.is_symlink():
        return
    try:
        data = json.loads(manifest.read_text())
        known = list(data["files"])
    except (OSError, ValueError, TypeError, KeyError):
        return
    data["files"] = sorted(set(known) | set(files))
    atomic_write_text(manifest, json.dumps(data) + "\n")


def _publish(tmp: Path, path: Path, *, overwrite: bool, option: str) -> None:
    """Move the finished folder ``tmp`` to ``path`` (see :func:`atomic_directory`)."""
    files = _listing(tmp)
    atomic_write_text(tmp / MANIFEST_NAME, json.dumps({"tool": "smeft-pyhf", "files": files}) + "\n")
    if os.path.lexists(path):
        if not overwrite:
            raise _Blocked("something appeared at the output path while the results were written")
        try:
            check_replaceable_folder(path, option=option)
        except InputError as err:
            raise _Blocked(f"the output path changed while the results were written: {err.message}") from None
        if _exchange(tmp, path):
            # ``tmp`` now holds the old folder: a kill here leaves the new one whole at ``path``
            shutil.rmtree(tmp, ignore_errors=True)
            return
        # no one-step swap here: set the old folder aside under a name that
        # remove_stale_siblings puts back if the process dies before the new one is in place
        aside = path.with_name(f"{_temp_prefix(path)}{os.urandom(4).hex()}.old")
        os.rename(path, aside)
        os.rename(tmp, path)
        shutil.rmtree(aside, ignore_errors=True)
        return
    try:
        _rename_noreplace(tmp, path)
    except FileExistsError:
        raise _Blocked("something appeared at the output path while the results were written") from None


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    option: str = "--output",
) -> Iterator[Path]:
    """Build a folder under a temporary name; publish it at ``path`` only on success.

    Args:
        path: the folder to write.
        overwrite: replace an existing folder, if :func:`check_replaceable_folder` allows it.
        option: how messages name the user's choice of ``path``.

    Raises:
        InputError: ``path`` exists (without ``overwrite``) or may not be replaced; something
            appeared at ``path`` while the folder was built (the finished folder is then kept
            under a visible new name given in the message).

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_directory(root / "out") as tmp:
        ...     _ = (tmp / "f.txt").write_text("x")
        >>> sorted(p.name for p in (root / "out").iterdir())
        ['.smeft-pyhf-manifest.json', 'f.txt']
    """
    path = Path(path)
    check_writable_parent(path, option=option)
    if os.path.lexists(path):
        if not overwrite:
            raise InputError(
                "output folder already exists",
                where=str(path),
                hint=f"remove it, choose another {option}, or pass --overwrite",
            )
        check_replaceable_folder(path, option=option)
    remove_stale_siblings(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".partial", dir=path.parent))
    _follow_umask(tmp, folder=True)
    try:
        yield tmp
        _publish(tmp, path, overwrite=overwrite, option=option)
    except _Blocked as blocked:
        kept = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        os.rename(tmp, kept)
        raise InputError(
            f"{blocked}; it was left as it is and the new results are in '{kept}'",
            where=str(path),
            hint="compare the two folders and rename the one to keep",
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------ locks
def _process_start(pid: int) -> str | None:
    """Start time of a process (Linux ``/proc``), to tell a reused pid from the locker."""
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    return None


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file of an output: ``.NAME.lock`` beside it."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def _lock_holder(lock: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(lock.read_text())
        if isinstance(data, dict):
            return data
    return {}


def _holder_alive(holder: Mapping[str, Any], lock: Path) -> bool | None:
    """True/False for a holder on this host, None when it cannot be told (other host)."""
    if not holder:  # empty or torn: its writer died between creating and filling it
        with contextlib.suppress(OSError):
            return time.time() - lock.stat().st_mtime < 10.0
        return False
    if holder.get("host") != _HOST:
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return False
    started = holder.get("process_start")
    return started is None or started == _process_start(pid)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike[str], *, option: str = "--output") -> Iterator[Path]:
    """Hold the lock of an output for the duration of the block.

    The lock is the file ``.NAME.lock`` beside ``path`` holding the pid, host, start time and
    command of its holder. A second holder is refused at once; a lock whose holder process no
    longer runs on this host is taken over with a warning.

    Raises:
        InputError: another live process (or one on another host) holds the lock.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "results"
        >>> with output_lock(out) as lock:
        ...     lock.name
        '.results.lock'
    """
    path = Path(path)
    check_writable_parent(path, option=option)
    lock = lock_path(path)
    me = {
        "pid": os.getpid(),
        "host": _HOST,
        "process_start": _process_start(os.getpid()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv)[:500],
    }
    payload = (json.dumps(me) + "\n").encode()
    for _attempt in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            holder = _lock_holder(lock)
            alive = _holder_alive(holder, lock)
            if alive is False:
                log.warning(
                    "taking over the lock %s of pid %s on %s (started %s), which no longer runs",
                    lock, holder.get("pid", "?"), holder.get("host", "?"), holder.get("started", "?"),
                )
                # claim the stale file by renaming it: of two runs taking over, one wins
                claimed = lock.with_name(f"{lock.name}.{_HOST}-{os.getpid()}.stale")
                with contextlib.suppress(FileNotFoundError):
                    os.rename(lock, claimed)
                    if _lock_holder(claimed) != holder:  # a fresh lock of a faster run: put back
                        with contextlib.suppress(FileExistsError):
                            _rename_noreplace(claimed, lock)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(claimed)
                continue
            who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
            raise InputError(
                f"another smeft-pyhf run ({who}, started {holder.get('started', '?')}: "
                f"{holder.get('command', '?')}) is writing this output",
                where=str(path),
                hint=(f"wait for it to finish or choose another {option}; if that run is dead, "
                      f"delete the lock file {lock}"),
            ) from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        break
    else:
        raise InputError("could not take the output lock", where=str(lock),
                         hint="another run is starting on the same output; try again")
    try:
        yield lock
    finally:
        if _lock_holder(lock).get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()


# ------------------------------------------------------------------ tensor files
def _to_plain(value: Any) -> Any:
    import numpy as np
    import torch

    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {"__namedtuple__": type(value).__name__,
                "fields": {k: _to_plain(v) for k, v in value._asdict().items()}}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _to_plain(v) for k, v in value.items()}
        return {"__items__": [[_to_plain(k), _to_plain(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_plain(v) for v in value)
    return value


def _from_plain(value: Any, types: Mapping[str, type]) -> Any:
    if isinstance(value, dict):
        if "__namedtuple__" in value:
            name = value["__namedtuple__"]
            if name not in types:
                raise ValueError(f"unknown record type {name!r}")
            return types[name](**{k: _from_plain(v, types) for k, v in value["fields"].items()})
        if "__ndarray__" in value:
            return value["__ndarray__"].numpy()
        if "__items__" in value:
            return {_from_plain(k, types): _from_plain(v, types) for k, v in value["__items__"]}
        return {k: _from_plain(v, types) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_plain(v, types) for v in value]
    if isinstance(value, tuple):
        return tuple(_from_plain(v, types) for v in value)
    return value


def save_tensors(path: str | os.PathLike[str], value: Any) -> None:
    """Write nested dicts, lists, NamedTuples, tensors and arrays atomically (torch format).

    The file holds only containers, numbers, strings and tensors, so :func:`load_tensors`
    reads it with ``torch.load(weights_only=True)``: a planted pickle cannot run code.

    Example:
        >>> import tempfile, pathlib, numpy as np
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.pt"
        >>> save_tensors(p, {"a": np.arange(3.0), ("x", "y"): 1})
        >>> load_tensors(p)
        {'a': array([0., 1., 2.]), ('x', 'y'): 1}
    """
    import torch

    buffer = io.BytesIO()
    torch.save(_to_plain(value), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_tensors(
    path: str | os.PathLike[str],
    *,
    types: Mapping[str, type] | None = None,
    map_location: Any = None,
) -> Any:
    """Read a file written by :func:`save_tensors`; NamedTuples are rebuilt from ``types``.

    Raises:
        ValueError: the file is damaged, was not written by :func:`save_tensors`, or names a
            record type missing from ``types`` (callers decide whether to ignore it).
    """
    import pickle

    import torch

    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning: refused below
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, AttributeError) as err:
        raise ValueError(f"unreadable tensor file: {err}") from err
    return _from_plain(raw, dict(types or {}))


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

