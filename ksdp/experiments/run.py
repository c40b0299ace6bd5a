"""One experiment end to end: IPM data (`ksdp.experiments.ipm_data`, cached), DeepParticle training
(resumable), the evaluation (`ksdp.experiments.evaluate`), figures."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from functools import partial

import jax
import numpy as np

from ksdp import model, plot, reference, storage, training, wasserstein
from ksdp.experiments.evaluate import (
    Evaluation,
    evaluate_value,
    m2_curve,
    m2_run_sd,
    metrics_header,
    radial_reference,
    summarise,
)
from ksdp.experiments.ipm_data import (
    DELTA,
    REPLICAS,
    device_name,
    least_particles,
    pool_runs,
    scale_of,
    set_aside,
    simulate_data,
)
from ksdp.experiments.specs import Experiment, Scale

# the stages' messages when no ``log`` is given (the command line passes its own, printing them)
LOGGER = logging.getLogger("ksdp.experiments")


def displacement_sets(pool, values, fractions, log: bool = True):
    """Training sets between every two neighbouring training values: McCann's displacement interpolant
    of their pools at each fraction ``s`` of ``fractions``.

    Run ``k`` of the pool at the lower value is matched to run ``k`` at the upper one by `ksdp.w2` (its
    optimal matching), and each point moves the fraction ``s`` of the way to its partner; the set is
    placed ``s`` of the way between the two values (in ``log10`` when ``log``, as the network sees an
    amplitude). ``pool``: ``[values, runs, J, d]``. Returns ``(sets [K, runs * J, d], values [K])``.
    """
    sets, where = [], []
    for i in range(len(values) - 1):
        a, b = np.asarray(pool[i]), np.asarray(pool[i + 1])
        partner = np.concatenate([b[k][np.asarray(wasserstein.w2(a[k], b[k]).perm)] for k in range(a.shape[0])])
        own = np.concatenate(a)
        lo, hi = (np.log10(values[i]), np.log10(values[i + 1])) if log else (values[i], values[i + 1])
        for s in fractions:
            sets.append(((1 - s) * own + s * partner).astype(np.float32))
            where.append(10 ** ((1 - s) * lo + s * hi) if log else (1 - s) * lo + s * hi)
    return np.stack(sets), np.asarray(where, np.float64)


def training_sets(exp: Experiment, scale: str, targets, n_runs: int | None):
    """The sets the network trains on and their values: ``targets`` (``[V, J', d]``, one per training
    value) with, where the experiment asks for them at ``scale`` (`Experiment.between`), the
    `displacement_sets` of its training pool (``n_runs`` runs per value) after them."""
    train_v = np.asarray(exp.values(scale)[0], np.float64)
    fractions = exp.between.get(scale, ())
    if not fractions:
        return targets, train_v
    if not n_runs:
        raise ValueError(f"{exp.name} trains between its values at scale {scale!r} but has no training pool.")
    targets = np.asarray(targets)
    pool = targets.reshape(targets.shape[0], n_runs, -1, exp.d)
    extra, where = displacement_sets(pool, train_v, fractions, log=exp.log_eta)
    return np.concatenate([targets, extra]), np.concatenate([train_v, where])


def configs(exp: Experiment, scale: str):
    """The network's and the training's configs of an experiment at a scale: ``(ModelConfig, TrainConfig)``."""
    sc = scale_of(exp, scale)
    train_v = exp.values(scale)[0]
    mcfg = model.make_config(
        exp.d,
        train_v,
        width=sc.width,
        depth=sc.depth,
        eta_log=exp.log_eta,
        tail_feature=exp.tail_feature,
        identity_at=exp.identity_at,
        proportional=exp.proportional,
        fourier=exp.fourier_at(scale),
    )
    # the scale's recipe (the decay over the run, unless the scale sets its own) with the experiment's term
    tcfg = sc.train.for_steps(sc.n_steps)._replace(radial_weight=exp.radial_weight_at(scale))
    return mcfg, tcfg


def _checkpoint_step(path) -> int:
    try:
        return int(training.load_checkpoint(path)[0].step)
    except Exception:  # unreadable: training decides what to do with it
        return -1


def train_network(exp: Experiment, scale: str, seed: int, targets, ck_path: str, log=None, eta=None):
    """The training stage of `run`: trains on ``targets`` (``[R, J, d]``, the training values'
    particles, or `training_sets`' with their values ``eta``) with the scale's configs, resuming from the
    checkpoint at ``ck_path``.

    A checkpoint that is unreadable or was written for other data (`training.CheckpointError`,
    `training.CheckpointMismatch`) is moved aside to ``checkpoint.stale-<n>.npz``, never deleted,
    and the network is trained afresh, saying so.

    Returns ``(TrainResult, resumed_complete, seconds)``: whether the checkpoint already held every
    step (nothing was trained), and the time the training that did happen took.
    """
    log = log or LOGGER.info
    n_steps = scale_of(exp, scale).n_steps
    mcfg, tcfg = configs(exp, scale)
    train_v = exp.values(scale)[0] if eta is None else eta
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
        progress=None if training.interactive() else log,
    )
    t0 = time.perf_counter()
    try:
        res = fit(checkpoint=ck_path)
    except (training.CheckpointMismatch, training.CheckpointError) as e:  # other data, or unreadable: keep it aside
        stale = set_aside(ck_path)
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
    log=None,
    *,
    n_particles: int | None = None,
    drift: str = "auto",
) -> dict:
    """Runs one experiment; returns its metrics dict (also written to ``OUT/<name>/metrics.json``).

    The stages: the IPM data (`simulate_data`: replicas, training pool, m2 reference runs, each cached),
    the training (`train_network`, resumable), the evaluation of every value (`evaluate_value`), the
    generated m2 curve and the figures.

    ``n_particles`` replaces the scale's J (the IPM's size: training pool, reference and floor);
    ``drift`` how the IPM sums its drift (`ksdp.simulate`; ``"auto"`` chooses by J). C2ST and W2
    compare at most `MAX_PAIRED` points per cloud, the energy distance and the moments all of them.

    ``metrics.json`` is rewritten after every evaluated parameter value (``"complete": false``
    until the last), so a failure late in the evaluation or in the figures loses no computed row.
    """
    log = log or LOGGER.info
    sc = _scale_with(exp, scale, n_particles)
    folder = os.path.join(out, exp.name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "metrics.json")
    data_, timing, device = simulate_data(exp, scale, seed, folder, log, sc, drift)
    ds, parts, targets, ref_runs, n_runs, n_ref, settings, previous, previous_device = data_
    here = device_name()
    mcfg, tcfg = configs(exp, scale)
    sets, eta = training_sets(exp, scale, targets, n_runs)  # the pool, and sets between its values
    res, resumed_complete, timing["train_s"] = train_network(
        exp, scale, seed, sets, os.path.join(folder, "checkpoint.npz"), log, eta
    )
    device["train_s"] = here
    if resumed_complete and "train_s" in previous:  # the checkpoint was complete: keep the time it took
        timing["train_s"], device["train_s"] = previous["train_s"], previous_device["train_s"]

    t0 = time.perf_counter()
    values = exp.all_values(scale)
    metrics = metrics_header(exp, scale, seed, sc, ds, settings, n_runs, n_ref, mcfg, tcfg, res, sets)
    metrics.update(timing_s=timing, timing_device=device)  # the same dicts, filled in as the stages end
    ev = Evaluation(
        exp,
        scale,
        sc,
        mcfg,
        res.params,
        values,
        parts,
        ref_runs,
        n_runs,
        radial_reference(exp, values),
        m2_run_sd(exp, scale, values, parts, targets, n_runs, ref_runs),
    )
    key = jax.random.key(seed + 2)
    for v in values:
        k_gen, k_cmp, key = jax.random.split(key, 3)
        row = evaluate_value(ev, v, k_gen, k_cmp)
        metrics["rows"].append(row)
        storage.write_json(path, metrics)  # every row on disk before anything summarises them
        log(
            f"  {row['kind']:>12} {exp.eta}={v:g}: C2ST {row['c2st'][0]:.3f} (IPM {row['floor_c2st'][0]:.3f}), "
            f"energy {row['energy'][0]:.2e} (IPM {row['floor_energy'][0]:.2e}, z {row['energy_z']:.1f}), "
            f"m2 {row['m2_dp']:.4f} vs {row['m2_ipm']:.4f}"
        )
    timing["eval_s"], device["eval_s"] = time.perf_counter() - t0, here

    metrics["m2_curve"] = m2_curve(exp, mcfg, res.params, values)
    storage.write_json(path, metrics)
    t0 = time.perf_counter()
    make_figures(exp, folder, values, parts, mcfg, res, metrics, sc, ev.radial)
    timing["figures_s"], device["figures_s"] = time.perf_counter() - t0, here
    metrics["summary_by_kind"] = summarise(metrics["rows"])
    metrics["complete"] = True
    storage.write_json(path, metrics)
    shipped_generator(exp, res.generator, metrics).save(os.path.join(folder, "generator.npz"))
    return metrics


ACCEPTANCE_KEYS = ("kind", "eta", "c2st", "floor_c2st", "c2st_excess", "c2st_ok", "energy_z", "energy_ok")
ACCEPTANCE_KEYS += ("m2_dp", "m2_ipm", "m2_rel_error", "m2_ok", "folded", "folded_ok")


def shipped_generator(exp: Experiment, gen, metrics: dict):
    """The run's generator with what a user of it needs in its metadata: the experiment, the physical
    parameter's name, the settings it was trained at, and the acceptance rows it passed (or not) at the
    training, held-out and extrapolated values, next to the IPM's own floors."""
    rows = [{k: r[k] for k in ACCEPTANCE_KEYS if k in r} for r in metrics["rows"]]
    return gen.with_metadata(
        experiment=exp.name,
        eta_name=exp.eta,
        settings=metrics["settings"],
        acceptance={"rows": rows, "summary_by_kind": metrics["summary_by_kind"]},
    )


def _scale_with(exp: Experiment, scale: str, n_particles: int | None) -> Scale:
    """The `Scale` of ``exp`` at ``scale``, with J replaced by ``n_particles`` (checked) if given."""
    sc = scale_of(exp, scale)
    if n_particles is None:
        return sc
    if not isinstance(n_particles, (int, np.integer)) or isinstance(n_particles, bool) or n_particles < 1:
        raise ValueError(f"n_particles must be a positive integer, got {n_particles!r}.")
    least = least_particles(exp, scale)
    if n_particles < least:
        raise ValueError(
            f"n_particles={n_particles} is too small for {exp.name} at the {scale} scale: the loss floor "
            f"compares two disjoint samples of N = {sc.train.n_samples} from each training set of "
            f"{pool_runs(exp, scale) or 1} x {n_particles} particles; use at least {least}."
        )
    return dataclasses.replace(sc, n_particles=int(n_particles))


def make_figures(exp, folder, values, parts, mcfg, res, metrics, sc, radial):
    key = jax.random.key(123)
    n_show = min(20 * sc.n_particles, 200_000)
    label = exp.symbol
    train_v, _, extra_v = exp.values(metrics["settings"]["scale"])
    # projections at a few values, including the extrapolated one; the reference pools the 3 IPM runs
    pick = [values[0], values[len(values) // 2], float(np.max(train_v))] + [float(v) for v in extra_v]
    pick = sorted({float(v) for v in pick})
    cases = []
    for v in pick:
        i = int(np.flatnonzero(np.isclose(values, v))[0])
        dp = model.generate(jax.random.fold_in(key, i), mcfg, res.params, v, n_show)
        cases.append((f"{label} = {v:.3g}", np.asarray(parts[:, i]).reshape(-1, exp.d), dp))
    fig = plot.projections(
        cases,
        exp.d,
        f"{exp.name}: IPM ({len(REPLICAS)} runs of J = {sc.n_particles} pooled) vs DeepParticle ({n_show} generated)",
    )
    plot.save(fig, os.path.join(folder, "projections.png"))
    # second moment against the parameter
    dense, m2_dp = metrics["m2_curve"]["eta"], metrics["m2_curve"]["m2_dp"]
    rows = metrics["rows"]
    curves = []
    if radial is not None and exp.eta == "eps":
        ee = np.geomspace(float(values.min()), float(values.max()), 7)
        curve = [reference.solve_radial((exp.fixed,), d=exp.d, delta=DELTA, eps=e).second_moment()[0] for e in ee]
        curves.append((ee, np.asarray(curve), rf"mean field, blob $\delta^2$ = {DELTA**2:.0e}"))
    elif radial is not None:
        tt = np.linspace(0.0, float(values.max()), 81)
        blob = reference.solve_radial(tt, d=exp.d, delta=DELTA)
        curves.append((tt, blob.second_moment(), rf"mean field, blob $\delta^2$ = {DELTA**2:.0e}"))
        exact = reference.solve_radial(tt, d=exp.d)  # stops at the blow-up, if it comes in the range
        curves.append((exact.times, exact.second_moment(), "Keller-Segel (unregularised)"))
    marks = [(float(v), "extrapolated") for v in extra_v]
    if radial is not None and exp.eta == "time" and exact.blowup_time is not None:
        marks.append((exact.blowup_time, f"blow-up $T^*$ = {exact.blowup_time:.4f}"))
    fig = plot.second_moment(
        [r["eta"] for r in rows],
        [r["m2_ipm"] for r in rows],
        [r["m2_ipm_se"] for r in rows],
        dense,
        m2_dp,
        label,
        f"{exp.name}: second moment",
        curves=curves,
        logx=exp.log_eta,
        marks=marks,
        n_runs=rows[0].get("m2_ipm_runs", len(REPLICAS)),
    )
    plot.save(fig, os.path.join(folder, "second_moment.png"))
    fig = plot.loss(res.history, f"{exp.name}: training loss", floor=metrics["loss_floor"])
    plot.save(fig, os.path.join(folder, "loss.png"))
