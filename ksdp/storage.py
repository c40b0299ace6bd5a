"""File input and output of ksdp's results: atomic writes (a finished file is either the old one or the
complete new one) and reads of ``.npz`` files that check each array's size before allocating it."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import zipfile
from collections.abc import Callable

import numpy as np

# this host in the names of temporary files, so a writer removes only the stale ones of its own host
HOST = socket.gethostname().replace("-", "_")


def _remove_stale_temporaries(directory: str, name: str) -> None:
    """Removes temporary files of ``name`` left in ``directory`` by a killed writer on this host.

    A temporary file is named ``.tmp-<host>-<pid>-<random><name>``; it is stale when no process
    with that pid runs here (a writer on another host sharing the disk is left alone).
    """
    prefix = f".tmp-{HOST}-"
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(name)):
            continue
        pid = entry[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            try:
                os.unlink(os.path.join(directory, entry))
            except OSError:
                pass
        except PermissionError:  # another user's live process
            pass


def atomic_write(path, write: Callable, mode: str = "wb") -> None:
    """Calls ``write(fileobj)`` on a temporary file beside ``path``, then renames it over ``path``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"{path} is a folder, where a file is to be written: move it aside (or write elsewhere)."
        )
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    _remove_stale_temporaries(directory, os.path.basename(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".tmp-{HOST}-{os.getpid()}-", suffix=os.path.basename(path))
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


class _Oversized(ValueError):
    pass


def read_npz(path, limits: Callable[[str], int | None]) -> dict:
    """Reads the members of an ``.npz`` file, checking each one's size in the zip header first.

    ``limits(name)`` gives the largest uncompressed size accepted for member ``name`` (``.npy``
    stripped), or ``None`` to skip the member. Never loads pickles. Raises ``ValueError`` naming the
    file for anything unreadable or oversized.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            out = {}
            for info in zf.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                limit = limits(name)
                if limit is None:
                    continue
                if info.file_size > limit:
                    raise _Oversized(
                        f"{path}: member {name!r} holds {info.file_size} bytes, more than the {limit} expected."
                    )
                with zf.open(info) as f:
                    out[name] = np.lib.format.read_array(f, allow_pickle=False)
            return out
    except _Oversized:
        raise
    except Exception as e:  # BadZipFile, EOFError, OSError, zlib errors...
        raise ValueError(f"{path} is not a readable .npz file ({type(e).__name__}: {e}).") from e
