"""Datasets of IPM snapshots: run a parameter sweep, save it in one ``.npz`` (no pickle), load it back.

A `Dataset` holds ``particles [P, S, J, d]`` for ``P`` parameter sets and ``S`` snapshot
times, the parameter values ``[P]`` of each `ksdp.ipm.Params` field, and the metadata that
produced them (``J, d, dt, kernel, flow, times, key, ksdp version``). Files are written atomically,
so an interrupted run never leaves a truncated dataset behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from ksdp import drifts as _drifts
from ksdp import flows as _flows
from ksdp import ipm as _ipm
from ksdp import parallel as _parallel
from ksdp import provenance, storage
from ksdp._version import __version__

LOGGER = logging.getLogger("ksdp")

FORMAT = "ksdp-dataset/1"
_REQUIRED_META = ("format", "version", "n_particles", "d", "dt", "kernel", "flow", "key", "times")


class Dataset(NamedTuple):
    """IPM snapshots with their provenance.

    Attributes:
      particles: ``[P, S, J, d]`` float32.
      times: ``[S]`` snapshot times.
      params: dict ``field -> [P]`` of the `ksdp.ipm.Params` values (flow: amplitude ``A``).
      meta: JSON-serialisable dict (see module docstring).
    """

    particles: np.ndarray
    times: np.ndarray
    params: dict
    meta: dict


def make_dataset(
    key,
    params: _ipm.Params,
    times,
    *,
    n_particles: int,
    d: int = 2,
    kernel: str = "blob",
    flow=None,
    dt: float = _ipm.DEFAULT_DT,
    tile=None,
    extra_meta: dict | None = None,
    mesh=None,
    axis=None,
    drift: str = "auto",
    grid: int | None = None,
    chunk: int | None = None,
    parts: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> Dataset:
    """Runs `ksdp.sweep` over ``params`` and packs the result with its metadata.

    The flow parameter of every set must be a scalar (true of the built-in flows) so it can be stored.
    With ``mesh`` the sweep is split across devices (`ksdp.sweep`) and gathered to the host,
    across processes too (`ksdp.parallel.gather`); the dataset is the same as without.
    ``drift`` and ``grid`` choose how the drift is summed (`ksdp.simulate`); the metadata records
    the choice that ran.

    A long sweep can run in parts so that a kill loses at most one part: ``chunk`` parameter sets at
    a time (set ``p`` keeps its key ``jax.random.split(key, P)[p]``, so the parts repeat the
    arithmetic of a single sweep: equal to float32 round-off, the batch size changing at most the
    last bits of a step), each part saved atomically under the folder ``parts`` as it finishes. A rerun
    with the same arguments reuses the parts whose inputs match (a fingerprint of the key, the
    sets' values and every setting) and simulates the rest; the caller removes the folder once the
    dataset is saved. ``log`` (e.g. ``print``) receives one line per part; by default the lines go to
    the ``ksdp`` logger at level INFO (``logging.basicConfig(level=logging.INFO)`` shows them).
    """
    drift, grid = _drifts.resolve_drift(drift, grid, int(n_particles), d, kernel)
    batched, size = _ipm.broadcast_params(params)
    values = {}
    for name, leaf in batched._asdict().items():
        leaves = jax.tree_util.tree_leaves(leaf)
        if len(leaves) != 1 or np.shape(leaves[0]) != (size,):
            raise ValueError(f"params.{name} must be a scalar per parameter set to be stored in a dataset.")
        values[name] = np.asarray(leaves[0], np.float64)
    if chunk is not None and (not isinstance(chunk, (int, np.integer)) or isinstance(chunk, bool) or chunk < 1):
        raise ValueError(f"chunk must be a positive integer (parameter sets per part), got {chunk!r}.")
    chunk = size if chunk is None else min(int(chunk), size)
    run = dict(
        n_particles=n_particles,
        d=d,
        kernel=kernel,
        flow=flow,
        dt=dt,
        tile=tile,
        mesh=mesh,
        axis=axis,
        drift=drift,
        grid=grid,
    )
    keys = jax.random.split(key, size)
    pieces, times_out = [], None
    print_ = log or LOGGER.info
    for start in range(0, size, chunk):
        stop = min(size, start + chunk)
        sub = jax.tree_util.tree_map(lambda a, lo=start, hi=stop: a[lo:hi], batched)
        stamp = _part_fingerprint(keys[start:stop], {k: v[start:stop] for k, v in values.items()}, times, run, flow)
        path = None if parts is None else os.path.join(os.fspath(parts), f"sets-{start}-{stop}.npz")
        part = _load_part(path, stamp) if path is not None else None
        if part is not None:
            print_(f"  dataset part {start}-{stop} of {size} sets: reused {path}")
        else:
            t0 = time.perf_counter()
            traj = _ipm.sweep(keys[start:stop], sub, times, **run)
            if mesh is not None:
                traj = traj._replace(particles=_parallel.gather(traj.particles))
            part = (np.asarray(traj.particles, np.float32), np.asarray(traj.times, np.float64))
            if path is not None:
                _save_part(path, stamp, *part)
            saved = f", saved to {path}" if path is not None else ""
            print_(f"  dataset part {start}-{stop} of {size} sets: {time.perf_counter() - t0:.0f} s{saved}")
        pieces.append(part[0])
        times_out = part[1]
    meta = {
        "format": FORMAT,
        "version": __version__,
        "n_particles": int(n_particles),
        "d": int(d),
        "dt": float(dt),
        "kernel": kernel,
        "drift": drift,
        "grid": grid,
        "flow": _flows.flow_name(flow),
        "key": np.asarray(jax.random.key_data(key)).tolist(),
        "times": times_out.tolist(),
        "manifest": provenance.manifest(),
    }
    meta.update(extra_meta or {})
    return Dataset(np.concatenate(pieces), times_out, values, meta)


def _part_fingerprint(keys, values: dict, times, run: dict, flow) -> str:
    """A hash of everything one part of a sweep depends on."""
    described = {
        "format": FORMAT,
        "version": __version__,
        "keys": np.asarray(jax.random.key_data(keys)).tolist(),
        "values": {k: np.asarray(v, np.float64).tolist() for k, v in sorted(values.items())},
        "times": np.asarray(times, np.float64).ravel().tolist(),
        **{k: v for k, v in run.items() if k not in ("flow", "mesh", "axis")},
        "flow": _flows.flow_name(flow),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def _content(particles: np.ndarray, times: np.ndarray) -> str:
    """SHA-256 of a part's arrays (dtype, shape and bytes): a part altered after it was saved is not reused."""
    h = hashlib.sha256()
    for a in (particles, times):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _save_part(path: str, stamp: str, particles: np.ndarray, times: np.ndarray) -> None:
    arrays = {
        "particles": particles,
        "times": times,
        "stamp": np.asarray(stamp),
        "content": np.asarray(_content(particles, times)),
    }
    storage.atomic_write(path, lambda f: np.savez(f, **arrays))


def _load_part(path: str, stamp: str):
    """``(particles, times)`` of a saved part with this fingerprint and its own content hash intact; None if
    absent, made from other inputs, altered since it was saved, or unreadable (the part is then simulated
    again)."""
    if not os.path.exists(path):
        return None
    try:
        small = storage.read_npz(path, lambda name: 1 << 16 if name in ("stamp", "times", "content") else None)
        if str(small.get("stamp")) != stamp:
            return None
        n = os.path.getsize(path) + 4096  # a part is stored uncompressed: its particles fit the file
        files = storage.read_npz(path, lambda name: n if name == "particles" else None)
        p, t = files["particles"], small["times"]
        if str(small.get("content")) != _content(p, t):  # altered (or from before parts carried it)
            return None
        t = np.asarray(t, np.float64)
    except (ValueError, KeyError, OSError):
        return None
    if p.dtype != np.float32 or p.ndim != 4 or p.shape[1] != t.shape[0] or not np.all(np.isfinite(p)):
        return None
    return p, t


def save_dataset(path, ds: Dataset) -> None:
    """Writes ``ds`` to ``path`` (``.npz``) atomically; metadata as JSON text, no pickle."""
    validate(ds)
    arrays = {"particles": ds.particles, "times": ds.times, "meta_json": np.asarray(json.dumps(ds.meta))}
    for name, value in ds.params.items():
        arrays[f"param_{name}"] = np.asarray(value, np.float64)
    storage.atomic_write(path, lambda f: np.savez(f, **arrays))


def load_dataset(path) -> Dataset:
    """Reads a dataset written by `save_dataset` and validates it.

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: the file is not a ksdp dataset, or its arrays are inconsistent or non-finite.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no dataset at {path}")
    # small members first (metadata, times, parameters); the particles only once their size is known
    small = lambda name: (1 << 20) if name in ("meta_json", "times") or name.startswith("param_") else None
    files = storage.read_npz(path, small)
    missing = {"times", "meta_json"} - set(files)
    if missing:
        raise ValueError(f"{path} is not a ksdp dataset: arrays {sorted(missing)} are missing.")
    try:
        meta = json.loads(str(files["meta_json"]))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: its metadata is not JSON ({e}); delete it and simulate again.") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: its metadata is not a JSON object; delete it and simulate again.")
    try:
        n_sets = max([int(np.size(v)) for k, v in files.items() if k.startswith("param_")] + [1])
        expected = 8 * n_sets * len(files["times"]) * int(meta["n_particles"]) * int(meta["d"]) + 4096
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: its metadata lacks the sizes of a ksdp dataset ({e}); simulate again.") from e
    files.update(storage.read_npz(path, lambda name: expected if name == "particles" else None))
    if "particles" not in files:
        raise ValueError(f"{path} is not a ksdp dataset: arrays ['particles'] are missing.")
    params = {k[len("param_") :]: v for k, v in files.items() if k.startswith("param_")}
    ds = Dataset(files["particles"], files["times"], params, meta)
    validate(ds, source=str(path))
    return ds


def validate(ds: Dataset, source: str = "dataset") -> Dataset:
    """Checks shapes, finiteness and metadata; raises ``ValueError`` naming what is wrong."""
    missing = [k for k in _REQUIRED_META if k not in ds.meta]
    if missing:
        raise ValueError(f"{source}: metadata {missing} missing.")
    if ds.meta["format"] != FORMAT:
        raise ValueError(f"{source}: format {ds.meta['format']!r}, expected {FORMAT!r}.")
    p = ds.particles
    if p.ndim != 4:
        raise ValueError(f"{source}: particles must be [P, S, J, d], got shape {p.shape}.")
    size, n_snap, n_particles, d = p.shape
    if (n_particles, d) != (ds.meta["n_particles"], ds.meta["d"]):
        raise ValueError(
            f"{source}: particles {p.shape} disagree with metadata J={ds.meta['n_particles']}, d={ds.meta['d']}."
        )
    if ds.times.shape != (n_snap,) or not np.allclose(ds.times, ds.meta["times"]):
        raise ValueError(f"{source}: times {ds.times.shape} disagree with the particles' {n_snap} snapshots.")
    for name, value in ds.params.items():
        if np.shape(value) != (size,):
            raise ValueError(f"{source}: parameter {name!r} has shape {np.shape(value)}, expected ({size},).")
        value = np.asarray(value)
        if value.dtype.kind not in "fiub" or not np.all(np.isfinite(value)):
            raise ValueError(f"{source}: parameter {name!r} must hold finite real values, got {value.tolist()}.")
    if p.dtype.kind != "f":
        raise ValueError(f"{source}: particles must be real floating point, got dtype {p.dtype}.")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{source}: particles contain non-finite values.")
    if ds.times.dtype.kind not in "fiu" or not np.all(np.isfinite(ds.times)) or np.any(np.diff(ds.times) <= 0):
        raise ValueError(f"{source}: times must be finite and strictly increasing, got {ds.times.tolist()}.")
    if not math.isfinite(ds.meta["dt"]) or ds.meta["dt"] <= 0:
        raise ValueError(f"{source}: dt={ds.meta['dt']} is not positive.")
    return ds
