"""The evaluation of an experiment's generated laws: every metric of every parameter value against the
IPM runs there, next to its floor (`evaluate_value`), and the loss against its floor."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import numpy as np

from ksdp import initial, ipm, model, provenance, reference, training, wasserstein
from ksdp import metrics as metrics_
from ksdp._checks import is_integer as _is_integer
from ksdp.experiments import checks
from ksdp.experiments.ipm_data import DELTA, REPLICAS
from ksdp.experiments.specs import (
    ANISOTROPY_INNER,
    FLOOR_REPEATS,
    FOLD_POINTS,
    KS_POINTS,
    MEMORISATION_Z,
    Experiment,
    Scale,
)

MAX_PAIRED = 10_000  # C2ST and W2 compare at most this many points per cloud (their cost grows faster than J)


def _w2(a, b, key):
    return float(wasserstein.w2(a, b, key=key).w2)  # certified within 1e-4 of the optimum


def _ks_cloud(mcfg, params, v, gen, key):
    """The generated points a KS check uses: ``gen`` if it has `KS_POINTS`, else a draw of that many."""
    return gen if len(gen) >= KS_POINTS else model.generate(key, mcfg, params, v, KS_POINTS)


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


class RadialByValue(NamedTuple):
    """The radial reference at every value of a flow-free eps experiment, read like one `RadialSolution`
    over ``times`` (which hold the eps values here)."""

    times: np.ndarray
    solutions: tuple

    def cdf(self, i: int):
        return self.solutions[i].cdf(0)

    def second_moment(self) -> np.ndarray:
        return np.array([s.second_moment()[0] for s in self.solutions])


def radial_reference(exp: Experiment, values):
    """The blob mean field (``ksdp.reference``) at every value of a flow-free experiment (the times of a time
    experiment; the eps values of an eps experiment, at its time), else None."""
    if exp.flow != "none" or exp.eta not in ("time", "eps"):
        return None
    values = np.asarray(values, np.float64)
    if exp.eta == "eps":
        sols = tuple(reference.solve_radial((exp.fixed,), d=exp.d, delta=DELTA, eps=float(e)) for e in values)
        return RadialByValue(values, sols)
    return reference.solve_radial(values, d=exp.d, delta=DELTA)


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
    if not _is_integer(repeats) or repeats < 2:
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


class Evaluation(NamedTuple):
    """What the evaluation of every parameter value of one run needs (`evaluate_value`)."""

    exp: Experiment
    scale: str
    sc: Scale
    mcfg: Any  # ksdp.model.ModelConfig
    params: Any  # the network's evaluated weights
    values: np.ndarray  # every value, in the dataset's order (`Experiment.all_values`)
    parts: np.ndarray  # [3 replicas, V, J, d]
    ref_runs: np.ndarray | None  # [runs, V, J, d]: the m2 reference runs, or None
    n_runs: int | None  # training pool runs per training value (None: no pool)
    radial: Any  # the blob mean field at every value (flow-free time experiments), else None
    run_sd: dict  # value -> (sd of one run's m2, runs it rests on): `m2_run_sd`


def metrics_header(exp, scale, seed, sc, ds, settings, n_runs, n_ref, mcfg, tcfg, res, targets) -> dict:
    """The run's ``metrics.json`` before its rows: settings as trained, the loss against its floor."""
    final_loss = training.final_loss(res.history, tcfg.resample_every)
    fresh_loss = training.fresh_batch_loss(res.history, tcfg.resample_every)
    floor_loss = loss_floor(jax.random.key(seed + 3), targets, tcfg.n_samples)
    loss_z = memorisation_z(final_loss, floor_loss)
    return {
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
            **{f.name: getattr(sc, f.name) for f in dataclasses.fields(sc) if f.name != "train"},
            **tcfg._asdict(),  # the recipe as trained (the scale's, the experiment's changes resolved)
            "tail_feature": bool(mcfg.tail_feature),
            "radial_weight": tcfg.radial_weight,
            **({"identity_at": mcfg.identity_at} if mcfg.identity_at is not None else {}),
            **({"proportional": True} if mcfg.proportional else {}),
            **({"fourier": mcfg.fourier} if mcfg.fourier else {}),
            **({"between": list(exp.between[scale])} if exp.between.get(scale) else {}),
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
        "manifest": provenance.manifest(),
    }


def evaluate_value(ev: Evaluation, v, k_gen, k_cmp) -> dict:
    """One row of ``metrics.json``: every metric of the generated law at ``v`` against the IPM runs there,
    judged (`checks.judge`). ``k_gen`` draws the generated points, ``k_cmp`` the metrics' randomness."""
    exp, sc = ev.exp, ev.sc
    i = int(np.flatnonzero(ev.values == v)[0])  # v is one of ev.values
    train_v, held_v, _ = exp.values(ev.scale)
    kind = "train" if v in train_v else "held-out" if v in held_v else "extrapolated"
    gen = model.generate(k_gen, ev.mcfg, ev.params, v, sc.n_generated)
    pooled = np.asarray(ev.parts[:, i]).reshape(-1, exp.d)
    row = {"eta": float(v), "kind": kind, "n_generated": sc.n_generated}
    row.update(_distances(ev, i, gen, pooled, k_cmp))
    # where the map folds the source, the generated law has caustics (judged: specs.FOLD_LIMIT)
    row["folded"] = list(model.folded_fraction(jax.random.fold_in(k_gen, 1), ev.mcfg, ev.params, v, FOLD_POINTS))
    if ev.radial is not None:
        row.update(_radial_checks(ev, i, v, gen, pooled, k_gen))
    if ev.ref_runs is not None and len(ev.ref_runs) >= 4:  # more pairs for the C2ST check (checks.c2st_check)
        row["c2st_pairs"] = metrics_.c2st_pairs(
            jax.random.fold_in(k_cmp, 7), gen, np.asarray(ev.ref_runs[:, i]), steps=sc.c2st_steps
        )
    runs = structure_runs(ev, i)
    if len(runs) >= 4 and sc.n_generated >= 2 * runs.shape[1]:  # the projections' check (checks.judge)
        row["structure"] = metrics_.structure_pairs(gen, runs)
    if exp.eta == "time" and float(v) == 0.0:
        row.update(initial_law_check(exp, gen, pooled, ev.mcfg, ev.params, jax.random.fold_in(k_gen, 3)))
    row.update(checks.judge(row, ev.scale, exp.judged_values(ev.scale)))
    return row


def structure_runs(ev: Evaluation, i: int) -> np.ndarray:
    """``[R, J, d]`` independent IPM runs at the ``i``-th value that the network did not train on, for the
    structure check (`ksdp.metrics.structure_pairs`): the replicas (less the first where the network
    trained on it rather than on a pool) and the m2 reference runs."""
    replicas = np.asarray(ev.parts[:, i] if ev.n_runs else ev.parts[1:, i])
    if ev.ref_runs is None:
        return replicas
    return np.concatenate([replicas, np.asarray(ev.ref_runs[:, i])])


def _distances(ev: Evaluation, i: int, gen, pooled, key) -> dict:
    """C2ST, energy distance, W2 and moments of the generated cloud against the ``reference`` replica, next
    to the ``floor`` replica's; m2 against the replicas and the m2 reference runs, with its errors."""
    exp, sc = ev.exp, ev.sc
    ref, floor = np.asarray(ev.parts[1, i]), np.asarray(ev.parts[2, i])
    cmp = metrics_.compare(key, gen, ref, floor, w2_points=MAX_PAIRED, c2st_points=MAX_PAIRED, c2st_steps=sc.c2st_steps)
    ipm_m = metrics_.moments(pooled)
    if ev.ref_runs is not None:  # the m2 check's reference: the replicas and the m2 reference runs
        ipm_m2 = metrics_.moments(np.concatenate([pooled, np.asarray(ev.ref_runs[:, i]).reshape(-1, exp.d)]))
    else:
        ipm_m2 = ipm_m
    n_ref_runs = len(REPLICAS) + (0 if ev.ref_runs is None else len(ev.ref_runs))  # the runs m2_ipm averages
    sd, n_sd = ev.run_sd[float(ev.values[i])]
    return {
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
        "m2_train_se": sd / math.sqrt(ev.n_runs if ev.n_runs else len(REPLICAS)),
        "m2_dp": cmp["moments"]["m2"],
        "m2_dp_se": cmp["moments"]["m2_se"],
        "m2_rel_error": abs(cmp["moments"]["m2"] - ipm_m2["m2"]) / ipm_m2["m2"],
        "com_dp": cmp["moments"]["com_norm"],
        "com_ipm": ipm_m["com_norm"],
    }


def _radial_checks(ev: Evaluation, i: int, v, gen, pooled, k_gen) -> dict:
    """For a flow-free time experiment: the radial KS distances to the blob mean field and the core's
    anisotropy (`ksdp.metrics.anisotropy_z`)."""
    exp, row = ev.exp, {}
    j = int(np.flatnonzero(np.isclose(ev.radial.times, v))[0])
    cdf = ev.radial.cdf(j)
    # where the distance is reached: F_n - F and the reference's CDF level there (0.99: the tail)
    many = _ks_cloud(ev.mcfg, ev.params, v, gen, jax.random.fold_in(k_gen, 2))
    # judged on the generated law itself: radially stratified sources (model.generate), whose radial
    # CDF is within a few 1e-4 of the learnt law's (1/n for a map that carried radii to radii);
    # independent draws add a KS of about 0.87 / sqrt(n) of sampling luck (0.0028 at 10^5), with
    # which even exact draws of the mean field lose to the replicas at one of ks2d-time's nine
    # paper-scale times in most runs (docs/metrics.md, "Radial profile")
    strat = model.generate(jax.random.fold_in(k_gen, 4), ev.mcfg, ev.params, v, KS_POINTS, source="stratified")
    row["ks_points"], row["ks_source"] = len(strat), "stratified"
    row["ks_dp"], row["ks_dp_signed"], row["ks_dp_level"] = metrics_.radial_ks_where(strat, cdf)
    row["ks_dp_iid"], row["ks_dp_iid_signed"], row["ks_dp_iid_level"] = metrics_.radial_ks_where(many, cdf)
    row["ks_iid_points"] = len(many)
    row["ks_ipm"], row["ks_ipm_signed"], row["ks_ipm_level"] = metrics_.radial_ks_where(pooled, cdf)
    runs = np.asarray(ev.parts[:, i])
    if ev.ref_runs is not None:  # more independent IPM data: a yardstick for what the check asks
        more = np.asarray(ev.ref_runs[:, i]).reshape(-1, exp.d)
        row["ks_ref_runs"], row["ks_ref_runs_points"] = metrics_.radial_ks(more, cdf), len(more)
        runs = np.concatenate([runs, ev.ref_runs[:, i]])
    # the law is rotation invariant: the inner half's anisotropy, pieces of J generated points
    # against the replicas and the m2 reference runs, one run each
    a = metrics_.anisotropy_z(many, runs, ANISOTROPY_INNER)
    row.update({f"aniso_{k}": a[k] for k in ("dp", "dp_se", "ipm", "ipm_se", "z", "runs")})
    row["m2_reference"] = float(ev.radial.second_moment()[j])
    return row


def m2_curve(exp: Experiment, mcfg, params, values) -> dict:
    """The generated m2 on a fine grid of the parameter (the figure's curve; for the flow-free time
    experiment the acceptance asks that it decrease over the training range)."""
    dense = (
        np.linspace(values.min(), values.max(), 60)
        if exp.eta == "time"
        else np.geomspace(values.min(), values.max(), 60)
    )
    m2 = [float(ipm.second_moment(model.generate(jax.random.key(123), mcfg, params, v, 20000))) for v in dense]
    return {"eta": dense.tolist(), "m2_dp": m2}


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
        coord = np.log10 if exp.log_eta else (lambda a: np.asarray(a, np.float64))
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
            # what the check judges: the mean over every pair of runs where there are more (checks.c2st_check)
            "max_c2st_checked_excess": max(r["c2st_checked_excess"] for r in rs),
            "max_energy_z": max(r["energy_z"] for r in rs),
            "max_m2_rel_error": max(r["m2_rel_error"] for r in rs),
            "max_w2_ratio": max(r["ratio"] for r in rs),
            "all_ok": all(checks.passes(r) for r in rs),
        }
    return out
