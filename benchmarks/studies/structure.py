"""The structure check (`ksdp.metrics.structure_pairs`) and what makes a map keep the structure (docs/metrics.md,
docs/training.md).

* ``structure``: for every finished experiment under ``<out>/<scale>/`` whose run kept its training pool
  and m2 reference runs, the check of its network at every value (next to the C2ST and energy
  distance of its metrics.json), and its **false alarms**: the same check with independent IPM runs of
  the training pool in the generator's place (the pool's runs are IPM runs independent of the replicas
  and the reference runs), over disjoint blocks of pool runs and several pairings of the others.
* ``structure-ablations``: an experiment's network (kolmogorov3d-amplitude by default) retrained on its
  quick-scale pool with one change at a time (the matching, capacity, inputs, output heads, training
  length), several seeds each, judged by the check at every value (and by m2 and the energy distance).
  Each trained network is kept as a generator file under ``<out>/ablations/structure/`` and reused when
  the study runs again.
"""

from __future__ import annotations

import math
import os
import time
import warnings

import jax
import numpy as np
import scipy.stats

import ksdp
from benchmarks.studies.runs import found, slug
from ksdp import metrics as KM
from ksdp import training as T
from ksdp.experiments import checks as CHECKS
from ksdp.experiments import ipm_data as DATA
from ksdp.experiments import run as RUN
from ksdp.experiments.specs import EXPERIMENTS

# null checks per training value: blocks of pool runs standing in for the generator, times pairings
NULL_PAIRINGS = 4


def independent_runs(exp, scale, folder):
    """The replicas, the pool ``[runs, train values, J, d]`` (or None) and the reference runs of a run folder."""
    sc = DATA.scale_of(exp, scale)
    data_, _, _ = DATA.simulate_data(exp, scale, 0, folder, lambda *_: None, sc)
    _, parts, targets, ref_runs, n_runs, _, _, _, _ = data_
    pool = None
    if n_runs:
        j = sc.n_particles
        pool = np.asarray(targets).reshape(targets.shape[0], n_runs, j, exp.d).swapaxes(0, 1)
    return np.asarray(parts), pool, None if ref_runs is None else np.asarray(ref_runs)


def checked_runs(parts, pool, ref) -> np.ndarray:
    """The IPM runs the structure check compares a run's network with, ``[R, V, J, d]``: its replicas and
    reference runs, without the first replica where there is no pool (the network trained on it)."""
    return np.concatenate([parts if pool is not None else parts[1:], ref])


def structure(out="ksdp-runs", names=None) -> dict:
    """The check at every value of each finished run under the folders ``out`` (one or a list), and its
    false alarms: ``{"rows", "null_tail", "null_runs", "null_runs_failed"}``."""
    rows = []
    folders = [out] if isinstance(out, str) else list(out)
    found_runs = [(root, f) for root in folders for f in found(root, names, ("metrics.json",))]
    for root, (scale, name, exp, (metrics_path,)) in found_runs:
        folder = os.path.dirname(metrics_path)
        parts, pool, ref = independent_runs(exp, scale, folder)
        if ref is None:
            print(f"structure: {scale}/{name} has no reference runs: skipped", flush=True)
            continue
        if pool is None:  # the network trained on the first replica: not independent of it, and no null
            print(f"structure: {scale}/{name} has no pool: its network checked, no false alarms", flush=True)
        saved = os.path.join(folder, "generator.npz")
        gen = (
            ksdp.load_generator(saved)
            if os.path.exists(saved)
            else T.generator_from_checkpoint(os.path.join(folder, "checkpoint.npz"))
        )
        m = CHECKS.load_metrics(os.path.dirname(folder), name)
        values = exp.all_values(scale)
        train_v = [float(v) for v in exp.values(scale)[0]]
        sc = DATA.scale_of(exp, scale)
        others = checked_runs(parts, pool, ref)
        limit = KM.structure_limit(others.shape[0] // 2, exp.judged_values(scale))
        key = jax.random.key(11)
        for i, v in enumerate(values):
            x = gen.sample(jax.random.fold_in(key, i), float(v), sc.n_generated)
            check = KM.structure_pairs(x, others[:, i])
            row = {"runs": root, "scale": scale, "experiment": name, "eta": float(v), "kind": value_kind(exp, scale, v)}
            row.update(check)
            row["limit"] = limit
            old = next((r for r in m["rows"] if math.isclose(r["eta"], float(v))), None) if m else None
            if old:
                row.update(c2st_excess=old["c2st_checked_excess"], energy_z=old["energy_z"], m2_rel=old["m2_rel_error"])
            null = []
            if pool is not None and float(v) in train_v:  # pool runs in the generator's place: false alarms
                t = train_v.index(float(v))
                rng = np.random.default_rng(i)
                pairs = others.shape[0] // 2
                for b in range(pool.shape[0] // pairs):
                    stand_in = pool[b * pairs : (b + 1) * pairs, t].reshape(-1, exp.d)
                    for _ in range(NULL_PAIRINGS):
                        order = rng.permutation(others.shape[0])
                        null.append(KM.structure_pairs(stand_in, others[order, i])["z"])
                row["null_z"] = null
                row["null_checks"], row["null_flagged"] = len(null), int(np.sum(np.greater(null, limit)))
                row["null_flagged_at_3"] = int(np.sum(np.greater(null, 3.0)))  # the fixed limit it replaced
            rows.append(row)
            print(
                f"structure {scale}/{name} {row['kind']:>12} {v:g}: chi2/df {check['dp']:.3f} "
                f"vs IPM {check['ipm']:.3f}, z {check['z']:.1f} (limit {limit:.2f})"
                + (f"; C2ST excess {row['c2st_excess']:+.3f}, energy z {row['energy_z']:.1f}" if old else "")
                + (f"; null: {row['null_flagged']}/{row['null_checks']} flagged" if null else ""),
                flush=True,
            )
    flagged = sum(r.get("null_flagged", 0) for r in rows)
    checks = sum(r.get("null_checks", 0) for r in rows)
    runs, failed = null_runs(rows)
    tail = null_tail(rows)
    if checks:
        print(f"structure: false alarms {flagged}/{checks} = {flagged / checks:.3f} of the checks", flush=True)
        print(f"structure: {failed}/{runs} null runs fail a value (the rate the limit bounds by 0.05)", flush=True)
        for t in tail:
            print(
                f"structure: null z > {t['z']:.2f}: {t['observed']} of {t['checks']} (Student t_{t['dof']}: "
                f"{t['expected_t']:.1f}; normal: {t['expected_normal']:.1f})",
                flush=True,
            )
    return {"rows": rows, "null_tail": tail, "null_runs": runs, "null_runs_failed": failed}


def null_tail(rows, levels=(1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)) -> list:
    """How the null checks' z (pool runs in the generator's place) sit against the Student law that
    `ksdp.metrics.structure_limit` assumes: per level, the count above it next to the expected counts
    under t with ``pairs - 1`` degrees of freedom and under the normal law."""
    null = [(z, r["pairs"]) for r in rows for z in r.get("null_z", [])]
    if not null:
        return []
    z = np.array([a for a, _ in null])
    dof = sorted({p - 1 for _, p in null})
    if len(dof) != 1:
        raise ValueError(f"the null checks mix numbers of pairs ({dof}): compare runs with one number of pairs")
    return [
        {
            "z": float(level),
            "dof": dof[0],
            "checks": len(z),
            "observed": int(np.sum(z > level)),
            "expected_t": float(len(z) * scipy.stats.t.sf(level, dof[0])),
            "expected_normal": float(len(z) * scipy.stats.norm.sf(level)),
        }
        for level in levels
    ]


def null_runs(rows) -> tuple[int, int]:
    """The per-run false alarms: the ``k``-th null check at each training value of one experiment (one
    block of pool runs in the generator's place) taken together as one run: how many such runs there
    are and how many fail any of their values (against the experiment's limit)."""
    runs = failed = 0
    for exp_rows in _by_experiment(rows):
        null = [(r["null_z"], r["limit"]) for r in exp_rows if r.get("null_z")]
        if not null:
            continue
        n = min(len(z) for z, _ in null)
        runs += n
        failed += sum(any(z[k] > limit for z, limit in null) for k in range(n))
    return runs, failed


def _by_experiment(rows):
    def key(r):
        return r.get("runs"), r["scale"], r["experiment"]

    keys = dict.fromkeys(key(r) for r in rows)
    return [[r for r in rows if key(r) == k] for k in keys]


def value_kind(exp, scale, v) -> str:
    train_v, held_v, _ = exp.values(scale)
    return "train" if v in train_v else "held-out" if v in held_v else "extrapolated"


def judged(gen, i: int, v: float, n: int, runs) -> tuple:
    """``n`` points of ``gen`` at ``v`` (the ``i``-th value: its own key) judged against independent IPM
    runs ``[R, J, d]`` at ``v``: ``(points, {structure, energy_z, m2_rel_error})``, the structure check over
    the runs' pairs, the energy distance to run 1 beside run 2's (its floor), m2 against the runs pooled."""
    x = gen.sample(jax.random.fold_in(jax.random.key(7), i), float(v), n)
    energy = KM.energy_distance(x, runs[1])
    floor = KM.energy_distance(runs[2], runs[1])
    m2_ipm = float(np.mean(np.sum(runs.astype(np.float64) ** 2, -1)))
    m2_dp = float(np.mean(np.sum(np.asarray(x, np.float64) ** 2, -1)))
    return x, {
        "structure": KM.structure_pairs(x, runs),
        "energy_z": (energy.value - floor.value) / math.hypot(energy.se, floor.se),
        "m2_rel_error": abs(m2_dp - m2_ipm) / m2_ipm,
    }


# one change at a time to the experiment's own configs (ModelConfig, TrainConfig, Adam steps)
VARIANTS = {
    "recipe": lambda m, t, n: (m, t, n),
    "min-min": lambda m, t, n: (m, t._replace(match_sources=False), n),
    "sources, then min-min for the last half": lambda m, t, n: (m, t._replace(min_min_after=n // 2), n),
    "width 96": lambda m, t, n: (m._replace(width=96), t, n),
    "twice N": lambda m, t, n: (m, t._replace(n_samples=2 * t.n_samples), n),
    "the tail coordinate": lambda m, t, n: (m._replace(tail_feature=True), t, n),
    "twice the steps": lambda m, t, n: (m, t._replace(decay_steps=2 * n), 2 * n),
    "the tail coordinate, twice the steps": lambda m, t, n: (
        m._replace(tail_feature=True),
        t._replace(decay_steps=2 * n),
        2 * n,
    ),
    "the proportional head": lambda m, t, n: (m._replace(proportional=True), t, n),
    "the tail coordinate, the proportional head": lambda m, t, n: (
        m._replace(tail_feature=True, proportional=True),
        t,
        n,
    ),
    "Fourier features, 4 octaves": lambda m, t, n: (m._replace(fourier=4), t, n),
    "Fourier features, twice the steps": lambda m, t, n: (m._replace(fourier=4), t._replace(decay_steps=2 * n), 2 * n),
}


def structure_ablations(out="ksdp-runs", variants=None, seeds=(0, 1), name="kolmogorov3d-amplitude", scale="quick"):
    exp = EXPERIMENTS[name]
    folder = os.path.join(out, scale, name)
    parts, pool, ref = independent_runs(exp, scale, folder)
    others = np.concatenate([parts, ref])
    sc = DATA.scale_of(exp, scale)
    train_v = exp.values(scale)[0]
    values = exp.all_values(scale)
    targets = pool.swapaxes(0, 1).reshape(len(train_v), -1, exp.d)
    base_m, base_t = RUN.configs(exp, scale)
    rows = []
    for label in variants or list(VARIANTS):
        mc, tc, n_steps = VARIANTS[label](base_m, base_t, sc.n_steps)
        for seed in seeds:
            path = os.path.join(out, "ablations", "structure", scale, name, f"{slug(label)}-seed{seed}.npz")
            t0 = time.perf_counter()
            if os.path.exists(path):
                gen = ksdp.load_generator(path)
            else:
                res = T.train(jax.random.key(100 + seed), targets, train_v, mc, tc, n_steps=n_steps, progress=print)
                gen = res.generator.with_metadata(variant=label, seed=seed)
                gen.save(path)
            seconds = time.perf_counter() - t0
            for i, v in enumerate(values):  # others[1], others[2]: the replicas 1 and 2
                _, scores = judged(gen, i, v, sc.n_generated, others[:, i])
                check = scores["structure"]
                fold = ksdp.model.folded_fraction(jax.random.key(3), gen.config, gen.params, float(v), 20000)[0]
                row = {
                    "experiment": name,
                    "variant": label,
                    "seed": seed,
                    "eta": float(v),
                    "kind": value_kind(exp, scale, v),
                    "train_s": seconds,
                    **scores,
                    "folded": fold,
                }
                rows.append(row)
                print(
                    f"structure-ablations {name} {label:>34} seed {seed} {row['kind']:>12} {v:g}: z {check['z']:5.1f} "
                    f"(chi2/df {check['dp']:.3f} vs {check['ipm']:.3f}), energy z {row['energy_z']:.1f}, "
                    f"m2 err {row['m2_rel_error']:.3f}, folded {fold:.3f}",
                    flush=True,
                )
    return rows


# between two training values: how far from them a map keeps the structure (kolmogorov3d's held-out 25.1
# fails in every variant of `structure_ablations`; these values tell whether the whole gap does)
BETWEEN_KEY = 11  # the runs' key is fold_in(key(0), BETWEEN_KEY): independent of the run's own
BETWEEN_RUNS = 13  # as many as the replicas and the m2 reference runs the check pairs elsewhere
DENSER_KEY = 12  # the added training values' pool runs: fold_in(key(0), DENSER_KEY)


BETWEEN = (10.0, 20.0, 31.6228, 63.0957)  # kolmogorov3d's quick grid: 10^(1, 1.3, 1.5, 1.8)


def _between_runs(exp, scale, folder, values) -> np.ndarray:
    """`BETWEEN_RUNS` fresh IPM runs at ``values`` ``[runs, values, J, d]``, cached in the run folder."""
    runs, _ = DATA.more_runs(
        exp, scale, 0, os.path.join(folder, "between-runs.npz"), print, BETWEEN_RUNS, None, "auto",
        values, "between", BETWEEN_KEY, "runs between training values",
    )  # fmt: skip
    return np.asarray(runs)


def structure_between(out="ksdp-runs", values=BETWEEN, variants=None, seeds=(0, 1),
                      name="kolmogorov3d-amplitude", scale="quick"):  # fmt: skip
    """The structure check (and the energy distance, m2) at parameter values that are neither training
    nor held-out values, for the run's own network and the networks `structure_ablations` kept, against
    `BETWEEN_RUNS` fresh independent IPM runs at each value (simulated once, cached in the run folder)."""
    exp = EXPERIMENTS[name]
    folder = os.path.join(out, scale, name)
    sc = DATA.scale_of(exp, scale)
    values = sorted(float(v) for v in values)
    runs = _between_runs(exp, scale, folder, values)  # [runs, values, J, d]
    nets = {("the run's network", 0): os.path.join(folder, "generator.npz")}
    for label in variants or list(VARIANTS):
        for seed in seeds:
            path = os.path.join(out, "ablations", "structure", scale, name, f"{slug(label)}-seed{seed}.npz")
            if os.path.exists(path):
                nets[(label, seed)] = path
    rows = []
    for (label, seed), path in nets.items():
        gen = ksdp.load_generator(path)
        for i, v in enumerate(values):
            _, scores = judged(gen, i, v, sc.n_generated, runs[:, i])
            check = scores["structure"]
            row = {"experiment": name, "variant": label, "seed": seed, "eta": v, **scores}
            rows.append(row)
            print(
                f"structure-between {name} {label:>34} seed {seed} {v:g}: z {check['z']:5.1f} "
                f"(chi2/df {check['dp']:.3f} vs {check['ipm']:.3f}), energy z {row['energy_z']:.1f}, "
                f"m2 err {row['m2_rel_error']:.3f}",
                flush=True,
            )
    return rows


def structure_denser(out="ksdp-runs", seeds=(0, 1), **kwargs) -> list:
    """`structure_between`'s question answered by training: the network of a change (``label``, default
    Fourier features with twice the steps) retrained with the values ``extra`` (default 25.1) added to the
    training values (each with a pool of the experiment's size, fresh runs), judged at the values between
    (`structure_between`'s runs) and at every value of the run; one network per seed."""
    return [row for seed in seeds for row in _denser(out, seed=seed, **kwargs)]


def _denser(out, extra=(25.1189,), label="Fourier features, twice the steps", seed=0,
            name="kolmogorov3d-amplitude", scale="quick"):  # fmt: skip
    exp = EXPERIMENTS[name]
    folder = os.path.join(out, scale, name)
    sc = DATA.scale_of(exp, scale)
    parts, pool, ref = independent_runs(exp, scale, folder)
    train_v = [float(v) for v in exp.values(scale)[0]]
    extra = sorted(float(v) for v in extra)
    n_pool = pool.shape[0]
    more, _ = DATA.more_runs(
        exp, scale, 0, os.path.join(folder, "denser-pool.npz"), print, n_pool, None, "auto",
        extra, "denser", DENSER_KEY, "pool runs at the added training values",
    )  # fmt: skip
    values = sorted(train_v + extra)
    runs = {v: pool[:, train_v.index(v)] if v in train_v else np.asarray(more)[:, extra.index(v)] for v in values}
    targets = np.stack([runs[v].reshape(-1, exp.d) for v in values])
    base_m, base_t = RUN.configs(exp, scale)
    mc, tc, n_steps = VARIANTS[label](base_m, base_t, sc.n_steps)
    mc = mc._replace(**{k: v for k, v in ksdp.make_config(exp.d, values, eta_log=exp.log_eta)._asdict().items()
                        if k in ("eta_center", "eta_scale")})  # fmt: skip
    path = os.path.join(out, "ablations", "structure", scale, name, f"denser-{slug(label)}-seed{seed}.npz")
    if os.path.exists(path):
        gen = ksdp.load_generator(path)
    else:
        res = T.train(jax.random.key(100 + seed), targets, values, mc, tc, n_steps=n_steps, progress=print)
        gen = res.generator.with_metadata(variant=f"denser: {label}", seed=seed, added=extra)
        gen.save(path)
    between = sorted(BETWEEN)
    b_runs = _between_runs(exp, scale, folder, between)
    others = np.concatenate([parts, ref])
    cases = [(v, others[:, i], value_kind(exp, scale, v)) for i, v in enumerate(exp.all_values(scale))]
    cases += [(v, b_runs[:, i], "between") for i, v in enumerate(between)]
    rows = []
    for i, (v, against, kind) in enumerate(cases):
        _, scores = judged(gen, i, v, sc.n_generated, against)
        check = scores["structure"]
        kind = "train" if float(v) in values else kind
        row = {"experiment": name, "variant": f"denser: {label}", "added": extra, "seed": seed, "eta": float(v)}
        rows.append({**row, "kind": kind, **scores})
        print(
            f"structure-denser {kind:>12} {v:g}: z {check['z']:5.1f} (chi2/df {check['dp']:.3f} vs "
            f"{check['ipm']:.3f}), m2 err {scores['m2_rel_error']:.3f}",
            flush=True,
        )
    return rows


# draws of a network's points at a held-out value in `structure_interpolants`: the check's z over 6 pairs
# follows a Student t with 5 degrees of freedom, so one draw says little about a small excess
INTERPOLANT_DRAWS = 4


def structure_interpolants(out="ksdp-runs", variants=None, seeds=(0, 1, 2, 3), name="kolmogorov3d-amplitude",
                           scale="quick"):  # fmt: skip
    """Whether a held-out law can be had from the laws at the two training values around it: interpolants
    of the IPM's own laws, and of the kept networks' maps, judged by the structure check against the
    held-out value's independent runs.

    The IPM's interpolants use the pool runs at the two neighbours: each neighbour's own law (how far
    the law moves between them), their even mixture, and McCann's displacement interpolant (pool run
    ``k`` at the lower value matched to run ``k`` at the upper one by `ksdp.w2`, each point moved the
    fraction ``s`` of the way to its partner: ``s`` the held-out value's place in the network's log10
    coordinate, and the ``s`` that gives the held-out runs' m2). Each cloud is sampled point by point
    from all the pool's runs, so a piece of ``J`` points carries a run's sampling noise, not the smaller
    noise of a midpoint of two clouds. A network is judged at the held-out value on `INTERPOLANT_DRAWS`
    draws of its points (the spread of ``z`` between draws of one map), and so is the average of its
    maps at the two neighbours from the same sources (``(1 - s) f(x, lo) + s f(x, hi)``: the displacement
    interpolant of its own two laws from the common source).
    """
    exp = EXPERIMENTS[name]
    folder = os.path.join(out, scale, name)
    sc = DATA.scale_of(exp, scale)
    parts, pool, ref = independent_runs(exp, scale, folder)
    others = np.concatenate([parts, ref])
    train_v = [float(v) for v in exp.values(scale)[0]]
    values = [float(v) for v in exp.all_values(scale)]
    pieces = others.shape[0] // 2  # the check's pairs of runs
    n = pieces * sc.n_particles
    m2 = lambda x: float(np.mean(np.sum(np.asarray(x, np.float64) ** 2, -1)))  # noqa: E731
    nets = {}
    for label in variants or list(VARIANTS):
        for seed in seeds:
            path = os.path.join(out, "ablations", "structure", scale, name, f"{slug(label)}-seed{seed}.npz")
            if os.path.exists(path):
                nets[(label, seed)] = ksdp.load_generator(path)
    rows = []
    for h_i, held in enumerate(float(v) for v in exp.values(scale)[1]):
        lo, hi = max(v for v in train_v if v < held), min(v for v in train_v if v > held)
        a, b = pool[:, train_v.index(lo)], pool[:, train_v.index(hi)]  # [runs, J, d]
        runs = others[:, values.index(held)]
        m2_h = float(np.mean([m2(r) for r in runs]))
        log_s = (math.log10(held) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        # the lower pool and each of its points' optimal partners at the upper value (s = 0 and s = 1)
        ends, _ = RUN.displacement_sets(np.stack([a, b]), [lo, hi], (0.0, 1.0), log=exp.log_eta)
        xa, xb = ends.astype(np.float64)
        # the geodesic's m2 is quadratic in s: (1 - s)^2 m2(lo) + s^2 m2(hi) + 2 s (1 - s) <x, T x>
        cross = float(np.mean(np.sum(xa * xb, -1)))
        q = [m2(xa) + m2(xb) - 2 * cross, 2 * (cross - m2(xa)), m2(xa) - m2_h]
        roots = [float(r.real) for r in np.roots(q) if abs(r.imag) < 1e-12 and 0 <= r.real <= 1]
        rng = np.random.default_rng(h_i)
        pick = rng.choice(len(xa), n, replace=False)
        side = rng.random(n) < 0.5
        xb_runs = np.concatenate(b).astype(np.float64)  # the upper pool in its own order
        clouds = {
            "IPM at the lower value": xa[pick],
            "IPM at the upper value": xb_runs[pick],
            "IPM mixture of the two": np.where(side[:, None], xa[pick], xb_runs[pick]),
            f"IPM displacement, s = {log_s:.3f}": (1 - log_s) * xa[pick] + log_s * xb[pick],
        }
        if roots:
            clouds[f"IPM displacement, s = {roots[0]:.3f} (m2)"] = (1 - roots[0]) * xa[pick] + roots[0] * xb[pick]
        cases = [(k, None, 0, c) for k, c in clouds.items()]
        for (label, seed), gen in nets.items():
            for draw in range(INTERPOLANT_DRAWS):
                x = ksdp.uniform_ball(jax.random.fold_in(jax.random.key(17 + h_i), draw), n, exp.d)
                cases.append(("network at the held-out value", (label, seed), draw, np.asarray(gen(x, held))))
                if draw == 0:
                    mix = (1 - log_s) * np.asarray(gen(x, lo)) + log_s * np.asarray(gen(x, hi))
                    cases.append((f"network, (1 - s) f(lo) + s f(hi), s = {log_s:.3f}", (label, seed), 0, mix))
        for kind, net, draw, cloud in cases:
            check = KM.structure_pairs(cloud, runs)
            row = {"experiment": name, "scale": scale, "held_out": held, "lower": lo, "upper": hi, "case": kind,
                   "variant": net[0] if net else None, "seed": net[1] if net else None, "draw": draw,
                   "structure": check, "m2": m2(cloud), "m2_ipm": m2_h}  # fmt: skip
            rows.append(row)
            who = f"{net[0]} seed {net[1]} draw {draw}: " if net else ""
            print(
                f"structure-interpolants A = {held:g} ({lo:g}-{hi:g}) {who}{kind}: z {check['z']:5.1f} "
                f"(chi2/df {check['dp']:.3f} vs {check['ipm']:.3f}), m2 {row['m2']:.3f} (IPM {m2_h:.3f})",
                flush=True,
            )
    return rows


def structure_augmented(out="ksdp-runs", variants=None, seeds=(0,), fractions=(1 / 3, 2 / 3),
                        name="kolmogorov3d-amplitude", scale="quick"):  # fmt: skip
    """`structure_ablations`' networks trained on the pool plus `run.displacement_sets` between every two
    training values (at ``fractions`` of the way, never at a held-out value's place), judged at every value
    of the run as `structure_ablations` judges them, and at each held-out value on `INTERPOLANT_DRAWS` draws."""
    exp = EXPERIMENTS[name]
    folder = os.path.join(out, scale, name)
    parts, pool, ref = independent_runs(exp, scale, folder)
    others = np.concatenate([parts, ref])
    sc = DATA.scale_of(exp, scale)
    train_v = [float(v) for v in exp.values(scale)[0]]
    held = [float(v) for v in exp.values(scale)[1]]
    values = exp.all_values(scale)
    by_value = pool.swapaxes(0, 1)  # [values, runs, J, d]
    extra, extra_v = RUN.displacement_sets(by_value, train_v, fractions, log=exp.log_eta)
    targets = np.concatenate([by_value.reshape(len(train_v), -1, exp.d), extra])
    eta = np.asarray(train_v + [float(v) for v in extra_v])
    base_m, base_t = RUN.configs(exp, scale)
    rows = []
    for label in variants or ["recipe"]:
        mc, tc, n_steps = VARIANTS[label](base_m, base_t, sc.n_steps)
        for seed in seeds:
            tag = f"augmented-{'-'.join(f'{s:.2f}' for s in fractions)}-{slug(label)}-seed{seed}.npz"
            path = os.path.join(out, "ablations", "structure", scale, name, tag)
            t0 = time.perf_counter()
            if os.path.exists(path):
                gen = ksdp.load_generator(path)
            else:
                res = T.train(jax.random.key(100 + seed), targets, eta, mc, tc, n_steps=n_steps, progress=print)
                gen = res.generator.with_metadata(variant=f"displacement sets: {label}", seed=seed, added=list(extra_v))
                gen.save(path)
            seconds = time.perf_counter() - t0
            for i, v in enumerate(values):
                fold = ksdp.model.folded_fraction(jax.random.key(3), gen.config, gen.params, float(v), 20000)[0]
                draws = INTERPOLANT_DRAWS if float(v) in held else 1
                for draw in range(draws):
                    _, scores = judged(gen, i + 1000 * draw, v, sc.n_generated, others[:, i])
                    row = {"experiment": name, "variant": f"displacement sets: {label}", "fractions": list(fractions),
                           "seed": seed, "eta": float(v), "kind": value_kind(exp, scale, v), "draw": draw,
                           "train_s": seconds, **scores, "folded": fold}  # fmt: skip
                    rows.append(row)
                    check = scores["structure"]
                    print(
                        f"structure-augmented {label:>34} seed {seed} {row['kind']:>12} {v:g} draw {draw}: "
                        f"z {check['z']:5.1f} (chi2/df {check['dp']:.3f} vs {check['ipm']:.3f}), energy z "
                        f"{row['energy_z']:.1f}, m2 err {row['m2_rel_error']:.3f}, folded {fold:.3f}",
                        flush=True,
                    )
    return rows


# radius shells about a cloud's median point, in the law's units (the 'structure-shells' part)
SHELLS = (0.0, 0.15, 0.3, 0.6, 1.2, 3.0, 10.0)


def shell_shape(points, edges=SHELLS) -> np.ndarray:
    """Per radius shell about the coordinate-wise median of ``points [n, d]``: its mass fraction and its
    aspect (the square root of the largest over the smallest eigenvalue of its points' covariance; NaN
    where it holds fewer than ``d + 1`` points): ``[shells, 2]``."""
    x = np.asarray(points, np.float64)
    r = np.linalg.norm(x - np.median(x, axis=0), axis=1)
    out = np.full((len(edges) - 1, 2), np.nan)
    for s, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        inside = (r >= lo) & (r < hi)
        out[s, 0] = np.mean(inside)
        if inside.sum() > x.shape[1]:
            w = np.linalg.eigvalsh(np.cov(x[inside].T))
            out[s, 1] = math.sqrt(w[-1] / w[0])
    return out


def _shell_z(a, b) -> np.ndarray:
    """z of the mean of ``b [n_b, shells, 2]`` minus that of ``a [n_a, shells, 2]`` (Welch's standard error;
    NaN for a shell either side leaves empty)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        se = np.sqrt(np.nanvar(a, axis=0, ddof=1) / len(a) + np.nanvar(b, axis=0, ddof=1) / len(b))
        return (np.nanmean(b, axis=0) - np.nanmean(a, axis=0)) / se


def _z(z) -> str:
    return "  -  " if z is None else f"{z:+.1f}"


def _finite(x):
    """``x`` as a float, or None where it is not finite (an empty shell): JSON has no NaN."""
    return float(x) if np.isfinite(x) else None


def structure_shells(out="ksdp-runs", names=None) -> list:
    """Where a map's structure departs from the IPM's, by radius: for each finished run under ``out``
    with reference runs, at every value, each radius shell's mass and aspect (`shell_shape`) in pieces of
    ``J`` generated points against the independent IPM runs (as many pieces as runs; those the structure
    check uses), z of the difference of the means; and, as its yardstick, the same z between the two
    halves of the IPM runs (the null: within a few units, of order one)."""
    rows = []
    for scale, name, exp, (metrics_path,) in found(out, names, ("metrics.json",)):
        folder = os.path.dirname(metrics_path)
        parts, pool, ref = independent_runs(exp, scale, folder)
        if ref is None:
            print(f"structure-shells: {scale}/{name} has no reference runs: skipped", flush=True)
            continue
        others = checked_runs(parts, pool, ref)
        n_runs, j = others.shape[0], others.shape[2]
        gen = ksdp.load_generator(os.path.join(folder, "generator.npz"))
        m = CHECKS.load_metrics(os.path.dirname(folder), name)
        key = jax.random.key(12)
        for i, v in enumerate(exp.all_values(scale)):
            x = np.asarray(gen.sample(jax.random.fold_in(key, i), float(v), n_runs * j)).reshape(n_runs, j, exp.d)
            ipm = np.stack([shell_shape(r) for r in others[:, i]])
            dp = np.stack([shell_shape(p) for p in x])
            z, null = _shell_z(ipm, dp), _shell_z(ipm[: n_runs // 2], ipm[n_runs // 2 :])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a shell empty in every cloud: NaN
                aspect_ipm, aspect_dp = np.nanmean(ipm[..., 1], axis=0), np.nanmean(dp[..., 1], axis=0)
            old = next((r for r in m["rows"] if math.isclose(r["eta"], float(v))), None) if m else None
            row = {
                "runs": out,
                "scale": scale,
                "experiment": name,
                "eta": float(v),
                "kind": value_kind(exp, scale, v),
                "ipm_runs": int(n_runs),
                "shells": [
                    {
                        "r": [lo, hi],
                        "mass_ipm": float(np.mean(ipm[:, s, 0])),
                        "mass_z": _finite(z[s, 0]),
                        "aspect_ipm": _finite(aspect_ipm[s]),
                        "aspect_dp": _finite(aspect_dp[s]),
                        "aspect_z": _finite(z[s, 1]),
                        "null_mass_z": _finite(null[s, 0]),
                        "null_aspect_z": _finite(null[s, 1]),
                    }
                    for s, (lo, hi) in enumerate(zip(SHELLS[:-1], SHELLS[1:], strict=True))
                ],
                "structure_z": old["structure"]["z"] if old and "structure" in old else None,
            }
            rows.append(row)
            print(
                f"structure-shells {scale}/{name} {row['kind']:>12} {v:g}: aspect z "
                + " ".join(_z(sh["aspect_z"]) for sh in row["shells"])
                + " | mass z "
                + " ".join(_z(sh["mass_z"]) for sh in row["shells"])
                + (f" | structure z {row['structure_z']:.1f}" if row["structure_z"] is not None else ""),
                flush=True,
            )
    return rows
