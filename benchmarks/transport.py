"""W2 solvers on the same problems: ksdp's auction and block descent, POT, SciPy, ott-jax Sinkhorn.

    python -m benchmarks.transport [--sizes 2000 8000 16000] [--tols 1e-3 1e-4]

For each N (2D; x uniform on a square, y Gaussian):

* POT's exact network simplex (``ot.emd2`` on the float64 cost matrix, built inside the timing): the
  exact optimum and the baseline a user reaches for. POT is a benchmark extra
  (``pip install -e ".[bench]"``), not a runtime dependency; without it SciPy gives the optimum;
* SciPy ``linear_sum_assignment`` on the full float64 cost, up to ``--scipy-max-n`` (default 2000):
  the slowest exact solver here, kept as the earlier baseline;
* ksdp's auction (`ksdp.wasserstein.auction`) at each ``--tols``: its time, its certified gap
  (float64 matched cost against its dual bound), and its true gap against the optimum;
* the ksdp block solver (M = 16): the number of sweeps to come within 0.5% of the optimum, then the
  time of a fresh run of exactly that many sweeps;
* ott-jax Sinkhorn at the largest epsilon in a decreasing list whose primal cost is within 0.5%.

Sinkhorn costs O(N^2) per iteration and needs thousands of iterations at that epsilon, so above
``--sinkhorn-max-n`` (2000 on a CPU) it is not run to convergence: the script times 20 iterations at
the epsilon chosen for the largest N that was run, and records ``estimated_seconds`` = seconds per
iteration x the iterations that N needed, marked as an estimate in the JSON and the table.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import scipy.optimize

from benchmarks import _common
from ksdp import transport as T
from ksdp import wasserstein as W

TARGET = 0.005


def exact_optimum(x, y):
    """SciPy's exact assignment in float64: ``(cost matrix [N, N], optimal mean squared distance)``."""
    xn, yn = np.asarray(x, np.float64), np.asarray(y, np.float64)
    c = ((xn[:, None] - yn[None]) ** 2).sum(-1)
    r, col = scipy.optimize.linear_sum_assignment(c)
    return c, c[r, col].mean()


def pot_optimum(x, y):
    """POT's exact network simplex in float64 (cost matrix built inside): the optimal mean squared distance.

    Returns ``None`` without POT (a benchmark extra).
    """
    try:
        import ot
    except ImportError:
        return None
    xn, yn = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(xn)
    w = np.full(n, 1.0 / n)
    return float(ot.emd2(w, w, ot.dist(xn, yn), numItermax=10**9))


def matched64(x, y, perm):
    xn, yn = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.mean(np.sum((xn - yn[np.asarray(perm)]) ** 2, axis=1)))


def problem(n, seed=0):
    x = jax.random.uniform(jax.random.key(seed), (n, 2)) * 2 - 1
    y = jax.random.normal(jax.random.key(seed + 1), (n, 2)) * 0.5 + 0.2
    return x, y


def sinkhorn(x, y, epsilon, *, max_iterations=20000, threshold=1e-4):
    """A compiled ott-jax Sinkhorn for this problem; calling it returns ``(primal, converged, iterations)``.

    Compiled ahead of time; its first call still pays a one-time cost (~1.6 s measured at N = 400),
    so callers time a second call. The same solver as ``ksdp.wasserstein.sinkhorn_cost``, which does
    not report the iterations.
    """
    from ott.geometry import pointcloud
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn as ott_sinkhorn

    solver = ott_sinkhorn.Sinkhorn(threshold=threshold, max_iterations=max_iterations)
    geom = pointcloud.PointCloud(x, y, epsilon=epsilon)
    compiled = jax.jit(lambda g: solver(linear_problem.LinearProblem(g))).lower(geom).compile()

    def run():
        out = compiled(geom)
        return float(out.primal_cost), bool(out.converged), int(out.n_iters)

    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 16000])
    ap.add_argument("--tols", type=float, nargs="+", default=[1e-3, 1e-4], help="the auction's target gaps")
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--max-sweeps", type=int, default=1000)
    ap.add_argument("--scipy-max-n", type=int, default=2000, help="largest N for SciPy's exact solver")
    ap.add_argument("--blocks-max-n", type=int, default=8000, help="largest N for the block descent")
    ap.add_argument(
        "--sinkhorn-max-n",
        type=int,
        default=2000 if jax.default_backend() == "cpu" else 8000,
        help="largest N for which Sinkhorn runs to convergence (above: an estimate)",
    )
    ap.add_argument(
        "--epsilons",
        type=float,
        nargs="+",
        default=[1e-2, 3e-3, 1e-3, 3e-4],
        help="Sinkhorn epsilons to try, largest first, until one is within the target gap",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows, last_sk = [], {}
    pot_optimum(*problem(10))  # POT's first call pays its imports: not timed below
    print(
        f"{'N':>6} {'POT s':>8} {'scipy s':>8} {'tol':>6} {'auction s':>9} {'cert gap':>9} {'true gap':>9} "
        f"{'POT/auct':>8} {'blocks s':>8} {'sweeps':>6} {'sinkhorn s':>10}"
    )
    for n in args.sizes:
        x, y = problem(n)
        t0 = time.perf_counter()
        pot = pot_optimum(x, y)
        t_pot = time.perf_counter() - t0 if pot is not None else None
        c = None
        t_scipy = None
        opt = pot
        if n <= args.scipy_max_n or pot is None:
            t0 = time.perf_counter()
            c, opt_scipy = exact_optimum(x, y)
            t_scipy = time.perf_counter() - t0
            opt = opt_scipy if pot is None else pot

        auction = []
        W.auction(x, y, tol=args.tols[0])  # compile (the shapes are the same at every tol)
        for tol in args.tols:
            t0 = time.perf_counter()
            res = W.auction(x, y, tol=tol)
            t_auc = time.perf_counter() - t0
            auction.append(
                {
                    "tol": tol,
                    "seconds": t_auc,
                    "certified_gap": res.gap,
                    "true_gap": res.cost / opt - 1,
                    "lower_below_optimum": bool(res.lower <= opt),
                    "converged": res.converged,
                    "rounds": res.rounds,
                    "pot_over_auction": t_pot / t_auc if t_pot else None,
                }
            )

        blocks = {}
        if n <= args.blocks_max_n:
            run = jax.jit(lambda k, s: T.refine(k, x, y, T.identity(x), n_sweeps=s, block=args.block), static_argnums=1)
            _, costs = run(jax.random.key(0), args.max_sweeps)
            gaps = np.asarray(costs, np.float64) / opt - 1
            hit = np.flatnonzero(gaps < TARGET)
            sweeps = int(hit[0]) + 1 if hit.size else args.max_sweeps
            run(jax.random.key(0), sweeps)[0].block_until_ready()  # compile for this length
            t0 = time.perf_counter()
            perm, _ = run(jax.random.key(0), sweeps)
            perm.block_until_ready()
            blocks = {
                "seconds": time.perf_counter() - t0,
                "sweeps": sweeps,
                "gap": matched64(x, y, perm) / opt - 1,
                "reached_target": bool(hit.size),
            }

        sk = {}
        if n <= args.sinkhorn_max_n:
            for eps in args.epsilons:
                solve = sinkhorn(x, y, eps)
                solve()  # warm-up: a full solve
                t0 = time.perf_counter()
                primal, conv, iters = solve()
                sk = {
                    "epsilon": eps,
                    "seconds": time.perf_counter() - t0,
                    "gap": primal / opt - 1,
                    "converged": conv,
                    "iterations": iters,
                    "estimate": False,
                }
                if abs(sk["gap"]) < TARGET and sk["converged"]:
                    break
            last_sk = sk
        elif last_sk:
            eps = last_sk["epsilon"]
            solve = sinkhorn(x, y, eps, max_iterations=20, threshold=0.0)
            solve()  # warm-up
            t0 = time.perf_counter()
            solve()
            per_iter = (time.perf_counter() - t0) / 20
            sk = {
                "epsilon": eps,
                "seconds": per_iter * last_sk["iterations"],
                "gap": None,
                "converged": False,
                "iterations": last_sk["iterations"],
                "seconds_per_iteration": per_iter,
                "estimate": True,
            }
        row = {
            "N": n,
            "optimum": opt,
            "optimum_from": "POT emd2" if pot is not None else "SciPy",
            "pot_s": t_pot,
            "scipy_s": t_scipy,
            "auction": auction,
            "blocks": blocks,
            "sinkhorn": sk,
        }
        rows.append(row)

        def fmt(v, spec):
            width = int(spec.lstrip(">").split(".")[0].rstrip("defg"))
            return format(v, spec) if v is not None else "-".rjust(width)

        for i, a in enumerate(auction):
            first = i == 0
            est = "~" if sk.get("estimate") else " "
            print(
                f"{n if first else '':>6} {fmt(t_pot if first else None, '>8.2f')} "
                f"{fmt(t_scipy if first else None, '>8.2f')} {a['tol']:>6.0e} {a['seconds']:>9.2f} "
                f"{a['certified_gap']:>9.1e} {a['true_gap']:>9.1e} {fmt(a['pot_over_auction'], '>8.2f')} "
                f"{fmt(blocks.get('seconds') if first else None, '>8.2f')} "
                f"{fmt(blocks.get('sweeps') if first else None, '>6d')} "
                + (f"{est}{sk.get('seconds', float('nan')):>9.3f}" if first and sk else ""),
                flush=True,
            )
    return _common.save(
        "transport",
        {"target_gap_blocks": TARGET, "block": args.block, "tols": args.tols, "epsilons": args.epsilons, "rows": rows},
        args.out,
    )


if __name__ == "__main__":
    main()
