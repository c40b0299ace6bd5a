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
