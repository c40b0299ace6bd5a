"""The IPM data of an experiment: three replicas per value, the training pool and the m2 reference runs,
each simulated once, saved run by run as it finishes and reused while its settings match."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import time

import jax
import numpy as np

from ksdp import data, drifts, ipm
from ksdp.experiments.specs import SCALES, Experiment, Scale

KERNEL = "blob"  # see docs: the paper kernel biases m2 early at delta^2 = 1e-2; blob tracks it
DELTA = math.sqrt(1e-3)
DT = 1e-4
REPLICAS = ("train", "reference", "floor")  # three independent IPM runs per parameter value


def device_name() -> str:
    """The device this process computes on, for the stage times: the accelerator's kind as JAX reports
    it, or ``"cpu, <n> cores, <machine>"`` (the cores this process may use)."""
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return f"cpu, {cores} cores, {platform.machine()}"
    return str(getattr(dev, "device_kind", dev.platform))


def data_settings(exp: Experiment, scale: str, seed: int, n_particles: int | None = None, drift: str = "auto") -> dict:
    """What the dataset depends on; ``n_particles`` defaults to the scale's J, ``drift`` is resolved."""
    train, held, extra = exp.values(scale)
    n = SCALES[scale].n_particles if n_particles is None else n_particles
    drift, grid = drifts.resolve_drift(drift, None, n, exp.d, KERNEL)
    return {
        "experiment": exp.name,
        "scale": scale,
        "seed": seed,
        "kernel": KERNEL,
        "delta": DELTA,
        "dt": DT,
        "n_particles": n,
        "drift": drift,
        "grid": grid,
        "train": train.tolist(),
        "held_out": held.tolist(),
        "extrapolated": extra.tolist(),
        "fixed": exp.fixed,
    }


def same_data(cached: dict | None, wanted: dict) -> bool:
    """Whether a dataset simulated with ``cached`` settings serves ``wanted``.

    A dataset from before the particle mesh has no drift recorded: it used the direct sum. A
    direct-sum dataset serves a request for the particle mesh (it is the sum the mesh approximates),
    never the other way round.
    """
    if not isinstance(cached, dict):
        return False
    cached = {"drift": "direct", "grid": None, **cached}
    if cached["drift"] == "direct" and wanted.get("drift") == "pm":
        cached = {**cached, "drift": "pm", "grid": wanted.get("grid")}
    return cached == wanted


def simulate_dataset(
    exp: Experiment, scale: str, seed: int, path: str, log, n_particles: int | None = None, drift: str = "auto"
) -> data.Dataset:
    """IPM particles ``[3 replicas, n_values, J, d]`` for every parameter value; reused if cached."""
    settings = data_settings(exp, scale, seed, n_particles, drift)
    return _simulate(exp, settings, jax.random.key(seed), exp.all_values(scale), list(REPLICAS), path, log, "dataset")


def pool_runs(exp: Experiment, scale: str) -> int | None:
    """How many runs of J particles make the training pool of ``exp`` at ``scale``: its own
    ``Experiment.pool_runs`` for the scale, else `Scale.pool_runs` (None: no pool, the network trains
    on the training replica)."""
    runs = int(exp.pool_runs.get(scale, SCALES[scale].pool_runs))
    return runs if runs > 1 else None


POOL_KEY = 1  # the pool's key is fold_in(key(seed), POOL_KEY): independent of the replicas


def simulate_pool(
    exp: Experiment, scale: str, seed: int, path: str, log, runs: int, n_particles: int | None = None, drift="auto"
):
    """``runs`` more independent IPM runs of J particles at every training value: the network's
    training data (`Scale.pool_runs`). Cached like the dataset.

    Returns ``(particles [R, runs * J, d], reused)``, the runs of each training value pooled.
    """
    train = exp.values(scale)[0]
    p, reused = more_runs(
        exp, scale, seed, path, log, runs, n_particles, drift, train, "pool", POOL_KEY, "training pool"
    )
    p = np.swapaxes(p, 0, 1)  # [R, runs, J, d]
    return p.reshape(p.shape[0], -1, p.shape[-1]), reused


def least_particles(exp: Experiment, scale: str) -> int:
    """The least J (IPM particles per run) ``exp`` can train on at ``scale``: the loss floor draws two
    disjoint samples of N from each training set, the pool's runs together (else the training replica)."""
    return -(-2 * scale_of(exp, scale).train.n_samples // (pool_runs(exp, scale) or 1))


def reference_runs(exp: Experiment, scale: str) -> int:
    """How many more independent IPM runs the m2 check of ``exp`` at ``scale`` averages with the three
    replicas: its own ``Experiment.reference_runs`` for the scale, else `Scale.reference_runs` (0: the
    replicas alone)."""
    return int(exp.reference_runs.get(scale, SCALES[scale].reference_runs))


REFERENCE_KEY = 2  # the m2 reference runs' key is fold_in(key(seed), REFERENCE_KEY): independent of the others


def simulate_reference(
    exp: Experiment, scale: str, seed: int, path: str, log, runs: int, n_particles: int | None = None, drift="auto"
):
    """``runs`` more independent IPM runs of J particles at every value (training, held-out and
    extrapolated), for the m2 check only: a run's m2 varies from run to run by more than its particles
    suggest (`ksdp.metrics.run_spread`), so the three replicas' mean is a weak reference for it
    (`Scale.reference_runs`). Cached like the dataset.

    Returns ``(particles [runs, n_values, J, d], reused)`` in the order of `Experiment.all_values`.
    """
    values = exp.all_values(scale)
    return more_runs(
        exp, scale, seed, path, log, runs, n_particles, drift, values, "reference", REFERENCE_KEY, "reference runs (m2)"
    )


def more_runs(exp, scale, seed, path, log, runs, n_particles, drift, values, name: str, key_id: int, label: str):
    """``runs`` independent IPM runs ``{name}-k`` at ``values``, keyed ``fold_in(key(seed), key_id)`` and
    cached with ``{name}_runs`` in their settings: ``(particles [runs, n_values, J, d], reused)``."""
    settings = {**data_settings(exp, scale, seed, n_particles, drift), f"{name}_runs": int(runs)}
    key = jax.random.fold_in(jax.random.key(seed), key_id)
    names = [f"{name}-{k}" for k in range(runs)]
    ds = _simulate(exp, settings, key, np.asarray(values, np.float64), names, path, log, label)
    return particles_by_value(exp, ds, replicas=runs), bool(ds.meta.get("reused"))


def _simulate(exp: Experiment, settings: dict, key, values, names, path: str, log, label: str) -> data.Dataset:
    """Independent IPM runs (one per name in ``names``) at every value of ``values`` (cached at ``path``;
    ``label`` names it in the log)."""
    replicas = len(names)
    if os.path.exists(path):
        try:
            ds = data.load_dataset(path)
            if same_data(ds.meta.get("settings"), settings):
                used = ds.meta["settings"].get("drift", "direct")
                log(f"  {label}: reusing {path} (drift: {used})")
                return ds._replace(meta={**ds.meta, "reused": True})
            log(f"  {label}: cached file has other settings; simulating again")
        except ValueError as e:  # unreadable or invalid: kept aside (not lost), then simulated again
            log(f"  {label}: cached file unreadable ({e}); moved it to {set_aside(path)}; simulating again")
    log(f"  {label}: simulating J = {settings['n_particles']} with the {settings['drift']} drift")
    parts = path + ".parts"  # one replica per part, saved as it finishes: a kill loses at most one
    common = dict(
        parts=parts,
        log=log,
        n_particles=settings["n_particles"],
        d=exp.d,
        kernel=KERNEL,
        flow=exp.flow,
        dt=DT,
        drift=settings["drift"],
        grid=settings["grid"],
        extra_meta={"settings": settings, "replicas": list(names)},
    )
    if exp.eta == "time":
        params = ipm.Params(delta=DELTA, flow=np.full(replicas, exp.fixed))
        ds = data.make_dataset(key, params, values, chunk=1, **common)  # [R, S, J, d]
    else:
        swept = np.tile(values, replicas)
        params = ipm.Params(delta=DELTA, eps=swept) if exp.eta == "eps" else ipm.Params(delta=DELTA, flow=swept)
        ds = data.make_dataset(key, params, (exp.fixed,), chunk=len(values), **common)  # [R * P, 1, J, d]
    data.save_dataset(path, ds)
    shutil.rmtree(parts, ignore_errors=True)
    return ds


def particles_by_value(exp, ds, replicas: int = len(REPLICAS)):
    """``[replicas, n_values, J, d]`` in the order of the values simulated."""
    if exp.eta == "time":
        return ds.particles
    p = ds.particles[:, 0]
    return p.reshape(replicas, p.shape[0] // replicas, *p.shape[1:])


def scale_of(exp: Experiment, scale: str) -> Scale:
    """The `Scale` ``exp`` trains at: ``SCALES[scale]`` with the experiment's own mini-batch size
    (``Experiment.n_samples``) and Adam steps (``Experiment.n_steps``) where it has them."""
    sc = SCALES[scale]
    if scale in exp.n_samples:
        sc = dataclasses.replace(sc, train=sc.train._replace(n_samples=int(exp.n_samples[scale])))
    if scale in exp.n_steps:
        sc = dataclasses.replace(sc, n_steps=int(exp.n_steps[scale]))
    return sc


def previous_timing(path, settings, runs: dict | None = None) -> tuple[dict, dict]:
    """Stage times of an earlier run on the same data, and the device of each (kept for the stages this
    run reuses): ``(timing_s, timing_device)``; a device the earlier run did not record is ``None``.

    ``runs`` maps ``"pool_runs"`` and ``"reference_runs"`` to this run's counts: an earlier pool or set of
    reference runs of another size was simulated again, so its time is not kept."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return {}, {}
    # a damaged file keeps nothing (the run rewrites it)
    if not isinstance(old, dict) or not isinstance(old.get("settings"), dict):
        return {}, {}
    if not isinstance(old.get("timing_s", {}), dict) or not isinstance(old.get("timing_device") or {}, dict):
        return {}, {}
    # the pool and the reference runs have their own stages
    cached = {k: v for k, v in old["settings"].items() if k not in ("pool_runs", "reference_runs")}
    if not same_data(cached, settings):
        return {}, {}
    timing = dict(old.get("timing_s", {}))
    for count, stage in (("pool_runs", "pool_s"), ("reference_runs", "reference_s")):
        if runs is not None and old["settings"].get(count) != runs.get(count):
            timing.pop(stage, None)
    devices = old.get("timing_device") or {}
    return timing, {k: devices.get(k) for k in timing}


def set_aside(path: str) -> str:
    """Renames ``path`` to a free ``<stem>.stale-<n><ext>`` next to it and returns the new name."""
    stem, ext = os.path.splitext(path)
    n = 1
    while os.path.exists(f"{stem}.stale-{n}{ext}"):
        n += 1
    os.replace(path, f"{stem}.stale-{n}{ext}")
    return f"{stem}.stale-{n}{ext}"


def simulate_data(exp: Experiment, scale: str, seed: int, folder: str, log, sc: Scale, drift: str = "auto"):
    """The IPM stages of `run`: the three replicas, the training pool and the m2 reference runs, each
    cached in ``folder`` and timed; a stage reused from an earlier run keeps that run's time and device.

    Returns ``((dataset, parts [3, V, J, d], targets [R, n, d], reference runs or None, pool runs, reference
    run count, settings, the earlier run's timing, its devices), timing, device)``.
    """
    settings = data_settings(exp, scale, seed, sc.n_particles, drift)
    timing, device = {}, {}
    n_runs, n_ref = pool_runs(exp, scale), reference_runs(exp, scale)
    previous, previous_device = previous_timing(
        os.path.join(folder, "metrics.json"), settings, {"pool_runs": n_runs, "reference_runs": n_ref}
    )
    here = device_name()

    def stage(name, simulate):
        t0 = time.perf_counter()
        result, reused = simulate()
        timing[name], device[name] = time.perf_counter() - t0, here
        if reused and name in previous:
            timing[name], device[name] = previous[name], previous_device[name]
        return result

    def dataset():
        ds = simulate_dataset(exp, scale, seed, os.path.join(folder, "dataset.npz"), log, sc.n_particles, drift)
        return ds, bool(ds.meta.get("reused"))

    ds = stage("ipm_s", dataset)
    parts = particles_by_value(exp, ds)  # [3, V, J, d]
    index = {float(v): i for i, v in enumerate(exp.all_values(scale))}
    if n_runs is None:
        targets = parts[0, [index[float(v)] for v in exp.values(scale)[0]]]
    else:
        pool_path = os.path.join(folder, "pool.npz")
        targets = stage(
            "pool_s", lambda: simulate_pool(exp, scale, seed, pool_path, log, n_runs, sc.n_particles, drift)
        )
    ref_runs = None
    if n_ref:
        ref_path = os.path.join(folder, "reference-runs.npz")
        ref_runs = stage(
            "reference_s", lambda: simulate_reference(exp, scale, seed, ref_path, log, n_ref, sc.n_particles, drift)
        )
    data_ = (ds, parts, targets, ref_runs, n_runs, n_ref, settings, previous, previous_device)
    return data_, timing, device
