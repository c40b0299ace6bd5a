"""The experiments' run folders as ``python -m ksdp.experiments`` leaves them: what is finished there,
and the reach of a generated cloud against the IPM's."""

from __future__ import annotations

import os

import numpy as np

import ksdp
from ksdp import training as T
from ksdp.experiments import ipm_data as DATA
from ksdp.experiments.specs import EXPERIMENTS, SCALES


def slug(label: str) -> str:
    """A file name for a study's label (a schedule, a variant)."""
    return "".join(c if c.isalnum() else "-" for c in label).strip("-")


def tail_stats(ipm, gen) -> dict:
    """Largest distance from the IPM particles' centre of ``ipm`` and ``gen`` (``[n, d]`` each), and
    the fraction of ``gen`` beyond the farthest of ``ipm``."""
    centre = np.mean(ipm, axis=0)
    r_ipm = np.max(np.linalg.norm(ipm - centre, axis=-1))
    r_gen = np.linalg.norm(np.asarray(gen) - centre, axis=-1)
    return {"r_max_ipm": float(r_ipm), "r_max_dp": float(np.max(r_gen)), "beyond": float(np.mean(r_gen > r_ipm))}


def found(out, names, files):
    """Every experiment under ``<out>/<scale>/`` whose folder holds all of ``files`` (as ``python -m
    ksdp.experiments`` leaves them): ``(scale, name, experiment, paths of files)``."""
    for scale in SCALES:
        for name in names or EXPERIMENTS:
            paths = [os.path.join(out, scale, name, f) for f in files]
            if all(os.path.exists(p) for p in paths):
                yield scale, name, EXPERIMENTS[name], paths


def dataset_runs(exp, path):
    """The IPM runs of a dataset file, ``[runs, values, J, d]`` (the replicas, a pool, reference runs)."""
    ds = ksdp.load_dataset(path)
    return np.asarray(DATA.particles_by_value(exp, ds, replicas=len(ds.meta.get("replicas", DATA.REPLICAS))))


def finished(out, names):
    """Every finished experiment under ``<out>/<scale>/`` (a dataset and a training checkpoint):
    ``(scale, name, experiment, state, model config, train config, generating parameters, particles
    [replicas, values, J, d])``; the generating parameters are the moving average where training kept one."""
    for scale, name, exp, (ds_path, ck_path) in found(out, names, ("dataset.npz", "checkpoint.npz")):
        state, mc, tc, _, _ = T.load_checkpoint(ck_path)
        params = state.ema if tc.ema_decay > 0 else state.params
        parts = DATA.particles_by_value(exp, ksdp.load_dataset(ds_path))
        yield scale, name, exp, state, mc, tc, params, parts
