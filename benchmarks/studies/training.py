"""Training (docs/training.md).

* ``residual``: the residual network ``x + MLP`` against the paper's plain MLP on the learnable family
  of the tests (anisotropic Gaussians, 5 training values): held-out W2 / floor.
* ``training``: training schedules (`benchmarks.studies.schedules`) at the quick scale by default:
  the final loss against its floor, C2ST excess, energy z, m2 and folds at every training and
  held-out value (``--experiments``, ``--schedules``, ``--scale``).
* ``tails``, ``matching``: from the finished experiments under ``ksdp-runs/<scale>/``: how far the
  generated particles reach against the IPM's; the matched cost of fresh mini-batches against the
  optimal one and the loss floor.
* ``shrink``: kolmogorov3d-amplitude's network trained with N and the radial term changed, three
  seeds each: the generated m2 against its pool's.
* ``anisotropy``: ks2d-time trained with N = 1000 and 2000, three seeds each: the core anisotropy.
"""

from __future__ import annotations

import datetime
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common
from benchmarks.studies.runs import dataset_runs, finished, slug, tail_stats
from benchmarks.studies.schedules import MORE_SCHEDULES, SCHEDULES, build
from ksdp import metrics as KM
from ksdp import model as M
from ksdp import training as T
from ksdp import transport as TR
from ksdp import wasserstein as W
from ksdp.experiments import checks as CHECKS
from ksdp.experiments import evaluate as EVAL
from ksdp.experiments import ipm_data as DATA
from ksdp.experiments import run as RUN
from ksdp.experiments.checks import KS_UNTIL
from ksdp.experiments.specs import ANISOTROPY_INNER, EXPERIMENTS, FOLD_POINTS, KS_POINTS, SCALES
from ksdp.initial import uniform_ball


def _target(key, eta, n):
    return jax.random.normal(key, (n, 2)) * jnp.array([0.2 + 0.3 * eta, 0.3 - 0.1 * eta]) + jnp.array([0.5 * eta, 0.0])


def residual():
    etas = jnp.linspace(0.0, 1.0, 5)
    targets = jnp.stack([_target(jax.random.key(i), e, 2000) for i, e in enumerate(etas)])
    cfg = T.TrainConfig.paper(
        n_samples=500, resample_every=500, renew_every=50, sweeps=4, initial_sweeps=20, block=16, learning_rate=3e-3
    )
    rows = []
    for residual_net in (True, False):
        mc = M.make_config(2, etas, width=30, depth=3, residual=residual_net)
        res = T.train(jax.random.key(0), targets, etas, mc, cfg, n_steps=5000, progress=False)
        for eta in (0.375, 0.625):
            w, floor = [], []
            for r in range(4):
                ref = _target(jax.random.key(100 + r), eta, 500)
                gen = M.generate(jax.random.key(5 + r), mc, res.params, eta, 500)
                w.append(float(W.w2(gen, ref, exact_max=512)[0]))
                floor.append(float(W.w2(_target(jax.random.key(200 + r), eta, 500), ref, exact_max=512)[0]))
            ratio = float(np.mean(w) / np.mean(floor))
            name = "residual x + MLP" if residual_net else "plain MLP (paper)"
            rows.append(
                {"network": name, "eta": eta, "w2": float(np.mean(w)), "floor": float(np.mean(floor)), "ratio": ratio}
            )
            print(f"residual {name:>18} eta={eta}: held-out W2/floor {ratio:.2f}", flush=True)
    return rows


TRAINING_EXPERIMENTS = ("ks2d-time", "laminar2d-amplitude")


# draws of n_generated points for the training rows' second moment (`m2_dp_large`: rows written since 67f20e8)
LARGE_DRAWS = 10


def training(names=TRAINING_EXPERIMENTS, scale="quick", out="ksdp-runs", schedules=None):
    sc = SCALES[scale]
    results = []
    for name in names:
        exp = EXPERIMENTS[name]
        folder = os.path.join(out, scale, name)
        ds = DATA.simulate_dataset(exp, scale, 0, os.path.join(folder, "dataset.npz"), print)
        parts = DATA.particles_by_value(exp, ds)
        values = exp.all_values(scale)
        train_v, held_v, _ = exp.values(scale)
        idx = {float(v): i for i, v in enumerate(values)}
        train_idx = [idx[float(v)] for v in train_v]
        radial = EVAL.radial_reference(exp, values)  # ks2d-time: the radial KS against the mean field
        # each schedule changes the paper's schedule at this scale's sizes (schedules.baseline)
        exp_model, exp_train = RUN.configs(exp, scale)
        for label in schedules or list(SCHEDULES):
            plan = build({**SCHEDULES, **MORE_SCHEDULES}[label], exp_model, exp_train, sc.n_steps)
            model_cfg, tc, n_steps = plan.model, plan.train, plan.n_steps
            targets = parts[0, train_idx]
            if plan.pool:
                runs = DATA.pool_runs(exp, scale)
                if runs is None:
                    raise ValueError(f"{exp.name} has no training pool at the {scale} scale (Scale.pool_runs = 1).")
                pool_path = os.path.join(folder, "pool.npz")
                targets = DATA.simulate_pool(exp, scale, 0, pool_path, print, runs)[0]
            floor_loss = EVAL.loss_floor(jax.random.key(3), targets, tc.n_samples)  # of this schedule's N
            t0 = time.perf_counter()
            res = T.train(jax.random.key(1), targets, train_v, model_cfg, tc, n_steps=n_steps, progress=False)
            seconds = time.perf_counter() - t0
            # the trained network, for measurements after the fact (T.load_checkpoint)
            kept = os.path.join(out, "ablations", scale, name, slug(label) + ".npz")
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            T.save_checkpoint(kept, res.state, model_cfg, tc, res.history, {"schedule": label})
            rows = []
            for v in values:
                if v not in held_v and v not in train_v:
                    continue
                i = idx[float(v)]
                gen = M.generate(jax.random.key(11), model_cfg, res.params, v, sc.n_generated)
                cmp = KM.compare(jax.random.key(12), gen, np.asarray(parts[1, i]), np.asarray(parts[2, i]))
                ipm = KM.moments(np.asarray(parts[:, i]).reshape(-1, exp.d))
                row = {
                    "eta": float(v),
                    "kind": "held-out" if v in held_v else "train",
                    "energy": cmp["energy"],
                    "floor_energy": cmp["floor_energy"],
                    "c2st": cmp["c2st"],
                    "floor_c2st": cmp["floor_c2st"],
                    "m2_ipm": ipm["m2"],
                    "m2_ipm_se": ipm["m2_se"],
                    "m2_dp": cmp["moments"]["m2"],
                    "m2_dp_se": cmp["moments"]["m2_se"],
                }
                # m2 of LARGE_DRAWS more draws of n_generated (their own keys): the one draw above is the same
                # source sample for every schedule and value, whose luck moves all its m2 together
                big = [
                    KM.moments(
                        M.generate(jax.random.fold_in(jax.random.key(11), q), model_cfg, res.params, v, sc.n_generated)
                    )["m2"]
                    for q in range(1, LARGE_DRAWS + 1)
                ]
                row["m2_dp_large"] = float(np.mean(big))
                row["m2_dp_large_se"] = float(np.std(big, ddof=1) / np.sqrt(LARGE_DRAWS))
                if v in train_v:  # the law the network was fitted to: its training particles at this value
                    row["m2_train"] = float(np.mean(np.sum(np.asarray(targets[list(train_v).index(v)]) ** 2, -1)))
                    row["m2_dp_vs_train"] = row["m2_dp"] / row["m2_train"] - 1
                    row["m2_dp_large_vs_train"] = row["m2_dp_large"] / row["m2_train"] - 1
                row.update(tail_stats(np.asarray(parts[:, i]).reshape(-1, exp.d), gen))
                row["folded"] = list(M.folded_fraction(jax.random.key(13), model_cfg, res.params, v, FOLD_POINTS))
                if radial is not None:  # as the experiment reports it: generated, pooled replicas
                    cdf = radial.cdf(int(np.flatnonzero(np.isclose(radial.times, v))[0]))
                    row["ks_dp"], row["ks_dp_signed"], row["ks_dp_level"] = KM.radial_ks_where(gen, cdf)
                    row["ks_ipm"] = KM.radial_ks_where(np.asarray(parts[:, i]).reshape(-1, exp.d), cdf)[0]
                    # as the experiments check it: KS_POINTS generated points, a draw of
                    # its own (the draw above is the same source sample at every time and in every row)
                    many = M.generate(jax.random.fold_in(jax.random.key(11), 1000), model_cfg, res.params, v, KS_POINTS)
                    row["ks_dp_large"], row["ks_dp_large_signed"], row["ks_dp_large_level"] = KM.radial_ks_where(
                        many, cdf
                    )
                if tc.ema_decay > 0:  # the last iterate instead of the moving average
                    last = M.generate(jax.random.key(11), model_cfg, res.state.params, v, sc.n_generated)
                    row["m2_dp_last_iterate"] = float(np.mean(np.sum(np.asarray(last) ** 2, -1)))
                row["m2_rel_error"] = abs(row["m2_dp"] - row["m2_ipm"]) / row["m2_ipm"]
                row.update(CHECKS.judge(row, scale, exp.judged_values(scale)))
                rows.append(row)
            final = T.final_loss(res.history, tc.resample_every)
            fresh = T.fresh_batch_loss(res.history, tc.resample_every)
            loss_z = EVAL.memorisation_z(final, floor_loss)
            summary = {
                "experiment": name,
                "scale": scale,
                "schedule": label,
                "n_steps": n_steps,
                "train_config": tc._asdict(),
                "model_config": model_cfg.to_dict(),
                "training_particles": int(targets.shape[1]),
                "train_s": seconds,
                "final_loss": final.value,  # the mean of the last 20 mini-batches (older rows:
                "final_loss_se": final.se,  # of the last 100 steps, the floor from one pair per set)
                "final_loss_last_100_steps": float(np.mean(res.history[-100:])),
                "batch_mean_loss": [round(float(v), 7) for v in T.batch_means(res.history, tc.resample_every)],
                "fresh_batch_loss": fresh,
                "loss_floor": floor_loss.value,
                "loss_floor_se": floor_loss.se,
                "loss_z": loss_z,
                "held_out_max_c2st_excess": max(r["c2st_excess"] for r in rows if r["kind"] == "held-out"),
                "held_out_max_energy_z": max(r["energy_z"] for r in rows if r["kind"] == "held-out"),
                "train_max_c2st_excess": max(r["c2st_excess"] for r in rows if r["kind"] == "train"),
                "train_max_energy_z": max(r["energy_z"] for r in rows if r["kind"] == "train"),
                "max_m2_rel_error": max(r["m2_rel_error"] for r in rows),
                "folded_range": [min(r["folded"][0] for r in rows), max(r["folded"][0] for r in rows)],
                "max_beyond": max(r["beyond"] for r in rows),
                "max_r_ratio": max(r["r_max_dp"] / r["r_max_ipm"] for r in rows),
                "m2_vs_train_range": [
                    min(r["m2_dp_vs_train"] for r in rows if "m2_dp_vs_train" in r),
                    max(r["m2_dp_vs_train"] for r in rows if "m2_dp_vs_train" in r),
                ],
                "m2_large_vs_train_range": [
                    min(r["m2_dp_large_vs_train"] for r in rows if "m2_dp_large_vs_train" in r),
                    max(r["m2_dp_large_vs_train"] for r in rows if "m2_dp_large_vs_train" in r),
                ],
                "values_passing": f"{sum(r['c2st_ok'] and r['energy_ok'] and r['m2_ok'] for r in rows)}/{len(rows)}",
                "folded_max": max(r["folded"][0] for r in rows),
                "rows": rows,
                "date": datetime.date.today().isoformat(),
                "command": _common.command(),  # a merged file keeps rows of earlier commands
            }
            ks_rows = [r for r in rows if "ks_dp" in r and r["eta"] <= KS_UNTIL + 1e-12]
            if ks_rows:  # the acceptance's radial KS: generated no farther from the mean field than the IPM
                summary["ks_passing"] = f"{sum(r['ks_dp'] <= r['ks_ipm'] for r in ks_rows)}/{len(ks_rows)}"
                summary["ks_dp_range"] = [min(r["ks_dp"] for r in ks_rows), max(r["ks_dp"] for r in ks_rows)]
                summary["ks_passing_large"] = f"{sum(r['ks_dp_large'] <= r['ks_ipm'] for r in ks_rows)}/{len(ks_rows)}"
                summary["ks_dp_large_range"] = [
                    min(r["ks_dp_large"] for r in ks_rows),
                    max(r["ks_dp_large"] for r in ks_rows),
                ]
            results.append(summary)
            print(
                f"training {name} ({scale}) {label:>22}: {seconds:.0f} s, loss {final.value:.4g} +- {final.se:.2g}, "
                f"fresh-batch {fresh:.4g} (floor {floor_loss.value:.4g} +- {floor_loss.se:.2g}, z {loss_z:.1f}), "
                f"held-out C2ST excess {summary['held_out_max_c2st_excess']:+.3f} "
                f"z {summary['held_out_max_energy_z']:.1f}, "
                f"train C2ST excess {summary['train_max_c2st_excess']:+.3f} z {summary['train_max_energy_z']:.1f}, "
                f"m2 err {summary['max_m2_rel_error']:.3f}, folded {summary['folded_range'][0]:.3f} to "
                f"{summary['folded_range'][1]:.3f}, m2 vs training data "
                f"{summary['m2_vs_train_range'][0]:+.3f} to {summary['m2_vs_train_range'][1]:+.3f} "
                f"({LARGE_DRAWS}x the points: {summary['m2_large_vs_train_range'][0]:+.3f} to "
                f"{summary['m2_large_vs_train_range'][1]:+.3f}), "
                f"beyond the IPM {summary['max_beyond']:.1e}, r max / IPM's {summary['max_r_ratio']:.2f}, "
                f"passing {summary['values_passing']}"
                + (
                    f", radial KS {summary['ks_passing']} ({KS_POINTS} points: {summary['ks_passing_large']})"
                    if "ks_passing" in summary
                    else ""
                ),
                flush=True,
            )
    return results


def tails(out="ksdp-runs", names=None):
    """How far the generated particles reach against the IPM's, from each finished experiment found.

    For every experiment under ``<out>/<scale>/`` with a dataset and a training checkpoint (as
    ``python -m ksdp.experiments`` leaves them), at every parameter value: J particles generated
    with the checkpoint's generating parameters (the moving average where training kept one)
    against the three pooled IPM replicas (3J particles). ``beyond``: the fraction of generated
    particles farther from the replicas' centre than the farthest IPM particle; a fresh draw of the
    IPM's law lands there with probability 1 / (3J + 1). Also the largest radius of each and m2.
    """
    results = []
    for scale, name, exp, state, mc, _tc, params, parts in finished(out, names):
        train_v, held_v, _ = exp.values(scale)
        n = parts.shape[2]
        for i, v in enumerate(exp.all_values(scale)):
            ipm = np.asarray(parts[:, i]).reshape(-1, exp.d)
            gen = np.asarray(M.generate(jax.random.key(21), mc, params, v, n))
            kind = "train" if v in train_v else "held-out" if v in held_v else "extrapolated"
            row = {
                "scale": scale,
                "experiment": name,
                "step": int(state.step),
                "eta": float(v),
                "kind": kind,
                "J": int(n),
                **tail_stats(ipm, gen),
                "beyond_expected": 1.0 / (ipm.shape[0] + 1),
                "m2_ipm": float(np.mean(np.sum(ipm**2, -1))),
                "m2_dp": float(np.mean(np.sum(gen**2, -1))),
            }
            results.append(row)
            print(
                f"tails {scale} {name} (step {row['step']}) {kind:>12} {v:>8.4g}: r max DP {row['r_max_dp']:.3g} "
                f"(IPM {row['r_max_ipm']:.3g}), beyond the IPM's {row['beyond']:.2e} "
                f"(expected {row['beyond_expected']:.1e}), m2 DP {row['m2_dp']:.4g} (IPM {row['m2_ipm']:.4g})",
                flush=True,
            )
    return results


def matching(out="ksdp-runs", names=None, repeats: int = 5):
    """The training's matched cost on fresh mini-batches against the optimum and the loss floor.

    For every finished experiment under ``<out>/<scale>/`` (dataset and checkpoint), at every
    training value, ``repeats`` fresh mini-batches as training draws them (``N`` uniform sources
    through the checkpoint's generating parameters, ``N`` of the value's training particles): the
    matched cost after the training's initial block sweeps from the identity (what the first step of
    a mini-batch sees, `ksdp.training.fresh_batch_loss`), the optimal matched cost (the auction,
    certified within 1e-4), and the loss floor (two disjoint ``N``-samples of the training particles).
    The training replica stands in for the training pool where the scale has one.
    """
    results = []
    for scale, name, exp, state, mc, tc, params, parts in finished(out, names):
        values = list(exp.all_values(scale))
        train_v = exp.values(scale)[0]
        n = tc.n_samples
        refine = jax.jit(lambda k, a, b: TR.refine(k, a, b, TR.identity(a), n_sweeps=tc.initial_sweeps, block=tc.block))
        costs = []  # [value, repeat, (block, exact, floor)]
        for r, v in enumerate(train_v):
            y_all = np.asarray(parts[0, values.index(v)])
            per = []
            for q in range(repeats):
                k_x, k_y, k_m, k_w = jax.random.split(jax.random.fold_in(jax.random.key(31 + r), q), 4)
                x = uniform_ball(k_x, n, exp.d)
                fx = M.apply(mc, params, x, jnp.asarray([v]))
                idx = np.asarray(jax.random.permutation(k_y, len(y_all)))
                y, y2 = jnp.asarray(y_all[idx[:n]]), jnp.asarray(y_all[idx[n : 2 * n]])
                block = float(refine(k_m, fx, y)[1][-1])
                exact = float(W.w2(fx, y, key=k_w).w2) ** 2
                floor = float(W.w2(y2, y, key=k_w).w2) ** 2
                per.append((block, exact, floor))
            costs.append(per)
        c = np.asarray(costs)
        mean, se = np.asarray([KM.stratified_mean(c[..., j]) for j in range(3)]).T  # over values and repeats
        row = {
            "scale": scale,
            "experiment": name,
            "step": int(state.step),
            "N": int(n),
            "initial_sweeps": int(tc.initial_sweeps),
            "repeats": repeats,
            "block_cost": [float(mean[0]), float(se[0])],
            "exact_cost": [float(mean[1]), float(se[1])],
            "floor": [float(mean[2]), float(se[2])],
            "block_over_exact": float(np.mean(c[..., 0] / c[..., 1])),
            "exact_over_floor": float(mean[1] / mean[2]),
        }
        results.append(row)
        print(
            f"matching {scale} {name} (step {row['step']}, N = {n}, {tc.initial_sweeps} sweeps): "
            f"block {mean[0]:.4g} +- {se[0]:.2g}, exact {mean[1]:.4g} +- {se[1]:.2g}, "
            f"floor {mean[2]:.4g} +- {se[2]:.2g}; block / exact {row['block_over_exact']:.3f}, "
            f"exact / floor {row['exact_over_floor']:.3f}",
            flush=True,
        )
    return results


# the shrink part's variants: the experiment's TrainConfig with these settings instead of its own
SHRINK_VARIANTS = {
    "N = 1000": {"n_samples": 1000, "radial_weight": 0.0},
    "N = 1000, radial 4": {"n_samples": 1000, "radial_weight": 4.0},
    "N = 2000": {"n_samples": 2000, "radial_weight": 0.0},
    "N = 2000, radial 4": {"n_samples": 2000, "radial_weight": 4.0},
}


def shrink(names=("kolmogorov3d-amplitude",), scale="quick", seeds=3, n_generated=100_000, out="ksdp-runs"):
    """The generated m2 against the m2 of the data the network trained on, per training value.

    For each experiment (its training pool as ``python -m ksdp.experiments`` simulates it, cached) and
    each of `SHRINK_VARIANTS` (the mini-batch's N, the radial term; the rest of the experiment's
    schedule at ``scale``), ``seeds`` trainings with independent keys; at every training value
    ``m2(generated) / m2(pool) - 1`` from ``n_generated`` points (the generated cloud's SE about
    0.3-0.6% of m2 at 10^5 points, from its own spread). What the seeds share is the data, so the
    spread over seeds is the training's alone; what the variants share is the data and the keys.
    """
    results = []
    for name in names:
        exp = EXPERIMENTS[name]
        folder = os.path.join(out, scale, name)
        n_runs = DATA.pool_runs(exp, scale)
        if n_runs is None:
            raise ValueError(f"{name} has no training pool at the {scale} scale: the shrink part compares with one.")
        targets, _ = DATA.simulate_pool(exp, scale, 0, os.path.join(folder, "pool.npz"), print, n_runs)
        train_v = exp.values(scale)[0]
        m2_pool = [KM.moments(t) for t in targets]
        mc, tc = RUN.configs(exp, scale)
        n_steps = DATA.scale_of(exp, scale).n_steps
        for label, change in SHRINK_VARIANTS.items():
            cfg = tc._replace(**change)
            rows = []
            for seed in range(seeds):
                t0 = time.perf_counter()
                res = T.train(jax.random.key(seed + 1), targets, train_v, mc, cfg, n_steps=n_steps, progress=False)
                rel = []
                for j, v in enumerate(train_v):
                    gen = KM.moments(np.asarray(M.generate(jax.random.key(1000 + j), mc, res.params, v, n_generated)))
                    rel.append(
                        [
                            gen["m2"] / m2_pool[j]["m2"] - 1,
                            math.hypot(gen["m2_se"], m2_pool[j]["m2_se"]) / m2_pool[j]["m2"],
                        ]
                    )
                row = {
                    "scale": scale,
                    "experiment": name,
                    "variant": label,
                    "settings": change,
                    "seed": seed,
                    "pool_runs": n_runs,
                    "eta": [float(v) for v in train_v],
                    "relative": rel,
                    "final_loss": T.final_loss(res.history, cfg.resample_every).value,
                    "train_s": time.perf_counter() - t0,
                }
                rows.append(row)
                print(
                    f"shrink {scale} {name} {label}, seed {seed}: m2 generated / pool - 1 = "
                    + " ".join(f"{r:+.4f}" for r, _ in rel)
                    + f" (+- {max(se for _, se in rel):.4f}); final loss {row['final_loss']:.4f}; "
                    + f"{row['train_s']:.0f} s",
                    flush=True,
                )
            results.extend(rows)
            mean = np.mean([[x for x, _ in r["relative"]] for r in rows], axis=0)
            print(
                f"shrink {scale} {name} {label}: mean over {len(rows)} seeds "
                + " ".join(f"{x:+.4f}" for x in mean)
                + f"; mean |.| {np.mean(np.abs(mean)):.4f}",
                flush=True,
            )
    return results


ANISOTROPY_N = (1000, 2000)  # the mini-batch sizes of the 'anisotropy' part


def anisotropy(out="ksdp-runs", scale="quick", seeds=3, n_generated=100_000):
    """ks2d-time's core anisotropy against the mini-batch size N, over seeds.

    Its network trained on its training pool (as ``python -m ksdp.experiments`` simulates it, cached)
    with each N of `ANISOTROPY_N` and the rest of the experiment's schedule at ``scale``, ``seeds``
    trainings each (keys ``seed + 1``, the experiment's own for seed 0); at every training and held-out
    time the anisotropy of ``n_generated`` generated particles' inner half against the IPM runs'
    (the replicas and the m2 reference runs), as the experiments' report computes it
    (`ksdp.metrics.anisotropy_z`, `specs.ANISOTROPY_INNER`).
    """
    exp = EXPERIMENTS["ks2d-time"]
    folder = os.path.join(out, scale, "ks2d-time")
    ref_path = os.path.join(folder, "reference-runs.npz")
    missing = [p for p in (os.path.join(folder, "dataset.npz"), ref_path) if not os.path.exists(p)]
    if missing:  # skipped, as the parts that read finished experiments skip what is not there
        print(f"anisotropy: skipped, no {missing[0]}: run `python -m ksdp.experiments ks2d-time --scale {scale}` first")
        return []
    targets, _ = DATA.simulate_pool(exp, scale, 0, os.path.join(folder, "pool.npz"), print, DATA.pool_runs(exp, scale))
    parts = dataset_runs(exp, os.path.join(folder, "dataset.npz"))
    runs_all = np.concatenate([parts, dataset_runs(exp, ref_path)])
    values = [float(v) for v in exp.all_values(scale)]
    train_v, held_v, _ = exp.values(scale)
    mc, tc = RUN.configs(exp, scale)
    n_steps = DATA.scale_of(exp, scale).n_steps
    results = []
    for n in ANISOTROPY_N:
        cfg = tc._replace(n_samples=n)
        for seed in range(seeds):
            t0 = time.perf_counter()
            res = T.train(jax.random.key(seed + 1), targets, train_v, mc, cfg, n_steps=n_steps, progress=False)
            train_s = time.perf_counter() - t0
            rows = []
            for t in [*train_v, *held_v]:
                i = values.index(float(t))
                gen = M.generate(jax.random.key(77), mc, res.params, t, n_generated)
                a = KM.anisotropy_z(gen, runs_all[:, i], ANISOTROPY_INNER)
                rows.append({"eta": float(t), **{k: a[k] for k in ("dp", "dp_se", "ipm", "ipm_se", "z", "runs")}})
            rows.sort(key=lambda r: r["eta"])
            results.append(
                {
                    "scale": scale,
                    "experiment": "ks2d-time",
                    "n_samples": n,
                    "seed": seed,
                    "train_s": train_s,
                    "rows": rows,
                }
            )
            worst = max(rows, key=lambda r: r["z"])
            print(
                f"anisotropy {scale} ks2d-time N = {n}, seed {seed}: largest z {worst['z']:.1f} "
                f"at t = {worst['eta']:g} "
                f"({worst['dp']:.3f} against the IPM's {worst['ipm']:.3f}); t = {rows[-1]['eta']:g}: "
                f"{rows[-1]['dp']:.3f} (z {rows[-1]['z']:.1f}); trained in {train_s:.0f} s",
                flush=True,
            )
    return results
