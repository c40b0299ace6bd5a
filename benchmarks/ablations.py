"""The measurements behind the design choices of the method pages (docs/model.md, docs/transport.md,
docs/training.md), each against its alternative.

    python -m benchmarks.ablations [--only kernels slope blocks small residual energy reference training health
                                           tails matching c2st pools ks shrink sources
                                           anisotropy]

* ``kernels``: m2(t) of one run (J = 2000, dt = 1e-4, mu = 1) against the exact line
  m2(0) - (4 - 8/J) t at t = 0.025, 0.05, 0.075, 0.1, for the ``blob`` kernel with delta^2 = 1e-3
  (the experiments' choice) and the paper's kernel (7) with delta^2 = 1e-3 and 1e-2.
* ``slope``: the second-moment slope with mu = 0 (J = 1000, dt = 1e-4, t in [0, 0.02]) against the
  identity -chi M (J - 1) / (2 pi J), for the unregularised kernel and the blob kernel (delta = 0.01).
* ``blocks``: the gap to SciPy's optimum after 200 sweeps from the identity (N = 2000, M = 16),
  2D and 3D, alternating random and spatially local blocks against random blocks only.
* ``small``: 60 random problems with N drawn from [5, 64] (2D and 3D): how often block descent
  alone (a fixed budget of 1000 sweeps, M = 16) ends above SciPy's optimum, and by how much.
* ``residual``: the learnable family of tests/test_training.py (anisotropic Gaussians, 5 training
  values), 5000 Adam steps; held-out W2 / floor at eta = 0.375 and 0.625 for the residual network
  ``x + MLP`` (ksdp's default) and the paper's plain MLP.
* ``energy``: calibration of the energy distance's jackknife standard error (``ksdp.metrics``): 300
  draws of two 1D unit-Gaussian clouds (n = 500) whose means differ by 0, 0.2, 0.5 sd; the
  root-mean-square SE against the spread of the statistic; and the time of one distance between
  10^5 and 10^4 points in 2D (this part is a time, so it depends on the machine).
* ``reference``: the paper's 2D case (mu = chi = 1, M = 16 pi, blob kernel, delta^2 = 1e-3, dt = 1e-4)
  against ``ksdp.reference``: the blow-up time of the unregularised model on three grids; m2 and the
  radial KS distance of the IPM (J = 2000 and 10000 by default, ``--reference-sizes`` for others;
  one run each, the drift as ``ksdp.simulate`` chooses it: the particle mesh from 10^4) against the blob mean field
  (the particle error) and of the blob mean field against the unregularised model (the
  regularisation error), at t = 0.0125 ... 0.1, next to the KS sampling floor ~0.87 / sqrt(J).
* ``training``: the training schedule against memorisation, at the quick scale of ks2d-time and
  laminar2d-amplitude (their datasets as ``python -m ksdp.experiments`` simulates them): the paper's
  schedule (a mini-batch kept for K = 10 L steps), fresh samples at every renewal (K = L), and each
  with an exponential moving average of the parameters and a cosine learning-rate decay. Per
  schedule: the final loss against its floor, and C2ST excess, energy z and m2 error (as the
  experiments report them) at every held-out and training value. Further schedules with
  ``--schedules``: the debiased loss, three times the block sweeps per matching, and training on
  the quick scale's training pool (``Scale.pool_runs`` = 10 more runs of J = 2000) instead of the
  one training replica, and regression onto the sources' coupling to the targets
  (``TrainConfig.match_sources``) instead of the min-min. Every row also reports the fraction of
  the source on which the learnt map folds (`ksdp.model.folded_fraction`).

* ``tails``: for every finished experiment under ``ksdp-runs/<scale>/`` (dataset and checkpoint), how
  far the generated particles reach against the pooled IPM replicas at every value: the largest
  radius of each and the fraction of generated particles beyond the IPM's farthest one (a fresh
  IPM draw: 1 / (3J + 1)); ``--experiments`` picks experiments.
* ``matching``: for every finished experiment under ``ksdp-runs/<scale>/``, 5 fresh mini-batches per
  training value as training draws them: the matched cost after the training's initial block
  sweeps, the optimal matched cost, and the loss floor (two disjoint N-samples of the training
  particles), each with its standard error.

* ``c2st``: the acceptance's C2ST check under the null, for every experiment under
  ``ksdp-runs/<scale>/`` with its replicas and m2 reference runs (dataset.npz, reference-runs.npz):
  at every value, disjoint triples of independent IPM runs stand in for (generated, reference,
  floor), and the one-pair excess C2ST(g, r) - C2ST(f, r) is what a perfect generator would score
  (summarised over the training and held-out values, which the acceptance judges; every value's in the JSON).
  Its spread, the fraction above the scale's slack (a perfect generator's false alarms), and from the
  spread the false-alarm rate and the power against a +0.05 defect of the check over 1 + k pairs
  (`ksdp.experiments.report.c2st_check`).

* ``pools``: for every experiment under ``ksdp-runs/<scale>/`` with a training pool and m2 reference
  runs, at every training value: the m2 of the pool's runs against that of the 13 other runs (the
  replicas and the reference runs), each mean with its SE from the spread of its runs, and z. The
  network learns the pool's law, so the m2 check (against the 13) inherits the pool's luck.

* ``ks``: ks2d-time's radial KS check under the null, at the paper scale by default (``--scale``):
  ``--ks-runs`` independent IPM runs (their own key, cached under ``ksdp-runs/<scale>/ks2d-time/``)
  stand in for the generated cloud (``KS_POINTS / J`` runs pooled: 10^5 points at J = 10^4) and for
  the three pooled replicas, in random disjoint splits; at every time up to 0.075, how often the
  stand-in's KS distance to the blob mean field exceeds the replicas' (the check's failure rate for an
  exact IPM sampler of the generated cloud's size).

* ``shrink``: kolmogorov3d-amplitude at the quick scale (``--experiments`` for others with a training
  pool): its network trained on its pool with the mini-batch's N and the radial term changed
  (`SHRINK_VARIANTS`), three seeds each; at every training value the m2 of 10^5 generated particles
  against the pool's. The spread over seeds is the training's alone (the data are shared).

* ``sources``: ks2d-time's radial KS check, from its finished network at the paper scale (``--ks-scale``):
  at every training and held-out time up to 0.075, 8 clouds of 10^5 generated particles from radially
  stratified sources (``ksdp.model.generate(..., source="stratified")``, what the check judges) and 8
  from independent sources, and one of 10^6 stratified: their radial KS distance to the blob mean
  field. How closely the stratified check measures the learnt law, against the luck of a draw.

* ``anisotropy``: ks2d-time at the quick scale (its pool, replicas and m2 reference runs as ``python -m
  ksdp.experiments`` simulates them, cached), trained with N = 1000 and N = 2000 (the rest of its
  schedule as it is), three seeds each: the core anisotropy of 10^5 generated particles at every
  training and held-out time against the IPM runs' (``ksdp.metrics.anisotropy_z``, as the report).

* ``health``: the health figure of ``ksdp.Trajectory.health`` (dt |chemotactic drift| / delta) on
  every snapshot of every experiment dataset found under ``ksdp-runs/<scale>/`` (as
  ``python -m ksdp.experiments`` leaves them): the margin of ``ksdp.ipm.HEALTH_LIMIT`` = 1 over
  healthy runs at the experiments' parameters.

Quality numbers, not times: they do not depend on the machine. JSON under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import ksdp
from benchmarks import _common
from benchmarks.transport import exact_optimum
from ksdp import metrics as KM
from ksdp import model as M
from ksdp import reference as REF
from ksdp import training as T
from ksdp import transport as TR
from ksdp import wasserstein as W
from ksdp.experiments import evaluate as EVAL
from ksdp.experiments import ipm_data as DATA
from ksdp.experiments import report as REPORT
from ksdp.experiments import run as RUN
from ksdp.experiments.report import KS_UNTIL
from ksdp.experiments.specs import ANISOTROPY_INNER, C2ST_SLACK, EXPERIMENTS, FOLD_POINTS, KS_POINTS, SCALES
from ksdp.initial import uniform_ball

PARTS = (
    "kernels",
    "slope",
    "blocks",
    "small",
    "residual",
    "energy",
    "reference",
    "training",
    "health",
    "tails",
    "matching",
    "c2st",
    "pools",
    "ks",
    "shrink",
    "sources",
    "anisotropy",
)


def kernels():
    n, times = 2000, (0.0, 0.025, 0.05, 0.075, 0.1)
    rows = []
    for kernel, delta2 in (("blob", 1e-3), ("paper", 1e-3), ("paper", 1e-2)):
        traj = ksdp.simulate(
            jax.random.key(0), ksdp.Params(delta=math.sqrt(delta2)), times, n_particles=n, kernel=kernel, check=False
        )
        m2 = np.asarray(ksdp.second_moment(traj.particles), np.float64)
        exact = m2[0] - (4 - 8 / n) * np.asarray(times)
        rel = (m2[1:] / exact[1:] - 1).tolist()
        rows.append(
            {
                "kernel": kernel,
                "delta2": delta2,
                "times": list(times[1:]),
                "m2": m2[1:].tolist(),
                "exact": exact[1:].tolist(),
                "relative_error": rel,
            }
        )
        print(
            f"kernels {kernel:>5} delta^2={delta2:g}: m2 / exact - 1 at t = {times[1:]}: "
            + ", ".join(f"{100 * r:+.1f}%" for r in rel),
            flush=True,
        )
    return rows


def slope():
    n, times = 1000, np.round(np.arange(0, 21) * 1e-3, 6)
    expected = -16 * math.pi * (n - 1) / (2 * math.pi * n)
    rows = []
    for kernel, delta in (("exact", 0.01), ("blob", 0.01)):
        traj = ksdp.simulate(jax.random.key(0), ksdp.Params(mu=0.0, delta=delta), times, n_particles=n, kernel=kernel)
        m2 = np.asarray(ksdp.second_moment(traj.particles), np.float64)
        tc = times - times.mean()
        s = float((m2 - m2.mean()) @ tc / (tc @ tc))
        rows.append(
            {
                "kernel": kernel,
                "delta": delta if kernel != "exact" else None,
                "slope": s,
                "expected": expected,
                "relative_error": s / expected - 1,
            }
        )
        print(f"slope  {kernel:>6}: {s:.4f} vs {expected:.4f} ({100 * (s / expected - 1):+.2f}%)", flush=True)
    return rows


def _random_only(key, x, y, n_sweeps, block):
    def body(p, k):
        return TR.block_sweep(k, x, y, p, False, block=block), None

    return jax.lax.scan(body, TR.identity(x), jax.random.split(key, n_sweeps))[0]


def blocks():
    rows = []
    for d in (2, 3):
        x = jax.random.uniform(jax.random.key(d), (2000, d)) * 2 - 1
        y = jax.random.normal(jax.random.key(d + 10), (2000, d)) * 0.5 + 0.2
        c, opt = exact_optimum(x, y)
        alt = jax.jit(lambda k: TR.refine(k, x, y, TR.identity(x), n_sweeps=200, block=16)[0])(jax.random.key(0))
        rnd = jax.jit(lambda k: _random_only(k, x, y, 200, 16))(jax.random.key(0))
        for name, p in (("random+local", alt), ("random only", rnd)):
            gap = c[np.arange(2000), np.asarray(p)].mean() / opt - 1
            rows.append({"d": d, "blocks": name, "sweeps": 200, "gap": gap})
            print(f"blocks d={d} {name:>12}: {100 * gap:.2f}% above the optimum after 200 sweeps", flush=True)
    return rows


def small():
    misses, gaps, total = 0, [], 0
    for i in range(60):
        d = 2 + i % 2
        n = int(np.random.default_rng(i).integers(5, 65))
        x = jax.random.normal(jax.random.key(1000 + i), (n, d))
        y = jax.random.normal(jax.random.key(2000 + i), (n, d)) * 0.7 + 0.3
        c, opt = exact_optimum(x, y)
        perm = TR.refine(jax.random.key(i), x, y, TR.identity(x), n_sweeps=1000, block=16)[0]
        gap = c[np.arange(n), np.asarray(perm)].mean() / opt - 1
        total += 1
        if gap > 1e-6:
            misses += 1
            gaps.append(gap)
    row = {"problems": total, "missed": misses, "max_gap": max(gaps, default=0.0)}
    print(
        f"small  block descent alone stopped above the optimum in {misses} of {total} problems "
        f"(largest gap {100 * row['max_gap']:.2f}%)",
        flush=True,
    )
    return [row]


def _target(key, eta, n):
    return jax.random.normal(key, (n, 2)) * jnp.array([0.2 + 0.3 * eta, 0.3 - 0.1 * eta]) + jnp.array([0.5 * eta, 0.0])


def residual():
    etas = jnp.linspace(0.0, 1.0, 5)
    targets = jnp.stack([_target(jax.random.key(i), e, 2000) for i, e in enumerate(etas)])
    cfg = T.TrainConfig(
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
                gen = M.generate(mc, res.params, eta, jax.random.key(5 + r), 500)
                w.append(float(W.w2(gen, ref, exact_max=512)[0]))
                floor.append(float(W.w2(_target(jax.random.key(200 + r), eta, 500), ref, exact_max=512)[0]))
            ratio = float(np.mean(w) / np.mean(floor))
            name = "residual x + MLP" if residual_net else "plain MLP (paper)"
            rows.append(
                {"network": name, "eta": eta, "w2": float(np.mean(w)), "floor": float(np.mean(floor)), "ratio": ratio}
            )
            print(f"residual {name:>18} eta={eta}: held-out W2/floor {ratio:.2f}", flush=True)
    return rows


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


def reference(sizes=(2000, 10000)):
    times = (0.0125, 0.025, 0.05, 0.075, 0.0875, 0.1)
    blow = {n: REF.blowup_time(n_grid=n, t_max=0.2) for n in (750, 1500, 3000)}
    print(
        "reference: blow-up time of the unregularised model on 750/1500/3000 cells: "
        + ", ".join(f"{t:.5f}" for t in blow.values()),
        flush=True,
    )
    delta = ksdp.ipm.DEFAULT_DELTA
    blob = REF.solve_radial(times, delta=delta)
    exact = REF.solve_radial(times)  # stops at the blow-up: fewer snapshots
    m2_blob, m2_exact = blob.second_moment(), exact.second_moment()
    rows = []
    for i, t in enumerate(times):
        row = {"t": t, "m2_blob": float(m2_blob[i])}
        if i < len(exact.times):
            # KS between two CDFs: the sup over a fine grid of radii
            r = np.linspace(0, blob.r[-1], 200001)
            row["m2_unregularised"] = float(m2_exact[i])
            row["ks_blob_vs_unregularised"] = float(np.max(np.abs(blob.cdf(i)(r) - exact.cdf(i)(r))))
        rows.append(row)
    drifts = {}
    for n in sizes:
        drifts[n] = ksdp.drifts.resolve_drift("auto", None, n, 2, "blob")[0]  # the particle mesh from J = 10^4
        t0 = time.perf_counter()
        traj = ksdp.simulate(jax.random.key(7), ksdp.Params(delta=delta), times, n_particles=n)
        print(f"reference: IPM J = {n} ({drifts[n]} drift) in {time.perf_counter() - t0:.0f} s", flush=True)
        x = np.asarray(traj.particles, np.float64)
        for i, row in enumerate(rows):
            row[f"m2_ipm_J{n}"] = float(np.mean(np.sum(x[i] ** 2, -1)))
            row[f"ks_ipm_vs_blob_J{n}"] = KM.radial_ks(x[i], blob.cdf(i))
            row[f"ks_floor_J{n}"] = 0.8687 / math.sqrt(n)  # the mean of sqrt(n) KS under the null
    for row in rows:
        print("reference " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    return {
        "blowup_time": {str(k): v for k, v in blow.items()},
        "delta": delta,
        "drift": {str(n): v for n, v in drifts.items()},
        "rows": rows,
    }


SCHEDULES = {
    "paper (K = 10 L)": {},
    "fresh (K = L)": {"resample_every": "renew_every"},
    "paper + EMA + cosine": {"ema_decay": 0.999, "decay_steps": "n_steps"},
    "fresh + EMA": {"resample_every": "renew_every", "ema_decay": 0.999},
    "fresh + EMA + cosine": {"resample_every": "renew_every", "ema_decay": 0.999, "decay_steps": "n_steps"},
}
# the quick scale's schedule (below: "fresh + EMA + cosine + debias, pool, match sources"), which the
# candidates against the cut tail change
_MATCHED = {
    "resample_every": "renew_every",
    "ema_decay": 0.999,
    "decay_steps": "n_steps",
    "debias": True,
    "pool": True,
    "match_sources": True,
}
# further candidates, run with --schedules (they double the cost of the part)
MORE_SCHEDULES = {
    "fresh + EMA + cosine, N = J": {
        "resample_every": "renew_every",
        "ema_decay": 0.999,
        "decay_steps": "n_steps",
        "n_samples": 2000,
    },
    "fresh + EMA + cosine + debias": {
        "resample_every": "renew_every",
        "ema_decay": 0.999,
        "decay_steps": "n_steps",
        "debias": True,
    },
    "fresh + EMA + cosine + debias, K = L = 25": {
        "resample_every": 25,
        "renew_every": 25,
        "ema_decay": 0.999,
        "decay_steps": "n_steps",
        "debias": True,
    },
    # the matching's quality (the assignment issue): three times the block sweeps per matching
    "fresh + EMA + cosine + debias, 3x sweeps": {
        "resample_every": "renew_every",
        "ema_decay": 0.999,
        "decay_steps": "n_steps",
        "debias": True,
        "initial_sweeps": "3x",
        "sweeps": "3x",
    },
    # the same schedule, trained on the training pool (Scale.pool_runs more runs of J particles) instead
    # of the one training replica: the quick scale's default until the sources were matched (below)
    "fresh + EMA + cosine + debias, pool": {
        "resample_every": "renew_every",
        "ema_decay": 0.999,
        "decay_steps": "n_steps",
        "debias": True,
        "pool": True,
    },
    # twice the mini-batch (N = J at the quick scale), from the pool: the residual shrinkage scales
    # with the squared W2 floor of N points
    "fresh + EMA + cosine + debias, pool, 2x N": {
        "resample_every": "renew_every",
        "ema_decay": 0.999,
        "decay_steps": "n_steps",
        "debias": True,
        "pool": True,
        "n_samples": "2x",
    },
    # the self term also capped at 100 times its median pair cost, so that stray points pay
    "fresh + EMA + cosine + debias, pool, local cap": {
        "resample_every": "renew_every",
        "ema_decay": 0.999,
        "decay_steps": "n_steps",
        "debias": True,
        "pool": True,
        "local_cap": 100.0,
    },
    # without the pool (the paper scale has none), as the experiments train there, plus the local cap
    "fresh + EMA + cosine + debias, local cap": {
        "resample_every": "renew_every",
        "ema_decay": 0.999,
        "decay_steps": "n_steps",
        "debias": True,
        "local_cap": 100.0,
    },
    # the paper scale's schedule with fresh mini-batches four times as often (K = L = 50 instead of 200):
    # a network fits the matched pairs of a mini-batch it keeps, and its loss falls below the floor
    "fresh + EMA + cosine + debias, local cap, K = L = 50": {
        "resample_every": 50,
        "renew_every": 50,
        "ema_decay": 0.999,
        "decay_steps": "n_steps",
        "debias": True,
        "local_cap": 100.0,
    },
    # folds (docs/training.md): regress onto the sources' optimal coupling to the targets instead of
    # matching the generated points (the paper's min-min); with the pool, as the quick scale trains,
    # against the quick scale's own schedule ("fresh + EMA + cosine + debias, pool")
    "fresh + EMA + cosine, pool, match sources": {
        "resample_every": "renew_every",
        "ema_decay": 0.999,
        "decay_steps": "n_steps",
        "pool": True,
        "match_sources": True,
    },
    # the same with the debiased loss (its self term still matches f(x) to f(x')): does it undo the
    # regression's shrinkage? The quick scale's default (Scale.match_sources)
    "fresh + EMA + cosine + debias, pool, match sources": _MATCHED,
    # the sources' matching cuts ks2d-time's outer tail (a regression onto a sampled coupling learns its
    # conditional mean): the same, switching to the min-min (TrainConfig.min_min_after) for the last
    # fifth or half of the steps, once the map is near the monotone one
    "fresh + EMA + cosine + debias, pool, match sources, min-min last 20%": {**_MATCHED, "min_min_after": "80%"},
    "fresh + EMA + cosine + debias, pool, match sources, min-min last 50%": {**_MATCHED, "min_min_after": "50%"},
    # a larger mini-batch: the coupling's conditional spread, which the regression removes, shrinks with N
    "fresh + EMA + cosine + debias, pool, match sources, 2x N": {**_MATCHED, "n_samples": "2x"},
    "fresh + EMA + cosine + debias, pool, match sources, 4x N": {**_MATCHED, "n_samples": "4x"},
    # the network also gets the source point's tail coordinate -log(1 - |x|^d) (ModelConfig.tail_feature):
    # the learnt radial profile follows the ideal one up to the level 0.95 and flattens beyond
    "fresh + EMA + cosine + debias, pool, match sources, tail feature": {**_MATCHED, "tail_feature": True},
    # with three times the block sweeps (the mini-batch's coupling nearer the exact one: its partners move
    # by half as much), or a larger mini-batch
    "fresh + EMA + cosine + debias, pool, match sources, tail feature, 3x sweeps": {
        **_MATCHED,
        "tail_feature": True,
        "initial_sweeps": "3x",
        "sweeps": "3x",
    },
    "fresh + EMA + cosine + debias, pool, match sources, tail feature, 2x N": {
        **_MATCHED,
        "tail_feature": True,
        "n_samples": "2x",
    },
    "fresh + EMA + cosine + debias, pool, match sources, tail feature, 4x N": {
        **_MATCHED,
        "tail_feature": True,
        "n_samples": "4x",
    },
    # the loss stays far above its floor at 4x N (the network underfits the map): twice the width
    "fresh + EMA + cosine + debias, pool, match sources, tail feature, 2x N, 2x width": {
        **_MATCHED,
        "tail_feature": True,
        "n_samples": "2x",
        "width": 60,
    },
    "fresh + EMA + cosine + debias, pool, match sources, 2x width": {**_MATCHED, "width": 60},
    # the debiased loss's self term paired by the sources' matching (x to x'), as the first term pairs x
    # with the targets: at the true map the two terms' biases then match to first order
    "fresh + EMA + cosine + debias, pool, match sources, self by sources": {**_MATCHED, "match_sources_self": True},
    # the self term paired by the sources' matching to the generated points f(x') (the first term's
    # geometry), f(x') held fixed, weighed w (TrainConfig.mirror_self): the regression's shrinkage cut to
    # about (1 - w) of itself
    "fresh + EMA + cosine + debias, pool, match sources, mirror self 0.5": {**_MATCHED, "mirror_self": 0.5},
    "fresh + EMA + cosine + debias, pool, match sources, mirror self 0.9": {**_MATCHED, "mirror_self": 0.9},
    # the map is the identity at t = 0 (ModelConfig.identity_at): the initial law is the source itself
    # (laminar2d-time's disc at t = 0 came out flattened, its edge soft)
    "fresh + EMA + cosine + debias, pool, match sources, identity at t = 0": {**_MATCHED, "identity_at": 0.0},
    # the same with a factor linear in t (ModelConfig.identity_power = 1): laminar2d-time's displacement is
    # the flow's, linear in t (m2 - m2(0) grows like t^2 there), where the square root missed t = 0.005
    "fresh + EMA + cosine + debias, pool, match sources, identity at t = 0, linear": {
        **_MATCHED,
        "identity_at": 0.0,
        "identity_power": 1.0,
    },
    # a second term fits the law of |f(x)| to the whole training set's radial quantiles by rank
    # (TrainConfig.radial_weight): one-dimensional transport, no sampled coupling to shrink the tail
    "fresh + EMA + cosine + debias, pool, match sources, tail feature, radial 1": {
        **_MATCHED,
        "tail_feature": True,
        "radial_weight": 1.0,
    },
    "fresh + EMA + cosine + debias, pool, match sources, tail feature, radial 4": {
        **_MATCHED,
        "tail_feature": True,
        "radial_weight": 4.0,
    },
    "fresh + EMA + cosine + debias, pool, match sources, tail feature, radial 16": {
        **_MATCHED,
        "tail_feature": True,
        "radial_weight": 16.0,
    },
    "fresh + EMA + cosine + debias, pool, match sources, radial 4": {**_MATCHED, "radial_weight": 4.0},
    "fresh + EMA + cosine, 2x steps": {
        "resample_every": "renew_every",
        "ema_decay": 0.999,
        "decay_steps": "n_steps",
        "steps": 12000,
    },
}


def _slug(label: str) -> str:
    """A file name for a schedule's label."""
    return "".join(c if c.isalnum() else "-" for c in label).strip("-")


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
        # the baseline is the paper's schedule at this scale's sizes: a mini-batch kept for 10 renewals,
        # no moving average, a constant learning rate; each schedule changes it
        mc, tc = RUN.configs(exp, scale)
        base = tc._replace(
            resample_every=10 * tc.renew_every,
            ema_decay=0.0,
            decay_steps=0,
            debias=False,
            local_cap=0.0,
            match_sources=False,
        )
        mc = mc._replace(tail_feature=False)  # the paper's network: schedules add the tail coordinate
        table = {**SCHEDULES, **MORE_SCHEDULES}
        for label in schedules or list(SCHEDULES):
            change = table[label]
            change = dict(change)
            n_steps = change.pop("steps", sc.n_steps)
            targets = parts[0, train_idx]
            if change.pop("pool", False):
                runs = DATA.pool_runs(exp, scale)
                if runs is None:
                    raise ValueError(f"{exp.name} has no training pool at the {scale} scale (Scale.pool_runs = 1).")
                pool_path = os.path.join(folder, "pool.npz")
                targets = DATA.simulate_pool(exp, scale, 0, pool_path, print, runs)[0]
            named = {
                "n_steps": n_steps,
                "renew_every": base.renew_every,
                "80%": n_steps * 4 // 5,  # of the steps
                "50%": n_steps // 2,
            }
            times = {"2x": 2, "3x": 3, "4x": 4}
            change = {
                k: (times[v] * getattr(base, k) if v in times else named[v]) if isinstance(v, str) else v
                for k, v in change.items()
            }
            model_cfg = mc._replace(
                tail_feature=bool(change.pop("tail_feature", False)),
                width=change.pop("width", mc.width),
                identity_at=change.pop("identity_at", None),
                identity_power=float(change.pop("identity_power", 0.5)),
            )
            tc = base._replace(**change)
            floor_loss = EVAL.loss_floor(jax.random.key(3), targets, tc.n_samples)  # of this schedule's N
            t0 = time.perf_counter()
            res = T.train(jax.random.key(1), targets, train_v, model_cfg, tc, n_steps=n_steps, progress=False)
            seconds = time.perf_counter() - t0
            # the trained network, for measurements after the fact (T.load_checkpoint)
            kept = os.path.join(out, "ablations", scale, name, _slug(label) + ".npz")
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            T.save_checkpoint(kept, res.state, model_cfg, tc, res.history, {"schedule": label})
            rows = []
            for v in values:
                if v not in held_v and v not in train_v:
                    continue
                i = idx[float(v)]
                gen = M.generate(model_cfg, res.params, v, jax.random.key(11), sc.n_generated)
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
                        M.generate(model_cfg, res.params, v, jax.random.fold_in(jax.random.key(11), q), sc.n_generated)
                    )["m2"]
                    for q in range(1, LARGE_DRAWS + 1)
                ]
                row["m2_dp_large"] = float(np.mean(big))
                row["m2_dp_large_se"] = float(np.std(big, ddof=1) / np.sqrt(LARGE_DRAWS))
                if v in train_v:  # the law the network was fitted to: its training particles at this value
                    row["m2_train"] = float(np.mean(np.sum(np.asarray(targets[list(train_v).index(v)]) ** 2, -1)))
                    row["m2_dp_vs_train"] = row["m2_dp"] / row["m2_train"] - 1
                    row["m2_dp_large_vs_train"] = row["m2_dp_large"] / row["m2_train"] - 1
                row.update(_tail_stats(np.asarray(parts[:, i]).reshape(-1, exp.d), gen))
                row["folded"] = list(M.folded_fraction(model_cfg, res.params, v, jax.random.key(13), FOLD_POINTS))
                if radial is not None:  # as the experiment reports it: generated, pooled replicas
                    cdf = radial.cdf(int(np.flatnonzero(np.isclose(radial.times, v))[0]))
                    row["ks_dp"], row["ks_dp_signed"], row["ks_dp_level"] = KM.radial_ks_where(gen, cdf)
                    row["ks_ipm"] = KM.radial_ks_where(np.asarray(parts[:, i]).reshape(-1, exp.d), cdf)[0]
                    # as the experiments check it since 2026-11-27: KS_POINTS generated points, a draw of
                    # its own (the draw above is the same source sample at every time and in every row)
                    many = M.generate(model_cfg, res.params, v, jax.random.fold_in(jax.random.key(11), 1000), KS_POINTS)
                    row["ks_dp_large"], row["ks_dp_large_signed"], row["ks_dp_large_level"] = KM.radial_ks_where(
                        many, cdf
                    )
                if tc.ema_decay > 0:  # the last iterate instead of the moving average
                    last = M.generate(model_cfg, res.state.params, v, jax.random.key(11), sc.n_generated)
                    row["m2_dp_last_iterate"] = float(np.mean(np.sum(np.asarray(last) ** 2, -1)))
                row["m2_rel_error"] = abs(row["m2_dp"] - row["m2_ipm"]) / row["m2_ipm"]
                row.update(REPORT.judge(row, scale))
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
                "final_loss": final.value,  # the mean of the last 20 mini-batches (rows before 2026-11-26
                "final_loss_se": final.se,  # evening: of the last 100 steps, the floor from one pair per set)
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


def health(out="ksdp-runs"):
    results = []
    for scale in SCALES:
        for name in EXPERIMENTS:
            path = os.path.join(out, scale, name, "dataset.npz")
            if not os.path.exists(path):
                continue
            ds = ksdp.load_dataset(path)
            p = ds.particles  # [P, S, J, d]
            mass, delta, dt = float(np.max(ds.params["mass"])), float(np.max(ds.params["delta"])), ds.meta["dt"]
            f = jax.jit(
                lambda x: dt * mass / x.shape[0] * jnp.max(jnp.linalg.norm(ksdp.pair_sum(x, x, delta), axis=-1)) / delta
            )
            h = [float(f(jnp.asarray(p[a, s]))) for a in range(p.shape[0]) for s in range(p.shape[1])]
            row = {
                "scale": scale,
                "experiment": name,
                "snapshots": len(h),
                "max": max(h),
                "median": float(np.median(h)),
            }
            results.append(row)
            print(f"health {scale} {name}: max {row['max']:.3f}, median {row['median']:.3f} over {len(h)} snapshots")
    return results


def _tail_stats(ipm, gen) -> dict:
    """Largest distance from the IPM particles' centre of ``ipm`` and ``gen`` (``[n, d]`` each), and
    the fraction of ``gen`` beyond the farthest of ``ipm``."""
    centre = np.mean(ipm, axis=0)
    r_ipm = np.max(np.linalg.norm(ipm - centre, axis=-1))
    r_gen = np.linalg.norm(np.asarray(gen) - centre, axis=-1)
    return {"r_max_ipm": float(r_ipm), "r_max_dp": float(np.max(r_gen)), "beyond": float(np.mean(r_gen > r_ipm))}


def _found(out, names, files):
    """Every experiment under ``<out>/<scale>/`` whose folder holds all of ``files`` (as ``python -m
    ksdp.experiments`` leaves them): ``(scale, name, experiment, paths of files)``."""
    for scale in SCALES:
        for name in names or EXPERIMENTS:
            paths = [os.path.join(out, scale, name, f) for f in files]
            if all(os.path.exists(p) for p in paths):
                yield scale, name, EXPERIMENTS[name], paths


def _runs(exp, path):
    """The IPM runs of a dataset file, ``[runs, values, J, d]`` (the replicas, a pool, reference runs)."""
    ds = ksdp.load_dataset(path)
    return np.asarray(DATA.particles_by_value(exp, ds, replicas=len(ds.meta.get("replicas", DATA.REPLICAS))))


def _finished(out, names):
    """Every finished experiment under ``<out>/<scale>/`` (a dataset and a training checkpoint):
    ``(scale, name, experiment, state, model config, train config, generating parameters, particles
    [replicas, values, J, d])``; the generating parameters are the moving average where training kept one."""
    for scale, name, exp, (ds_path, ck_path) in _found(out, names, ("dataset.npz", "checkpoint.npz")):
        state, mc, tc, _, _ = T.load_checkpoint(ck_path)
        params = state.ema if tc.ema_decay > 0 else state.params
        parts = DATA.particles_by_value(exp, ksdp.load_dataset(ds_path))
        yield scale, name, exp, state, mc, tc, params, parts


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
    for scale, name, exp, state, mc, _tc, params, parts in _finished(out, names):
        train_v, held_v, _ = exp.values(scale)
        n = parts.shape[2]
        for i, v in enumerate(exp.all_values(scale)):
            ipm = np.asarray(parts[:, i]).reshape(-1, exp.d)
            gen = np.asarray(M.generate(mc, params, v, jax.random.key(21), n))
            kind = "train" if v in train_v else "held-out" if v in held_v else "extrapolated"
            row = {
                "scale": scale,
                "experiment": name,
                "step": int(state.step),
                "eta": float(v),
                "kind": kind,
                "J": int(n),
                **_tail_stats(ipm, gen),
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
    for scale, name, exp, state, mc, tc, params, parts in _finished(out, names):
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
                exact = float(W.w2(fx, y, k_w).w2) ** 2
                floor = float(W.w2(y2, y, k_w).w2) ** 2
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
    (`ksdp.experiments.report.c2st_check`, ``k`` pairs of reference runs), and the power of each
    against a true excess of +0.05.
    """
    results, every = [], {}
    for scale, name, exp, paths in _found(out, names, ("dataset.npz", "reference-runs.npz")):
        runs = np.concatenate([_runs(exp, p) for p in paths])  # [R, V, J, d]: the replicas, the reference runs
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


def pools(out="ksdp-runs", names=None):
    """How far each training pool's m2 lies from that of the other IPM runs, in standard errors.

    For every experiment under ``<out>/<scale>/`` with a dataset, a training pool and m2 reference
    runs, at every training value: the mean m2 of the pool's runs and of the replicas with the
    reference runs, each with its SE from the spread of its runs (`ksdp.metrics.run_spread`), the
    pool's relative offset and z. Every experiment draws its runs from the same seed's keys, so two
    experiments of the same dimension and J share initial points and noise: their pools' luck is alike.
    """

    def m2(runs):
        return KM.run_spread([KM.moments(x)["m2"] for x in runs])

    results = []
    for scale, name, exp, paths in _found(out, names, ("dataset.npz", "pool.npz", "reference-runs.npz")):
        reps, pool, more = (_runs(exp, p) for p in paths)
        values = [float(v) for v in exp.all_values(scale)]
        for j, v in enumerate(float(v) for v in exp.values(scale)[0]):
            i = values.index(v)
            p, o = m2(pool[:, j]), m2(np.concatenate([reps[:, i], more[:, i]]))
            row = {
                "scale": scale,
                "experiment": name,
                "eta": v,
                "pool_runs": int(pool.shape[0]),
                "other_runs": int(reps.shape[0] + more.shape[0]),
                "m2_pool": [p["mean"], p["se"]],
                "m2_other": [o["mean"], o["se"]],
                "relative": p["mean"] / o["mean"] - 1,
                "z": (p["mean"] - o["mean"]) / math.hypot(p["se"], o["se"]),
            }
            results.append(row)
            print(
                f"pools {scale} {name} {exp.eta} = {v:g}: m2 pool {p['mean']:.4f} +- {p['se']:.4f}, "
                f"other runs {o['mean']:.4f} +- {o['se']:.4f} ({row['relative']:+.2%}, z = {row['z']:+.1f})",
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
                    gen = KM.moments(np.asarray(M.generate(mc, res.params, v, jax.random.key(1000 + j), n_generated)))
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
    parts = _runs(exp, os.path.join(folder, "dataset.npz"))
    runs_all = np.concatenate([parts, _runs(exp, ref_path)])
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
                gen = M.generate(mc, res.params, t, jax.random.key(77), n_generated)
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
                KM.radial_ks(M.generate(mc, params, t, jax.random.key(1000 + s), KS_POINTS, source=src), cdf)
                for s in range(draws)
            ]
            for src in M.SOURCES
        }
        big = M.generate(mc, params, t, jax.random.key(7), 10 * KS_POINTS, source="stratified")
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--schedules",
        nargs="+",
        choices=list(SCHEDULES) + list(MORE_SCHEDULES),
        default=None,
        help="training schedules of the 'training' part (default: the five of docs/training.md)",
    )
    ap.add_argument(
        "--experiments",
        nargs="+",
        choices=list(EXPERIMENTS),
        default=None,
        help="experiments of the 'training' part (quick scale; default: ks2d-time laminar2d-amplitude) "
        "and of the 'tails' part (default: every finished one)",
    )
    ap.add_argument(
        "--scale",
        choices=list(SCALES),
        default="quick",
        help="scale of the 'training' part (its datasets, sizes and steps; default quick)",
    )
    ap.add_argument(
        "--reference-sizes",
        type=int,
        nargs="+",
        default=[2000, 10000],
        help="IPM sizes J of the 'reference' part (from 10^4 on with the particle mesh; 10^6 takes minutes)",
    )
    ap.add_argument(
        "--ks-scale",
        choices=list(SCALES),
        default="paper",
        help="scale of the 'ks' and 'sources' parts (default paper: J = 10^4)",
    )
    ap.add_argument(
        "--ks-runs", type=int, default=26, help="independent IPM runs of the 'ks' part (default 26; cached)"
    )
    args = ap.parse_args(argv)
    parts = {
        "kernels": kernels,
        "slope": slope,
        "blocks": blocks,
        "small": small,
        "residual": residual,
        "energy": energy,
        "reference": lambda: reference(sizes=tuple(args.reference_sizes)),
        "health": health,
        "training": lambda: training(
            names=args.experiments or TRAINING_EXPERIMENTS, scale=args.scale, schedules=args.schedules
        ),
        "tails": lambda: tails(names=args.experiments),
        "matching": lambda: matching(names=args.experiments),
        "c2st": lambda: c2st(names=args.experiments),
        "pools": lambda: pools(names=args.experiments),
        "ks": lambda: ks(scale=args.ks_scale, runs=args.ks_runs),
        "shrink": lambda: shrink(names=args.experiments or ("kolmogorov3d-amplitude",)),
        "sources": lambda: sources(scale=args.ks_scale),
        "anisotropy": anisotropy,
    }
    results = {name: parts[name]() for name in args.only}
    # --only updates the parts it ran in today's file and keeps the others
    previous = os.path.join(
        args.out or _common.RESULTS, f"ablations-{_common.device_name()}-{datetime.date.today().isoformat()}.json"
    )
    if os.path.exists(previous):
        with open(previous) as f:
            old = json.load(f)
        results = {**{k: old[k] for k in PARTS if k in old and k not in results}, **results}
        if "training" in args.only and "training" in old:  # schedules run now replace their old rows only

            def key(r):
                return r.get("scale", "quick"), r["experiment"], r["schedule"]

            done = {key(r) for r in results["training"]}
            kept = [r for r in old["training"] if key(r) not in done]
            results["training"] = kept + results["training"]
    return _common.save("ablations", results, args.out)


if __name__ == "__main__":
    main()
