"""Atomic writes, folders and hashes in smeft_pyhf._io."""

from __future__ import annotations

import hashlib
import os

import pytest

from smeft_pyhf._io import atomic_directory, atomic_write_text, sha256_file
from smeft_pyhf.exceptions import InputError


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "card.yaml"
    atomic_write_text(target, "a: 1\n")
    atomic_write_text(target, "a: 2\n")
    assert target.read_text() == "a: 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["card.yaml"]


def test_atomic_write_missing_folder_is_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        atomic_write_text(tmp_path / "nope" / "card.yaml", "x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_atomic_write_unwritable_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(InputError, match="not writable"):
        atomic_write_text(ro / "card.yaml", "x")


def test_atomic_write_parent_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="not a folder"):
        atomic_write_text(blocker / "card.yaml", "x")


def test_atomic_directory_crash_leaves_nothing(tmp_path):
    out = tmp_path / "results"
    with pytest.raises(RuntimeError), atomic_directory(out) as work:
        (work / "results.json").write_text("{}")
        raise RuntimeError("killed")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_refuses_existing_without_overwrite(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    with pytest.raises(InputError, match="already exists"), atomic_directory(out):
        pass
    with atomic_directory(out, overwrite=True) as work:
        (work / "a").write_text("1")
    assert (out / "a").read_text() == "1"


def test_sha256_matches_hashlib(tmp_path):
    p = tmp_path / "x.bin"
    payload = os.urandom(3 << 20)
    p.write_bytes(payload)
    assert sha256_file(p) == hashlib.sha256(payload).hexdigest()
