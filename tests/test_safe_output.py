"""Output safety in smeft_pyhf._io: what --overwrite may replace, swaps that survive a kill,
temporary siblings of dead writers, the output lock, umask, symlinks and tensor files."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from smeft_pyhf import _io
from smeft_pyhf._io import (
    MANIFEST_NAME,
    atomic_directory,
    atomic_write_text,
    check_replaceable_folder,
    load_tensors,
    lock_path,
    output_lock,
    remove_stale_siblings,
    save_tensors,
)
from smeft_pyhf.exceptions import InputError


def results_folder(path: Path, text: str = "old") -> Path:
    with atomic_directory(path) as tmp:
        (tmp / "results.json").write_text(text)
        (tmp / "plots").mkdir()
        (tmp / "plots" / "a.pdf").write_text(text)
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------ what may be replaced
def test_overwrite_replaces_a_results_folder(tmp_path):
    out = results_folder(tmp_path / "res")
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "results.json").write_text("new")
    assert (out / "results.json").read_text() == "new"
    assert not (out / "plots").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]  # nothing left beside it
    assert json.loads((out / MANIFEST_NAME).read_text())["files"] == ["results.json"]


def test_overwrite_refuses_a_project_folder_and_leaves_it_whole(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "cards").mkdir(parents=True)
    (project / "cards" / "ttZ.yaml").write_text("card")
    (project / "notes.txt").write_text("mine")
    monkeypatch.chdir(project)
    with pytest.raises(InputError, match="working folder"), atomic_directory(
        Path("."), overwrite=True
    ):
        raise AssertionError("must not start")
    # the same check by path, from outside the folder
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"did not write \(it holds cards/ttZ.yaml, notes.txt\)"):
        check_replaceable_folder(project)
    assert (project / "notes.txt").read_text() == "mine"
    assert (project / "cards" / "ttZ.yaml").read_text() == "card"


def test_overwrite_refuses_a_results_folder_holding_a_users_file(tmp_path):
    out = results_folder(tmp_path / "res")
    (out / "my_notes.md").write_text("keep")
    with pytest.raises(InputError, match=r"my_notes\.md"), atomic_directory(out, overwrite=True):
        pass
    assert (out / "my_notes.md").read_text() == "keep"


def test_overwrite_never_touches_a_symlinks_target(tmp_path):
    target = results_folder(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(InputError, match="symbolic link"), atomic_directory(link, overwrite=True):
        pass
    assert (target / "results.json").read_text() == "old"
    assert link.is_symlink()


def test_something_appearing_meanwhile_is_kept_and_so_are_the_new_results(tmp_path):
    out = tmp_path / "res"
    with pytest.raises(InputError, match="appeared") as err, atomic_directory(out) as tmp:
        (tmp / "results.json").write_text("new")
        out.mkdir()
        (out / "user.txt").write_text("theirs")
    assert (out / "user.txt").read_text() == "theirs"
    kept = Path(str(err.value).split("new results are in '")[1].split("'")[0])
    assert (kept / "results.json").read_text() == "new"


# ------------------------------------------------------------------ kills
KILLER = """
import os, signal, sys
from pathlib import Path
from smeft_pyhf import _io
if sys.argv[2] == "fallback":
    _io._exchange = lambda a, b: False
    real_rename = os.rename
    def rename(src, dst):
        real_rename(src, dst)
        if str(dst).endswith(".old"):        # old folder set aside, new one not yet in place
            os.kill(os.getpid(), signal.SIGKILL)
    _io.os.rename = rename
else:
    def rmtree(path, ignore_errors=False):   # swapped: kill while removing the old folder
        os.kill(os.getpid(), signal.SIGKILL)
    _io.shutil.rmtree = rmtree
with _io.atomic_directory(Path(sys.argv[1]), overwrite=True) as tmp:
    (tmp / "results.json").write_text("new")
"""


@pytest.mark.parametrize("how", ["exchange", "fallback"])
def test_a_kill_in_the_swap_window_leaves_old_or_new_whole(tmp_path, how):
    out = results_folder(tmp_path / "res")
    proc = subprocess.run([sys.executable, "-c", KILLER, str(out), how], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    if how == "exchange":
        # one-step swap: the new folder is in place; the old one sits in a hidden sibling
        assert (out / "results.json").read_text() == "new"
    else:
        assert not out.exists()  # between the two renames
    leftovers = [p for p in tmp_path.iterdir() if p.name != "res"]
    assert leftovers and all(p.name.startswith(".res.") for p in leftovers)
    # the next write of the same path cleans up (and puts the old folder back if needed)
    remove_stale_siblings(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    expected = "new" if how == "exchange" else "old"
    assert (out / "results.json").read_text() == expected
    assert (out / "plots" / "a.pdf").exists() == (expected == "old")


def test_stale_temporary_files_of_dead_writers_only_are_removed(tmp_path):
    target = tmp_path / "card.yaml"
    dead = tmp_path / f".card.yaml.{_io._HOST}-{dead_pid()}.abcd1234.tmp"
    live = tmp_path / f".card.yaml.{_io._HOST}-{os.getpid()}.efgh5678.tmp"
    other_host = tmp_path / ".card.yaml.elsewhere-1.ijkl9012.tmp"
    for p in (dead, live, other_host):
        p.write_text("torn")
    atomic_write_text(target, "a: 1\n")
    assert not dead.exists()
    assert live.exists() and other_host.exists()


# ------------------------------------------------------------------ lock
def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "res"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from smeft_pyhf._io import output_lock
            with output_lock({str(out)!r}):
                print("locked", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(InputError, match=f"pid {holder.pid} on host"), output_lock(out):
            pass
    finally:
        holder.kill()
        holder.wait()
    with output_lock(out) as lock:  # free again once the holder is gone (taken over)
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock_path(out).exists()


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    out = tmp_path / "res"
    pid = dead_pid()
    lock_path(out).write_text(json.dumps({"pid": pid, "host": _io._HOST, "started": "then"}))
    with caplog.at_level("WARNING"), output_lock(out):
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()
    assert f"of pid {pid}" in caplog.text and "no longer runs" in caplog.text
    # a torn (empty) lock file older than a few seconds is stale as well
    lock_path(out).write_text("")
    os.utime(lock_path(out), (0, 0))
    with output_lock(out):
        pass


# ------------------------------------------------------------------ permissions, links
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_and_folders_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "card.yaml", "x")
        with atomic_directory(tmp_path / "res") as tmp:
            (tmp / "results.json").write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "card.yaml").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "res").stat().st_mode & 0o777 == 0o777 & ~mask
    assert (tmp_path / "res" / MANIFEST_NAME).stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_write_replaces_a_planted_symlink_not_its_target(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "card.yaml"
    link.symlink_to(victim)
    atomic_write_text(link, "card")
    assert victim.read_text() == "precious"
    assert not link.is_symlink() and link.read_text() == "card"


# ------------------------------------------------------------------ tensor files
class Planted:
    def __reduce__(self):
        return (os.system, ("touch planted-code-ran",))


def test_tensor_files_round_trip_and_refuse_pickles(tmp_path, monkeypatch):
    from smeft_pyhf.results.results_file import Histogram1D

    value = {"h": {"cA": Histogram1D(np.arange(3.0), np.array([0.0, np.inf]))},
             ("x", "y"): [1, 2.5, None], "n": np.float64(3.0)}
    save_tensors(tmp_path / "c.pt", value)
    back = load_tensors(tmp_path / "c.pt", types={"Histogram1D": Histogram1D})
    assert isinstance(back["h"]["cA"], Histogram1D)
    assert np.array_equal(back["h"]["cA"].delta_chi2, [0.0, np.inf])
    assert back[("x", "y")] == [1, 2.5, None] and back["n"] == 3.0
    with pytest.raises(ValueError, match="record type"):
        load_tensors(tmp_path / "c.pt")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Planted()))
    with pytest.raises(ValueError, match="unreadable"):
        load_tensors(tmp_path / "evil.pt")
    (tmp_path / "torn.pt").write_bytes((tmp_path / "c.pt").read_bytes()[:100])
    with pytest.raises(ValueError, match="unreadable"):
        load_tensors(tmp_path / "torn.pt")
    assert not (tmp_path / "planted-code-ran").exists()
