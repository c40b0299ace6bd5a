"""The fidelity metrics' calibration (docs/metrics.md): what each check scores when the generated
cloud is replaced by exact samples or independent IPM runs.

* ``energy``: the energy distance's jackknife standard error against the spread of the statistic
  (300 draws of two 1D Gaussian clouds, n = 500, shifts 0, 0.2, 0.5 sd).
* ``c2st``: the C2ST check under the null, IPM runs standing in for the generated cloud: the one-pair
  excess's spread, its false alarms, and the check over 1 + k pairs.
* ``pools``: the m2 of each experiment's training pool against its other runs (z), and its radial KS to
  the mean field beside the map's (ks2d-time, ks2d-eps).
* ``ks``: ks2d-time's radial KS check under the null, independent IPM runs standing in for the
  generated cloud (``--ks-runs``, ``--ks-scale``).
* ``sources``: the radial KS of radially stratified against independent generated sources, from the
  finished ks2d-time network.
"""

from __future__ import annotations

import math
import os
import time

import jax
import numpy as np

from benchmarks import _common
from benchmarks.studies.runs import dataset_runs, found
from ksdp import metrics as KM
from ksdp import model as M
from ksdp import training as T
from ksdp.experiments import evaluate as EVAL
from ksdp.experiments import ipm_data as DATA
from ksdp.experiments.checks import KS_UNTIL, load_metrics
from ksdp.experiments.specs import C2ST_SLACK, EXPERIMENTS, KS_POINTS, SCALES


def energy(reps=300, n=500):
    rng = np.random.default_rng(0)
    rows = []
    for shift in (0.0, 0.2, 0.5):
        est = [KM.energy_distance(rng.normal(size=(n, 1)), rng.normal(shift, 1.0, size=(n, 1))) for _ in range(reps)]
        values, ses = np.array([e.value for e in est]), np.array([e.se for e in est])
        spread, rms = float(values.std(ddof=1)), float(np.sqrt(np.mean(ses**2)))
        rows.append(
            {
                "shift": shift,
                "n": n,
                "draws": reps,
                "mean": float(values.mean()),
                "spread": spread,
                "rms_se": rms,
                "rms_se_over_spread": rms / spread,
            }
        )
        print(
            f"energy shift={shift}: mean {values.mean():.4f}, spread {spread:.5f}, rms SE {rms:.5f} "
            f"({rms / spread:.3f} of the spread)",
            flush=True,
        )
    # the cost the experiments pay at the paper scale: 10^5 generated against 10^4 reference points
    big, ref = rng.normal(size=(100_000, 2)), rng.normal(size=(10_000, 2))
    KM.energy_distance(big[:1000], ref[:1000])  # compile the tiled pass once
    t0 = time.perf_counter()
    KM.energy_distance(big, ref)
    seconds = time.perf_counter() - t0
    print(f"energy 1e5 vs 1e4 points: {seconds:.1f} s on {_common.device_name()}", flush=True)
    return {"calibration": rows, "seconds_1e5_vs_1e4": seconds, "device": _common.device_name()}


KS_NULL_KEY = 99  # the KS null runs' key is fold_in(key(0), KS_NULL_KEY): independent of the experiment's runs


def ks(scale="paper", runs=26, splits=20, out="ksdp-runs"):
    """ks2d-time's radial KS check with independent IPM runs in place of the generated cloud.

    The check asks, up to t = 0.075, that the KS distance of ``KS_POINTS`` generated points to the
    blob mean field (`ksdp.reference`) be at most that of the three pooled replicas. Here ``runs``
    more IPM runs of the scale's J (cached) are split ``splits`` times at random into disjoint groups:
    ``KS_POINTS // J`` runs pooled for the generated cloud (what an exact sampler of the IPM's law
    would give), three for the replicas. Per time: the fraction of splits where the check fails, and
    both distances' means; the splits share runs, so the fractions are permutation estimates, not
    independent draws.
    """
    exp = EXPERIMENTS["ks2d-time"]
    values = exp.all_values(scale)
    j = SCALES[scale].n_particles
    n_gen = max(1, KS_POINTS // j)
    if runs < n_gen + len(DATA.REPLICAS):
        raise ValueError(f"runs must be >= {n_gen + len(DATA.REPLICAS)} at scale {scale!r}, got {runs}.")
    path = os.path.join(out, scale, exp.name, "ks-null-runs.npz")
    parts, _ = DATA.more_runs(
        exp, scale, 0, path, print, runs, None, "auto", values, "ks-null", KS_NULL_KEY, "KS null runs"
    )
    parts = np.asarray(parts)  # [runs, values, J, d]
    radial = EVAL.radial_reference(exp, values)
    results = []
    for i, t in enumerate(float(v) for v in values):
        if t > KS_UNTIL + 1e-12:
            continue
        cdf = radial.cdf(int(np.flatnonzero(np.isclose(radial.times, t))[0]))
        gen_ks, rep_ks = [], []
        for s in range(splits):
            order = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(5), 1000 * i + s), runs))
            gen = parts[order[:n_gen], i].reshape(-1, exp.d)
            rep = parts[order[n_gen : n_gen + len(DATA.REPLICAS)], i].reshape(-1, exp.d)
            gen_ks.append(KM.radial_ks(gen, cdf))
            rep_ks.append(KM.radial_ks(rep, cdf))
        fails = float(np.mean(np.greater(gen_ks, rep_ks)))
        row = {
            "scale": scale,
            "t": t,
            "J": j,
            "generated_runs": n_gen,
            "runs": runs,
            "splits": splits,
            "fails": fails,
            "ks_generated_mean": float(np.mean(gen_ks)),
            "ks_replicas_mean": float(np.mean(rep_ks)),
        }
        results.append(row)
        print(
            f"ks {scale} t = {t:g}: {n_gen} runs ({n_gen * j} points) against 3 pooled: fails in {fails:.0%} of "
            f"{splits} splits; mean KS {row['ks_generated_mean']:.4f} against {row['ks_replicas_mean']:.4f}",
            flush=True,
        )
    overall = float(np.mean([r["fails"] for r in results]))
    print(f"ks {scale}: the check fails in {overall:.0%} of the splits over {len(results)} times", flush=True)
    results.append({"scale": scale, "t": "all", "fails": overall})
    return results


SOURCE_DRAWS = 8  # clouds of KS_POINTS per source design and time (the 'sources' part)


def sources(out="ksdp-runs", scale="paper", draws: int = SOURCE_DRAWS):
    """ks2d-time's radial KS check on stratified sources against independent ones, from its finished network.

    At every training and held-out time up to `KS_UNTIL`, ``draws`` clouds of `KS_POINTS` generated
    particles from radially stratified sources (what the experiments' check judges) and ``draws`` from
    independent sources, and one of ``10 * KS_POINTS`` stratified: the radial KS distance of each to the
    blob mean field (`ksdp.reference`). The stratified clouds' spread, and their excess over the larger
    one, show how closely the check measures the learnt law; the independent clouds' spread is the
    sampling luck a check on them carries. The generating parameters are the checkpoint's moving
    average where training kept one, as the experiments generate.
    """
    folder = os.path.join(out, scale, "ks2d-time")
    ck = os.path.join(folder, "checkpoint.npz")
    if not os.path.exists(ck):  # skipped, as the parts that read finished experiments skip what is not there
        print(f"sources: skipped, no {ck}: run `python -m ksdp.experiments ks2d-time --scale {scale}` first")
        return []
    exp = EXPERIMENTS["ks2d-time"]
    state, mc, tc, _, _ = T.load_checkpoint(ck)
    params = state.ema if tc.ema_decay > 0 else state.params
    train_v, held_v, _ = exp.values(scale)
    times = sorted(float(v) for v in [*train_v, *held_v] if v <= KS_UNTIL + 1e-12)
    radial = EVAL.radial_reference(exp, times)
    results = []
    for j, t in enumerate(times):
        cdf = radial.cdf(j)
        ks = {
            src: [
                KM.radial_ks(M.generate(jax.random.key(1000 + s), mc, params, t, KS_POINTS, source=src), cdf)
                for s in range(draws)
            ]
            for src in M.SOURCES
        }
        big = M.generate(jax.random.key(7), mc, params, t, 10 * KS_POINTS, source="stratified")
        row = {
            "scale": scale,
            "experiment": "ks2d-time",
            "step": int(state.step),
            "eta": t,
            "kind": "train" if t in train_v else "held-out",
            "points": KS_POINTS,
            "ks_stratified": ks["stratified"],
            "ks_iid": ks["iid"],
            "ks_stratified_10x": KM.radial_ks(big, cdf),
        }
        results.append(row)
        print(
            f"sources {scale} ks2d-time t = {t:g}: KS of {KS_POINTS} stratified {min(ks['stratified']):.4f}-"
            f"{max(ks['stratified']):.4f} (sd {np.std(ks['stratified'], ddof=1):.5f}), of {10 * KS_POINTS} "
            f"stratified {row['ks_stratified_10x']:.4f}; independent {min(ks['iid']):.4f}-{max(ks['iid']):.4f} "
            f"(sd {np.std(ks['iid'], ddof=1):.4f})",
            flush=True,
        )
    return results


def c2st(out="ksdp-runs", names=None):
    """The C2ST check's excess under the null: independent IPM runs in place of the generated cloud.

    For every experiment under ``<out>/<scale>/`` with a dataset and m2 reference runs, the three
    replicas and the reference runs (``R`` in all) are shuffled at every value and cut into
    ``R // 3`` disjoint triples ``(g, r, f)``; each gives one check's excess ``C2ST(g, r) - C2ST(f, r)``
    at ``n = J``, as the experiments compute it with a perfect generator. Reported per experiment and
    over all, at the training and held-out values (those the acceptance judges; the JSON keeps every
    value's excesses, ``excess_by_value``): the excesses' mean, spread and quantiles, the fraction
    above the scale's slack with its binomial SE, and, from the spread (normal), the false-alarm rate
    of the check over one pair and over the ``1 + k`` pairs the acceptance averages
    (`ksdp.experiments.checks.c2st_check`, ``k`` pairs of reference runs), and the power of each
    against a true excess of +0.05.
    """
    results, every = [], {}
    for scale, name, exp, paths in found(out, names, ("dataset.npz", "reference-runs.npz")):
        runs = np.concatenate([dataset_runs(exp, p) for p in paths])  # [R, V, J, d]: the replicas, the reference runs
        n_runs, n_values = runs.shape[:2]
        t0 = time.perf_counter()
        judged = set(np.concatenate(exp.values(scale)[:2]).tolist())  # training and held-out: the acceptance's
        values = exp.all_values(scale)
        excess, per_value = [], {}
        for i in range(n_values):
            key = jax.random.fold_in(jax.random.key(77), i)
            order = np.asarray(jax.random.permutation(key, n_runs))
            for t in range(n_runs // 3):
                g, r, f = (runs[order[3 * t + j], i] for j in range(3))
                kg, kf = jax.random.split(jax.random.fold_in(key, 1000 + t))
                e = KM.c2st(kg, g, r).value - KM.c2st(kf, f, r).value
                per_value.setdefault(f"{float(values[i]):g}", []).append(e)
                if float(values[i]) in judged:
                    excess.append(e)
        pairs = 1 + (n_runs - len(DATA.REPLICAS)) // 2
        row = {"scale": scale, "experiment": name, "J": int(runs.shape[2]), "values": len(judged)}
        row.update(_null_summary(excess, C2ST_SLACK[scale], pairs))
        row["excess_by_value"] = per_value  # every value, the extrapolated one too (not in the summary)
        row["seconds"] = time.perf_counter() - t0
        results.append(row)
        every.setdefault(scale, []).extend(excess)
        _print_null(f"{scale} {name}", row)
    for scale, excess in every.items():
        pairs = min(r["pairs"] for r in results if r["scale"] == scale)
        row = {"scale": scale, "experiment": "all", **_null_summary(excess, C2ST_SLACK[scale], pairs)}
        results.append(row)
        _print_null(f"{scale} all", row)
    return results


def _null_summary(excess, slack: float, pairs: int, defect: float = 0.05) -> dict:
    """Spread and false alarms of null excesses; the normal rates of the check over 1 and ``pairs`` pairs."""
    e = np.asarray(excess, np.float64)
    n = len(e)
    frac = float(np.mean(e > slack))
    sd = float(np.std(e, ddof=1))

    def tail(z):  # P(Z > z)
        return 0.5 * math.erfc(z / math.sqrt(2))

    return {
        "checks": n,
        "slack": slack,
        "mean": float(e.mean()),
        "quantiles_5_50_95": [float(q) for q in np.quantile(e, [0.05, 0.5, 0.95])],
        "mean_se": sd / math.sqrt(n),
        "sd": sd,
        "above_slack": frac,
        "above_slack_se": math.sqrt(max(frac * (1 - frac), 1.0 / n) / n),
        "pairs": pairs,
        "false_alarm_one_pair": tail(slack / sd),
        "false_alarm_pooled": tail(slack * math.sqrt(pairs) / sd),
        "defect": defect,
        "power_one_pair": tail((slack - defect) / sd),
        "power_pooled": tail((slack - defect) * math.sqrt(pairs) / sd),
    }


def _print_null(label: str, row: dict) -> None:
    print(
        f"c2st {label}: {row['checks']} null checks, excess {row['mean']:+.4f} +- {row['mean_se']:.4f}, "
        f"sd {row['sd']:.4f}; above +{row['slack']:g}: {row['above_slack']:.3f} +- {row['above_slack_se']:.3f} "
        f"(normal: {row['false_alarm_one_pair']:.4f} for one pair, {row['false_alarm_pooled']:.2e} over "
        f"{row['pairs']}); power against +{row['defect']:g}: {row['power_one_pair']:.3f} one pair, "
        f"{row['power_pooled']:.3f} over {row['pairs']}",
        flush=True,
    )


def pools(out="ksdp-runs", names=None):
    """How far each training pool's m2 lies from that of the other IPM runs, in standard errors; and, for
    an experiment with a radial reference (ks2d-time, ks2d-eps), the pool's radial KS distance to it.

    For every experiment under ``<out>/<scale>/`` with a dataset, a training pool and m2 reference
    runs, at every training value: the mean m2 of the pool's runs and of the replicas with the
    reference runs, each with its SE from the spread of its runs (`ksdp.metrics.run_spread`), the
    pool's relative offset and z. Every experiment draws its runs from the same seed's keys, so two
    experiments of the same dimension and J share initial points and noise: their pools' luck is alike.
    The radial KS of the pool's runs pooled (where it is reached, `ksdp.metrics.radial_ks_where`) stands
    beside the finished map's and the IPM's of the run's ``metrics.json``: how far the data the map learnt
    from lies from the mean field (single runs' radial CDFs move together, so a pool of ten can lie
    farther from it than its points suggest), against how far the map lies.
    """

    def m2(runs):
        return KM.run_spread([KM.moments(x)["m2"] for x in runs])

    results = []
    for scale, name, exp, paths in found(out, names, ("dataset.npz", "pool.npz", "reference-runs.npz")):
        reps, pool, more = (dataset_runs(exp, p) for p in paths)
        values = [float(v) for v in exp.all_values(scale)]
        train = [float(v) for v in exp.values(scale)[0]]
        radial = EVAL.radial_reference(exp, train)
        run = load_metrics(os.path.join(out, scale), name) or {}
        seed = run.get("settings", {}).get("seed")
        for j, v in enumerate(train):
            i = values.index(v)
            p, o = m2(pool[:, j]), m2(np.concatenate([reps[:, i], more[:, i]]))
            row = {
                "scale": scale,
                "experiment": name,
                "seed": seed,
                "eta": v,
                "pool_runs": int(pool.shape[0]),
                "other_runs": int(reps.shape[0] + more.shape[0]),
                "m2_pool": [p["mean"], p["se"]],
                "m2_other": [o["mean"], o["se"]],
                "relative": p["mean"] / o["mean"] - 1,
                "z": (p["mean"] - o["mean"]) / math.hypot(p["se"], o["se"]),
            }
            ks = ""
            if radial is not None:
                cloud = pool[:, j].reshape(-1, exp.d).astype(np.float64)
                row["ks_pool"], _, row["ks_pool_level"] = KM.radial_ks_where(cloud, radial.cdf(j))
                done = next((r for r in run.get("rows", []) if math.isclose(r["eta"], v)), {})
                row.update({k: done[k] for k in ("ks_dp", "ks_dp_level", "ks_ipm", "ks_ref_runs") if k in done})
                ks = f"; radial KS pool {row['ks_pool']:.4f} at F = {row['ks_pool_level']:.2f}" + (
                    f", map {row['ks_dp']:.4f}, IPM {row['ks_ipm']:.4f}" if "ks_dp" in row else ""
                )
            results.append(row)
            print(
                f"pools {scale} {name} (seed {seed}) {exp.eta} = {v:g}: m2 pool {p['mean']:.4f} +- {p['se']:.4f}, "
                f"other runs {o['mean']:.4f} +- {o['se']:.4f} ({row['relative']:+.2%}, z = {row['z']:+.1f}){ks}",
                flush=True,
            )
    return results
