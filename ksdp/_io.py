"""Atomic file writes: a finished file is either the old one or the complete new one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable


def atomic_write(path, write: Callable, mode: str = "wb") -> None:
    """Calls ``write(fileobj)`` on a temporary file beside ``path``, then renames it over ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the permissions open() would
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True), mode="w")


def write_text(path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text), mode="w")
