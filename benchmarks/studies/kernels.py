"""The IPM's kernel and step (docs/model.md).

* ``kernels``: m2(t) of one run (J = 2000, dt = 1e-4, mu = 1) against the exact line
  m2(0) - (4 - 8/J) t at t = 0.025, 0.05, 0.075, 0.1, for the ``blob`` kernel with delta^2 = 1e-3
  (the experiments' choice) and the paper's kernel (7) with delta^2 = 1e-3 and 1e-2.
* ``slope``: the second-moment slope with mu = 0 (J = 1000, dt = 1e-4, t in [0, 0.02]) against the
  identity -chi M (J - 1) / (2 pi J), for the unregularised kernel and the blob kernel (delta = 0.01).
* ``health``: ``ksdp.Trajectory.health`` (dt |chemotactic drift| / delta) on every snapshot of every
  experiment dataset under ``ksdp-runs/<scale>/``: the margin of ``HEALTH_LIMIT`` = 1 over healthy runs.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

import ksdp
from ksdp.experiments.specs import EXPERIMENTS, SCALES


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
