"""Block assignment against SciPy's exact solver and ott-jax Sinkhorn, on the same problems.

    python -m benchmarks.transport [--sizes 500 2000 8000]

For each N (2D; x uniform on a square, y Gaussian): SciPy ``linear_sum_assignment`` on the full
N x N cost (the exact optimum and the baseline time); the ksdp block solver (M = 16): the number of
sweeps to come within 0.5% of the optimum, then the time of a fresh run of exactly that many sweeps;
ott-jax Sinkhorn at the largest epsilon in a decreasing list whose primal cost is within 0.5%.
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import scipy.optimize

from ksdp import transport as T
from benchmarks import _common

TARGET = 0.005


def problem(n, seed=0):
    x = jax.random.uniform(jax.random.key(seed), (n, 2)) * 2 - 1
    y = jax.random.normal(jax.random.key(seed + 1), (n, 2)) * 0.5 + 0.2
    return x, y


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 8000])
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--max-sweeps", type=int, default=1000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = []
    print(f"{'N':>6} {'scipy s':>9} {'ksdp s':>8} {'sweeps':>6} {'gap':>7} {'ratio':>6} {'sinkhorn s':>10} {'eps':>7}")
    for n in args.sizes:
        x, y = problem(n)
        xn, yn = np.asarray(x, np.float64), np.asarray(y, np.float64)
        t0 = time.perf_counter()
        c = ((xn[:, None] - yn[None]) ** 2).sum(-1)
        r, col = scipy.optimize.linear_sum_assignment(c)
        t_scipy = time.perf_counter() - t0
        opt = c[r, col].mean()

        run = jax.jit(lambda k, s: T.refine(k, x, y, T.identity(x), n_sweeps=s, block=args.block),
                      static_argnums=1)
        _, costs = run(jax.random.key(0), args.max_sweeps)
        gaps = np.asarray(costs, np.float64) / opt - 1
        hit = np.flatnonzero(gaps < TARGET)
        sweeps = int(hit[0]) + 1 if hit.size else args.max_sweeps
        run(jax.random.key(0), sweeps)[0].block_until_ready()  # compile for this length
        t0 = time.perf_counter()
        perm, _ = run(jax.random.key(0), sweeps)
        perm.block_until_ready()
        t_ksdp = time.perf_counter() - t0
        gap = c[np.arange(n), np.asarray(perm)].mean() / opt - 1

        sk = {}
        for eps in (1e-2, 3e-3, 1e-3, 3e-4):
            T.sinkhorn_cost(x, y, eps)[0].block_until_ready()
            t0 = time.perf_counter()
            primal, conv = T.sinkhorn_cost(x, y, eps)
            primal = float(primal)
            sk = {"epsilon": eps, "seconds": time.perf_counter() - t0, "gap": primal / opt - 1, "converged": bool(conv)}
            if abs(sk["gap"]) < TARGET and sk["converged"]:
                break
        row = {"N": n, "optimum": opt, "scipy_s": t_scipy, "ksdp_s": t_ksdp, "ksdp_sweeps": sweeps,
               "ksdp_gap": gap, "ksdp_reached_target": bool(hit.size), "scipy_over_ksdp": t_scipy / t_ksdp,
               "sinkhorn": sk}
        rows.append(row)
        print(f"{n:>6} {t_scipy:>9.3f} {t_ksdp:>8.3f} {sweeps:>6} {gap:>7.4f} {t_scipy / t_ksdp:>6.1f} "
              f"{sk['seconds']:>10.3f} {sk['epsilon']:>7.0e}", flush=True)
    return _common.save("transport", {"target_gap": TARGET, "block": args.block, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
