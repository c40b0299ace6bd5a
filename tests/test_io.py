"""Atomic writes: the finished file or the old one, and no temporary file left by a killed writer."""

import os
import subprocess
import sys

from ksdp import storage


def test_atomic_write_replaces_and_removes_stale_temporaries(tmp_path):
    path = tmp_path / "metrics.json"
    # a writer killed mid-write leaves .tmp-<host>-<pid>-...; a finished process's pid is free
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".tmp-{storage.HOST}-{int(dead.stdout)}-abcmetrics.json"
    stale.write_text("half")
    live = tmp_path / f".tmp-{storage.HOST}-{os.getppid()}-abcmetrics.json"  # a running process: left alone
    live.write_text("in progress")
    other = tmp_path / f".tmp-{storage.HOST}-{int(dead.stdout)}-abcother.json"  # another file's: left alone
    other.write_text("x")
    storage.write_text(path, "done")
    assert path.read_text() == "done"
    assert not stale.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["metrics.json", live.name, other.name])


def test_a_folder_in_the_place_of_a_file_is_named_and_left_alone(tmp_path):
    # the CLI reports an OSError by its message alone (no traceback): it must say what is in the way
    path = tmp_path / "generator.npz"
    (path / "inside").mkdir(parents=True)
    try:
        storage.write_text(path, "x")
        raise AssertionError("a folder was overwritten")
    except IsADirectoryError as e:
        assert str(path) in str(e) and "move it aside" in str(e)
    assert (path / "inside").is_dir() and [p.name for p in tmp_path.iterdir()] == ["generator.npz"]
