"""One experiment end to end: IPM dataset (cached), DeepParticle training (resumable), metrics, figures."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import time
from functools import partial

import jax
import numpy as np

from ksdp import data, drifts, initial, ipm, model, reference, storage, training, wasserstein
from ksdp import metrics as metrics_
from ksdp.experiments import figures, report
from ksdp.experiments.specs import (
    ANISOTROPY_INNER,
    FLOOR_REPEATS,
    FOLD_POINTS,
    KS_POINTS,
    MEMORISATION_Z,
    SCALES,
    Experiment,
    Scale,
)

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


MAX_PAIRED = 10_000  # C2ST and W2 compare at most this many points per cloud (their cost grows faster than J)


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
    return -(-2 * scale_of(exp, scale).n_samples // (pool_runs(exp, scale) or 1))


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
            log(f"  {label}: cached file unreadable ({e}); moved it to {_aside(path)}; simulating again")
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
        params = ipm.Params(delta=DELTA, flow=np.tile(values, replicas))
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


def _w2(a, b, key):
    return float(wasserstein.w2(a, b, key).w2)  # certified within 1e-4 of the optimum


def _ks_cloud(mcfg, params, v, gen, key):
    """The generated points a KS check uses: ``gen`` if it has `KS_POINTS`, else a draw of that many."""
    return gen if len(gen) >= KS_POINTS else model.generate(mcfg, params, v, key, KS_POINTS)


def initial_law_check(exp: Experiment, gen, pooled, mcfg, params, key) -> dict:
    """At ``t = 0`` of a time experiment, the generated law against the initial law, known exactly.

    The law there is uniform on the unit ball (`ksdp.initial.uniform_ball_radial_cdf`), with no mass
    beyond radius 1: the radial KS distance of `KS_POINTS` generated points to it (``init_ks_dp``,
    with its sign and level as `ksdp.metrics.radial_ks_where` gives them) against that of the pooled
    IPM replicas (``init_ks_ipm``: at ``t = 0`` the initial particles themselves, so sampling alone),
    and the generated mass beyond the unit ball (``init_beyond_dp``) with the largest radius reached
    (``init_r_max_dp``). A soft or overshooting edge moves 2-6% of the mass by a few percent of the
    radius, which C2ST and the energy distance at n = J do not see (laminar2d-time); here it is the
    KS distance, at least as large as the mass beyond the ball.
    """
    cdf = initial.uniform_ball_radial_cdf(exp.d)
    many = _ks_cloud(mcfg, params, 0.0, gen, key)
    r = np.linalg.norm(np.asarray(many, np.float64), axis=1)
    out = {"init_ks_points": len(many)}
    out["init_ks_dp"], out["init_ks_dp_signed"], out["init_ks_dp_level"] = metrics_.radial_ks_where(many, cdf)
    out["init_ks_ipm"] = metrics_.radial_ks(pooled, cdf)
    out["init_beyond_dp"] = float(np.mean(r > 1.0))
    out["init_r_max_dp"] = float(r.max())
    return out


def radial_reference(exp: Experiment, values):
    """The blob mean field (``ksdp.reference``) at every time of a flow-free time experiment, else None."""
    if exp.flow != "none" or exp.eta != "time":
        return None
    return reference.solve_radial(np.asarray(values, np.float64), d=exp.d, delta=DELTA)


def loss_floor(key, targets, n: int, repeats: int = FLOOR_REPEATS) -> metrics_.Estimate:
    """Mean over the training sets of W2^2 between two disjoint ``n``-point subsamples of one set,
    with its standard error.

    The training loss is a matched cost between ``n`` generated and ``n`` target points; a network
    that reproduced the law exactly would still score about this. A final loss below it means the
    network fits its mini-batch closer than a fresh sample of the same law could be (memorisation).
    Each set contributes ``repeats`` independent pairs (the first is the one earlier versions drew);
    with one pair per set the mean varies by about 14% from draw to draw (laminar2d-time, paper
    scale), more than the gaps it is compared with. The standard error is that of the mean over sets
    of the per-set means, from the spread within each set (`ksdp.metrics.stratified_mean`).
    """
    if not isinstance(repeats, (int, np.integer)) or repeats < 2:
        raise ValueError(f"repeats must be an integer >= 2 (a standard error needs two pairs), got {repeats!r}.")
    per_set = []
    for r, y in enumerate(np.asarray(targets)):
        if 2 * n > len(y):
            return metrics_.Estimate(float("nan"), float("nan"))  # not enough particles for two disjoint subsamples
        k_set = jax.random.fold_in(key, r)
        vals = []
        for q in range(repeats):
            k = k_set if q == 0 else jax.random.fold_in(k_set, q)
            idx = np.asarray(jax.random.permutation(k, len(y)))
            vals.append(_w2(y[idx[:n]], y[idx[n : 2 * n]], k) ** 2)
        per_set.append(vals)
    return metrics_.stratified_mean(per_set)


def memorisation_z(final: metrics_.Estimate, floor: metrics_.Estimate) -> float:
    """``(final - floor) / combined SE``: how far the training loss at the end lies below (< 0) or
    above its floor; below ``-MEMORISATION_Z`` the network fits its mini-batches (memorisation)."""
    return (final.value - floor.value) / math.hypot(final.se, floor.se)


def scale_of(exp: Experiment, scale: str) -> Scale:
    """The `Scale` ``exp`` trains at: ``SCALES[scale]`` with the experiment's own mini-batch size
    (``Experiment.n_samples``) where it has one."""
    sc = SCALES[scale]
    if scale in exp.n_samples:
        sc = dataclasses.replace(sc, n_samples=int(exp.n_samples[scale]))
    return sc


def configs(exp: Experiment, scale: str):
    """The network's and the training's configs of an experiment at a scale: ``(ModelConfig, TrainConfig)``."""
    sc = scale_of(exp, scale)
    train_v = exp.values(scale)[0]
    mcfg = model.make_config(
        exp.d,
        train_v,
        width=sc.width,
        depth=sc.depth,
        eta_log=exp.eta == "amplitude",
        tail_feature=sc.tail_feature or exp.tail_feature,
        identity_at=exp.identity_at,
        identity_power=exp.identity_power,
    )
    tcfg = training.TrainConfig(
        n_samples=sc.n_samples,
        resample_every=sc.resample_every,
        renew_every=sc.renew_every,
        sweeps=sc.sweeps,
        initial_sweeps=sc.initial_sweeps,
        learning_rate=sc.learning_rate,
        ema_decay=sc.ema_decay,
        decay_steps=sc.n_steps if sc.cosine_decay else 0,
        debias=sc.debias,
        local_cap=sc.local_cap,
        match_sources=sc.match_sources,
        radial_weight=float(exp.radial_weight_at(scale) or sc.radial_weight),
    )
    return mcfg, tcfg


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
    if not isinstance(old.get("settings"), dict):
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


def _aside(path: str) -> str:
    """Renames ``path`` to a free ``<stem>.stale-<n><ext>`` next to it and returns the new name."""
    stem, ext = os.path.splitext(path)
    n = 1
    while os.path.exists(f"{stem}.stale-{n}{ext}"):
        n += 1
    os.replace(path, f"{stem}.stale-{n}{ext}")
    return f"{stem}.stale-{n}{ext}"


def _checkpoint_step(path) -> int:
    try:
        return int(training.load_checkpoint(path)[0].step)
    except Exception:  # unreadable: training decides what to do with it
        return -1


def train_network(exp: Experiment, scale: str, seed: int, targets, ck_path: str, log=print):
    """The training stage of `run`: trains on ``targets`` (``[R, J, d]``, the training values'
    particles) with the scale's configs, resuming from the checkpoint at ``ck_path``.

    A checkpoint that is unreadable or was written for other data (`training.CheckpointError`,
    `training.CheckpointMismatch`) is moved aside to ``checkpoint.stale-<n>.npz``, never deleted,
    and the network is trained afresh, saying so.

    Returns ``(TrainResult, resumed_complete, seconds)``: whether the checkpoint already held every
    step (nothing was trained), and the time the training that did happen took.
    """
    n_steps = scale_of(exp, scale).n_steps
    mcfg, tcfg = configs(exp, scale)
    train_v = exp.values(scale)[0]
    resumed_complete = os.path.exists(ck_path) and _checkpoint_step(ck_path) >= n_steps
    # a bar on a terminal, else a line at every twentieth of the run (output to a log file)
    fit = partial(
        training.train,
        jax.random.key(seed + 1),
        targets,
        train_v,
        mcfg,
        tcfg,
        n_steps=n_steps,
        progress=None if sys.stderr.isatty() else log,
    )
    t0 = time.perf_counter()
    try:
        res = fit(checkpoint=ck_path)
    except (training.CheckpointMismatch, training.CheckpointError) as e:  # other data, or unreadable: keep it aside
        stale = _aside(ck_path)
        log(f"  training: {e} Moved it to {stale}; training afresh.")
        resumed_complete = False
        t0 = time.perf_counter()
        res = fit(checkpoint=ck_path)
    return res, resumed_complete, time.perf_counter() - t0


def run(
    exp: Experiment,
    scale: str,
    out: str,
    seed: int = 0,
    log=print,
    *,
    n_particles: int | None = None,
    drift: str = "auto",
) -> dict:
    """Runs one experiment; returns its metrics dict (also written to ``OUT/<name>/metrics.json``).

    ``n_particles`` replaces the scale's J (the IPM's size: training pool, reference and floor);
    ``drift`` how the IPM sums its drift (`ksdp.simulate`; ``"auto"`` chooses by J). C2ST and W2
    compare at most `MAX_PAIRED` points per cloud, the energy distance and the moments all of them.

    ``metrics.json`` is rewritten after every evaluated parameter value (``"complete": false``
    until the last), so a failure late in the evaluation or in the figures loses no computed row.
    """
    sc = scale_of(exp, scale)
    if n_particles is not None:
        if not isinstance(n_particles, (int, np.integer)) or isinstance(n_particles, bool) or n_particles < 1:
            raise ValueError(f"n_particles must be a positive integer, got {n_particles!r}.")
        least = least_particles(exp, scale)
        if n_particles < least:
            raise ValueError(
                f"n_particles={n_particles} is too small for {exp.name} at the {scale} scale: the loss floor "
                f"compares two disjoint samples of N = {sc.n_samples} from each training set of "
                f"{pool_runs(exp, scale) or 1} x {n_particles} particles; use at least {least}."
            )
        sc = dataclasses.replace(sc, n_particles=int(n_particles))
    settings = data_settings(exp, scale, seed, sc.n_particles, drift)
    folder = os.path.join(out, exp.name)
    os.makedirs(folder, exist_ok=True)
    timing, device = {}, {}
    n_runs, n_ref = pool_runs(exp, scale), reference_runs(exp, scale)
    previous, previous_device = previous_timing(
        os.path.join(folder, "metrics.json"), settings, {"pool_runs": n_runs, "reference_runs": n_ref}
    )
    here = device_name()

    def stage(name, simulate):
        """Runs an IPM stage, timing it; a stage reused from an earlier run keeps that run's time and device."""
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
    values = exp.all_values(scale)
    train_v, held_v, extra_v = exp.values(scale)
    parts = particles_by_value(exp, ds)  # [3, V, J, d]
    index = {float(v): i for i, v in enumerate(values)}
    train_idx = [index[float(v)] for v in train_v]

    if n_runs is None:
        targets = parts[0, train_idx]
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

    mcfg, tcfg = configs(exp, scale)
    res, resumed_complete, timing["train_s"] = train_network(
        exp, scale, seed, targets, os.path.join(folder, "checkpoint.npz"), log
    )
    device["train_s"] = here
    if resumed_complete and "train_s" in previous:  # the checkpoint was complete: keep the time it took
        timing["train_s"], device["train_s"] = previous["train_s"], previous_device["train_s"]

    t0 = time.perf_counter()
    key = jax.random.key(seed + 2)
    radial = radial_reference(exp, values)
    m2_radial = None if radial is None else radial.second_moment()
    final_loss = training.final_loss(res.history, sc.resample_every)
    fresh_loss = training.fresh_batch_loss(res.history, sc.resample_every)
    floor_loss = loss_floor(jax.random.key(seed + 3), targets, sc.n_samples)
    loss_z = memorisation_z(final_loss, floor_loss)
    metrics = {
        "experiment": exp.name,
        "section": exp.section,
        "summary": exp.summary,
        "settings": {
            **settings,
            "drift": ds.meta["settings"].get("drift", "direct"),
            "grid": ds.meta["settings"].get("grid"),
            "pool_runs": n_runs,
            "reference_runs": n_ref,
        },
        # as trained: the experiment may add the tail coordinate and the radial term (Experiment.tail_feature,
        # Experiment.radial_weight)
        "scale_settings": {
            **dataclasses.asdict(sc),
            "tail_feature": bool(mcfg.tail_feature),
            "radial_weight": tcfg.radial_weight,
            **(
                {"identity_at": mcfg.identity_at, "identity_power": mcfg.identity_power}
                if mcfg.identity_at is not None
                else {}
            ),
        },
        "n_parameters": model.n_parameters(res.params),
        "final_loss": final_loss.value,
        "final_loss_se": final_loss.se,
        "fresh_batch_loss": fresh_loss,
        "loss_floor": floor_loss.value,
        "loss_floor_se": floor_loss.se,
        "loss_z": loss_z,
        "memorises": bool(loss_z < -MEMORISATION_Z),
        "complete": False,
        "rows": [],
        "timing_s": timing,
        # the device of each stage: a stage reused from an earlier run keeps that run's (None: not recorded)
        "timing_device": device,
    }
    path = os.path.join(folder, "metrics.json")
    run_sd = m2_run_sd(exp, scale, values, parts, targets, n_runs, ref_runs)
    n_ref_runs = len(REPLICAS) + n_ref  # the runs m2_ipm averages
    for v in values:
        i = index[float(v)]
        kind = "train" if v in train_v else "held-out" if v in held_v else "extrapolated"
        k_gen, k_cmp, key = jax.random.split(key, 3)
        gen = model.generate(mcfg, res.params, v, k_gen, sc.n_generated)
        ref, floor = np.asarray(parts[1, i]), np.asarray(parts[2, i])
        pooled = np.asarray(parts[:, i]).reshape(-1, exp.d)
        cmp = metrics_.compare(
            k_cmp, gen, ref, floor, w2_points=MAX_PAIRED, c2st_points=MAX_PAIRED, c2st_steps=sc.c2st_steps
        )
        ipm_m = metrics_.moments(pooled)
        if ref_runs is not None:  # the m2 check's reference: the replicas and the m2 reference runs
            ipm_m2 = metrics_.moments(np.concatenate([pooled, np.asarray(ref_runs[:, i]).reshape(-1, exp.d)]))
        else:
            ipm_m2 = ipm_m
        sd, n_sd = run_sd[float(v)]
        row = {
            "eta": float(v),
            "kind": kind,
            "n_generated": sc.n_generated,
            "energy": cmp["energy"],
            "floor_energy": cmp["floor_energy"],
            "c2st": cmp["c2st"],
            "floor_c2st": cmp["floor_c2st"],
            "w2": cmp["w2"][0],
            "w2_se": cmp["w2"][1],
            "w2_floor": cmp["floor_w2"][0],
            "w2_floor_se": cmp["floor_w2"][1],
            "ratio": cmp["w2"][0] / cmp["floor_w2"][0],
            # over the replicas and the m2 reference runs (Scale.reference_runs), n_ref_runs in all
            "m2_ipm": ipm_m2["m2"],
            "m2_ipm_runs": n_ref_runs,
            "m2_ipm_se": max(sd / math.sqrt(n_ref_runs), ipm_m2["m2_se"]),
            "m2_ipm_particle_se": ipm_m2["m2_se"],
            "m2_run_sd": sd,
            "m2_runs": n_sd,
            # trained on a pool of independent runs: its mean's error; trained on the first replica,
            # which is in the reference mean: DP - mean(r0, r1, r2) ~ (2 r0 - r1 - r2) / 3 has
            # variance 2/3 sd^2, the reference's 1/3 and this 1/3
            "m2_train_se": sd / math.sqrt(n_runs if n_runs else len(REPLICAS)),
            "m2_dp": cmp["moments"]["m2"],
            "m2_dp_se": cmp["moments"]["m2_se"],
            "m2_rel_error": abs(cmp["moments"]["m2"] - ipm_m2["m2"]) / ipm_m2["m2"],
            "com_dp": cmp["moments"]["com_norm"],
            "com_ipm": ipm_m["com_norm"],
            # where the map folds the source, the generated law has caustics (judged: specs.FOLD_LIMIT)
            "folded": list(model.folded_fraction(mcfg, res.params, v, jax.random.fold_in(k_gen, 1), FOLD_POINTS)),
        }
        if radial is not None:
            j = int(np.flatnonzero(np.isclose(radial.times, v))[0])
            cdf = radial.cdf(j)
            # where the distance is reached: F_n - F and the reference's CDF level there (0.99: the tail)
            many = _ks_cloud(mcfg, res.params, v, gen, jax.random.fold_in(k_gen, 2))
            # judged on the generated law itself: radially stratified sources (model.generate), whose radial
            # CDF is within a few 1e-4 of the learnt law's (1/n for a map that carried radii to radii);
            # independent draws add a KS of about 0.87 / sqrt(n) of sampling luck (0.0028 at 10^5), with
            # which even exact draws of the mean field lose to the replicas at one of ks2d-time's nine
            # paper-scale times in most runs (docs/metrics.md, "Radial profile")
            strat = model.generate(mcfg, res.params, v, jax.random.fold_in(k_gen, 4), KS_POINTS, source="stratified")
            row["ks_points"], row["ks_source"] = len(strat), "stratified"
            row["ks_dp"], row["ks_dp_signed"], row["ks_dp_level"] = metrics_.radial_ks_where(strat, cdf)
            row["ks_dp_iid"], row["ks_dp_iid_signed"], row["ks_dp_iid_level"] = metrics_.radial_ks_where(many, cdf)
            row["ks_iid_points"] = len(many)
            row["ks_ipm"], row["ks_ipm_signed"], row["ks_ipm_level"] = metrics_.radial_ks_where(pooled, cdf)
            if ref_runs is not None:  # more independent IPM data: a yardstick for what the check asks
                more = np.asarray(ref_runs[:, i]).reshape(-1, exp.d)
                row["ks_ref_runs"], row["ks_ref_runs_points"] = metrics_.radial_ks(more, cdf), len(more)
            # the law is rotation invariant: the inner half's anisotropy, pieces of J generated points
            # against the replicas and the m2 reference runs, one run each
            runs = np.asarray(parts[:, i]) if ref_runs is None else np.concatenate([parts[:, i], ref_runs[:, i]])
            a = metrics_.anisotropy_z(many, runs, ANISOTROPY_INNER)
            row.update({f"aniso_{k}": a[k] for k in ("dp", "dp_se", "ipm", "ipm_se", "z", "runs")})
            row["m2_reference"] = float(m2_radial[j])
        if ref_runs is not None and len(ref_runs) >= 4:  # more pairs for the C2ST check (report.c2st_check)
            row["c2st_pairs"] = metrics_.c2st_pairs(
                jax.random.fold_in(k_cmp, 7), gen, np.asarray(ref_runs[:, i]), steps=sc.c2st_steps
            )
        if exp.eta == "time" and float(v) == 0.0:
            row.update(initial_law_check(exp, gen, pooled, mcfg, res.params, jax.random.fold_in(k_gen, 3)))
        row.update(report.judge(row, scale))
        metrics["rows"].append(row)
        storage.write_json(path, metrics)  # every row on disk before anything summarises them
        log(
            f"  {kind:>12} {exp.eta}={v:g}: C2ST {row['c2st'][0]:.3f} (IPM {row['floor_c2st'][0]:.3f}), "
            f"energy {row['energy'][0]:.2e} (IPM {row['floor_energy'][0]:.2e}, z {row['energy_z']:.1f}), "
            f"m2 {row['m2_dp']:.4f} vs {row['m2_ipm']:.4f}"
        )
    timing["eval_s"], device["eval_s"] = time.perf_counter() - t0, here

    # the generated m2 on a fine grid of the parameter (the figure's curve; for the flow-free time
    # experiment the acceptance asks that it decrease over the training range)
    dense = (
        np.linspace(values.min(), values.max(), 60)
        if exp.eta == "time"
        else np.geomspace(values.min(), values.max(), 60)
    )
    m2_curve = [
        float(ipm.second_moment(model.generate(mcfg, res.params, v, jax.random.key(123), 20000))) for v in dense
    ]
    metrics["m2_curve"] = {"eta": dense.tolist(), "m2_dp": m2_curve}
    storage.write_json(path, metrics)

    t0 = time.perf_counter()
    make_figures(exp, folder, values, parts, mcfg, res, metrics, sc, radial)
    timing["figures_s"], device["figures_s"] = time.perf_counter() - t0, here
    metrics["summary_by_kind"] = summarise(metrics["rows"])
    metrics["complete"] = True
    storage.write_json(path, metrics)
    return metrics


def m2_run_sd(exp: Experiment, scale: str, values, parts, targets, n_runs, ref_runs=None) -> dict:
    """One IPM run's standard deviation of m2 at every value: ``{value: (sd, runs it rests on)}``.

    A run's m2 varies from run to run by more than its particles suggest (`ksdp.metrics.run_spread`),
    so its standard errors come from the spread of single runs: the three replicas, the m2 reference
    runs ``ref_runs`` (``[runs, n_values, J, d]`` aligned with ``values``, or None) and, at a training
    value, the training pool's runs. Where no pool run exists (held-out and extrapolated values) the
    degrees of freedom there are pooled with the spread interpolated from the training values (in the
    network's coordinate: log10 A or t), weighted by degrees of freedom.
    """
    train_v = [float(v) for v in exp.values(scale)[0]]
    train_runs = np.asarray(targets).reshape(len(train_v), n_runs or 1, -1, exp.d)  # [R, runs, J, d]
    out = {}
    for i, v in enumerate(values):
        runs = [metrics_.moments(parts[r, i])["m2"] for r in range(parts.shape[0])]
        if ref_runs is not None:
            runs += [metrics_.moments(np.asarray(x))["m2"] for x in ref_runs[:, i]]
        if float(v) in train_v and n_runs is not None:
            runs += [metrics_.moments(x)["m2"] for x in train_runs[train_v.index(float(v))]]
        out[float(v)] = (metrics_.run_spread(runs)["sd"], len(runs))
    if n_runs is not None:
        coord = np.log10 if exp.eta == "amplitude" else (lambda a: np.asarray(a, np.float64))
        tx = coord(np.asarray(train_v))
        t_var = np.asarray([out[v][0] ** 2 for v in train_v])
        dof_nb = n_runs + parts.shape[0] + (0 if ref_runs is None else len(ref_runs)) - 1
        for v in out:
            sd, n = out[v]
            if v not in train_v:
                var = ((n - 1) * sd**2 + dof_nb * float(np.interp(coord(v), tx, t_var))) / (n - 1 + dof_nb)
                out[v] = (math.sqrt(var), n + n_runs)
    return out


def summarise(rows) -> dict:
    """Per kind of value present (train / held-out / extrapolated): the worst of every metric."""
    out = {}
    for kind in ("train", "held-out", "extrapolated"):
        rs = [r for r in rows if r["kind"] == kind]
        if not rs:
            continue
        out[kind] = {
            "n_values": len(rs),
            "max_c2st_excess": max(r["c2st_excess"] for r in rs),
            # what the check judges: the mean over every pair of runs where there are more (report.c2st_check)
            "max_c2st_checked_excess": max(r["c2st_checked_excess"] for r in rs),
            "max_energy_z": max(r["energy_z"] for r in rs),
            "max_m2_rel_error": max(r["m2_rel_error"] for r in rs),
            "max_w2_ratio": max(r["ratio"] for r in rs),
            "all_ok": all(report.passes(r) for r in rs),
        }
    return out


def make_figures(exp, folder, values, parts, mcfg, res, metrics, sc, radial):
    key = jax.random.key(123)
    n_show = min(20 * sc.n_particles, 200_000)
    label = "t" if exp.eta == "time" else "A"
    train_v, _, extra_v = exp.values(metrics["settings"]["scale"])
    # projections at a few values, including the extrapolated one; the reference pools the 3 IPM runs
    pick = [values[0], values[len(values) // 2], float(np.max(train_v))] + [float(v) for v in extra_v]
    pick = sorted({float(v) for v in pick})
    cases = []
    for v in pick:
        i = int(np.flatnonzero(np.isclose(values, v))[0])
        dp = model.generate(mcfg, res.params, v, jax.random.fold_in(key, i), n_show)
        cases.append((f"{label} = {v:.3g}", np.asarray(parts[:, i]).reshape(-1, exp.d), dp))
    figures.projections(
        os.path.join(folder, "projections.png"),
        cases,
        exp.d,
        f"{exp.name}: IPM ({len(REPLICAS)} runs of J = {sc.n_particles} pooled) vs DeepParticle ({n_show} generated)",
    )
    # second moment against the parameter
    dense, m2_dp = metrics["m2_curve"]["eta"], metrics["m2_curve"]["m2_dp"]
    rows = metrics["rows"]
    curves = []
    if radial is not None:
        tt = np.linspace(0.0, float(values.max()), 81)
        blob = reference.solve_radial(tt, d=exp.d, delta=DELTA)
        curves.append((tt, blob.second_moment(), rf"mean field, blob $\delta^2$ = {DELTA**2:.0e}"))
        exact = reference.solve_radial(tt, d=exp.d)  # stops at the blow-up, if it comes in the range
        curves.append((exact.times, exact.second_moment(), "Keller-Segel (unregularised)"))
    marks = [(float(v), "extrapolated") for v in extra_v]
    if radial is not None and exact.blowup_time is not None:
        marks.append((exact.blowup_time, f"blow-up $T^*$ = {exact.blowup_time:.4f}"))
    figures.second_moment(
        os.path.join(folder, "second_moment.png"),
        [r["eta"] for r in rows],
        [r["m2_ipm"] for r in rows],
        [r["m2_ipm_se"] for r in rows],
        dense,
        m2_dp,
        label,
        f"{exp.name}: second moment",
        curves=curves,
        logx=exp.eta == "amplitude",
        marks=marks,
        n_runs=rows[0].get("m2_ipm_runs", len(REPLICAS)),
    )
    figures.loss(
        os.path.join(folder, "loss.png"),
        res.history,
        f"{exp.name}: training loss",
        floor=metrics["loss_floor"],
    )
