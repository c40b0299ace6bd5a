"""The measurements behind the design choices in docs/algorithms.md, each against its alternative.

    python -m benchmarks.ablations [--only kernels slope blocks small residual energy]

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
  root-mean-square SE against the spread of the statistic.

Quality numbers, not times: they do not depend on the machine. JSON under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

import ksdp
from benchmarks import _common
from benchmarks.transport import exact_optimum
from ksdp import metrics as KM
from ksdp import model as M
from ksdp import training as T
from ksdp import transport as TR

PARTS = ("kernels", "slope", "blocks", "small", "residual", "energy")


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
        return TR.sweep(k, x, y, p, False, block=block), None

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
                w.append(float(TR.w2(gen, ref, exact_max=512)[0]))
                floor.append(float(TR.w2(_target(jax.random.key(200 + r), eta, 500), ref, exact_max=512)[0]))
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
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    parts = {
        "kernels": kernels,
        "slope": slope,
        "blocks": blocks,
        "small": small,
        "residual": residual,
        "energy": energy,
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
    return _common.save("ablations", results, args.out)


if __name__ == "__main__":
    main()
