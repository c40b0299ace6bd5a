"""The IPM's kernel and step (docs/model.md).

* ``kernels``: m2(t) of one run (J = 2000, dt = 1e-4, mu = 1) against the exact line
  m2(0) - (4 - 8/J) t at t = 0.025, 0.05, 0.075, 0.1, for the ``blob`` kernel with delta^2 = 1e-3
  (the experiments' choice) and the paper's kernel (7) with delta^2 = 1e-3 and 1e-2.
* ``slope``: the second-moment slope with mu = 0 (J = 1000, dt = 1e-4, t in [0, 0.02]) against the
  identity -chi M (J - 1) / (2 pi J), for the unregularised kernel and the blob kernel (delta = 0.01).
* ``health``: ``ksdp.Trajectory.health`` (dt |chemotactic drift| / delta) on every snapshot of every
  experiment dataset under ``ksdp-runs/<scale>/``: the margin of ``HEALTH_LIMIT`` = 1 over healthy runs.
* ``step``: the time step's bias of m2 measured by step-halving with the same noise (each coarse step's
  Brownian increment the sum of the finest run's), against the estimate `ksdp.Trajectory.step_bias` makes
  inside one run (the interaction's share, as the library records it, and the whole drift's, flow
  included), for ks2d (t = 0.05, 0.1), laminar2d and kolmogorov3d at A = 100 (t = 0.1), J = 2000.
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


# (name, d, flow, amplitude, t, seeds) of the ``step`` part
STEP_CASES = (
    ("ks2d", 2, "none", 0.0, (0.05, 0.1), 8),
    ("laminar2d A=100", 2, "laminar2d", 100.0, (0.1,), 4),
    ("kolmogorov3d A=100", 3, "kolmogorov3d", 100.0, (0.1,), 4),
)
STEP_FINE = 2.5e-5  # the reference step; the coarse ones are whole multiples of it


def _coupled_run(d, flow, amplitude, times, dt, n):
    """One run at step ``dt`` whose Brownian increments sum those of the ``STEP_FINE`` run of the same key:
    ``(m2, the interaction's bias estimate, the whole drift's, the standard error of m2 over the J
    particles)``, each at ``times``."""
    p = ksdp.Params(flow=amplitude)
    m = int(round(dt / STEP_FINE))
    steps = [int(round(t / dt)) for t in times]
    sigma = math.sqrt(2 * p.mu * dt)

    def drift(x):
        chem, adv, _ = ksdp.drifts.velocity_parts(x, p, kernel="blob", flow=flow, tile=None)
        return chem, chem + adv

    def run(key):
        k0, k1 = jax.random.split(key)
        x = ksdp.uniform_ball(k0, n, d)

        def step(carry, i):
            x, c, b, est_c, est_b = carry
            xi = sum(jax.random.normal(jax.random.fold_in(k1, i * m + q), x.shape) for q in range(m)) / math.sqrt(m)
            x = x + dt * b + sigma * xi
            c2, b2 = drift(x)
            z = x - dt * b  # x_before + sigma xi
            est_c = est_c - dt * jnp.mean(jnp.sum(z * (c2 - c), -1))
            est_b = est_b - dt * jnp.mean(jnp.sum(z * (b2 - b), -1))
            r2 = jnp.sum(x * x, -1)
            return (x, c2, b2, est_c, est_b), (jnp.mean(r2), est_c, est_b, jnp.std(r2) / math.sqrt(n))

        c, b = drift(x)
        _, (m2, est_c, est_b, se) = jax.lax.scan(step, (x, c, b, 0.0, 0.0), jnp.arange(max(steps)))
        at = jnp.asarray(steps) - 1
        return m2[at], est_c[at], est_b[at], se[at]

    return jax.jit(run)


def step(n=2000, dts=(2.5e-4, 1e-4)):
    rows = []
    for name, d, flow, amplitude, times, seeds in STEP_CASES:
        out = {}
        for dt in (*dts, STEP_FINE):
            f = _coupled_run(d, flow, amplitude, times, dt, n)
            out[dt] = np.asarray(
                [np.stack([np.asarray(v, np.float64) for v in f(jax.random.key(s))]) for s in range(seeds)]
            )
        fine = out[STEP_FINE]  # [seeds, 3, times]
        for dt in dts:
            diff = out[dt] - fine  # the estimates' differences: the part the step-halving measures
            for i, t in enumerate(times):
                se = lambda v: float(np.std(v, ddof=1) / math.sqrt(seeds))
                row = {
                    "case": name,
                    "t": t,
                    "dt": dt,
                    "n_particles": n,
                    "seeds": seeds,
                    "m2": float(np.mean(out[dt][:, 0, i])),
                    "measured": float(np.mean(diff[:, 0, i])),
                    "measured_se": se(diff[:, 0, i]),
                    "estimated_interaction": float(np.mean(diff[:, 1, i])),
                    "estimated_whole_drift": float(np.mean(diff[:, 2, i])),
                    # the sampling error of m2 over one run's J particles, which the warning compares with
                    "m2_se_one_run": float(np.mean(out[dt][:, 3, i])),
                }
                rows.append(row)
                print(
                    f"step {name} t={t} dt={dt:g}: m2(dt) - m2({STEP_FINE:g}) = {row['measured']:+.5f} +- "
                    f"{row['measured_se']:.5f}; estimated {row['estimated_interaction']:+.5f} (interaction), "
                    f"{row['estimated_whole_drift']:+.5f} (whole drift)",
                    flush=True,
                )
    return rows
