"""The small-block exact assignment (`ksdp.assignment.solve_batch`) against optax and SciPy.

    python -m benchmarks.assignment [--block 16]

One sweep of the block solver over 8 sets x 2000 points (x uniform on a square, y Gaussian), i.e.
1000 blocks of 16 x 16, on the same cost matrices for every solver: ksdp's ``solve_batch``; optax's
Hungarian algorithm under ``vmap``; SciPy's ``linear_sum_assignment`` called once per block (float64
copies made beforehand). The matchings are taken at three stages of a descent, because the work
depends on it: "cold" (the identity, as when a fresh mini-batch is matched), "early" (after 2 sweeps)
and "warm" (after 30 sweeps, the state of the periodic renewals during training), each with random
and spatially local blocks.
Training's own throughput is `benchmarks/train.py`'s.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from optax import assignment as optax_assignment

from benchmarks import _common
from ksdp import assignment as A
from ksdp import transport as TR


def _optax_solve_batch(c, **_):
    """optax's Hungarian under vmap, in `solve_batch`'s output convention (column of each row)."""
    i, j = jax.vmap(optax_assignment.hungarian_algorithm)(c)
    return jax.vmap(lambda ii, jj: jnp.zeros(ii.shape, jnp.int32).at[ii].set(jj.astype(jnp.int32)))(i, j)


def sweep_costs(x, y, perm, local, block, seed=10):
    """The ``[R * B, m, m]`` block cost matrices one sweep would solve."""
    out = []
    for s in range(x.shape[0]):
        rows, _ = TR.block_rows(jax.random.key(seed + s), x[s], block, local)
        xb, yb = x[s][rows], y[s][perm[s][rows]]
        out.append(jnp.sum((xb[:, :, None] - yb[:, None]) ** 2, -1))
    return jnp.concatenate(out)


def time_sweep(c):
    ours = jax.jit(A.solve_batch)
    theirs = jax.jit(_optax_solve_batch)
    c64 = np.asarray(c, np.float64)

    def scipy_all():
        for m in c64:
            scipy.optimize.linear_sum_assignment(m)

    t_ours = _common.timeit(lambda: ours(c).block_until_ready())
    t_optax = _common.timeit(lambda: theirs(c).block_until_ready())
    t_scipy = _common.timeit(scipy_all, repeat=3, min_time=0.2)
    sol = np.asarray(ours(c))
    ref = np.array([m[scipy.optimize.linear_sum_assignment(m)].sum() for m in c64])
    got = np.take_along_axis(c64, sol[:, :, None], 2)[..., 0].sum(1)
    return {
        "blocks": int(c.shape[0]),
        "identity_optimal_fraction": float(np.mean(np.asarray(A.identity_is_optimal(c)))),
        "ksdp_s": t_ours,
        "optax_s": t_optax,
        "scipy_per_block_s": t_scipy,
        "scipy_over_ksdp": t_scipy / t_ours,
        "optax_over_ksdp": t_optax / t_ours,
        "max_excess_over_scipy_optimum": float(np.max(got - ref)),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    r, n = 8, 2000
    x = jax.random.uniform(jax.random.key(0), (r, n, 2)) * 2 - 1
    y = jax.random.normal(jax.random.key(1), (r, n, 2)) * 0.5 + 0.2
    c = sweep_costs(x, y, TR.identity(x), False, args.block)
    start = time.perf_counter()
    jax.jit(A.solve_batch).lower(c).compile()  # every program that matches (training's step first) holds one
    compile_s = time.perf_counter() - start
    print(f"compiling solve_batch for {c.shape[0]} blocks: {compile_s:.2f} s")
    rows = []
    print(
        f"{'stage':>6} {'blocks':>7} {'optimal':>7} {'ksdp ms':>8} {'optax ms':>9} {'scipy ms':>9} {'scipy/ksdp':>10}"
    )
    for stage, sweeps in (("cold", 0), ("early", 2), ("warm", 30)):
        perm = TR.identity(x)
        if sweeps:
            perm = TR.refine(jax.random.key(2), x, y, perm, n_sweeps=sweeps, block=args.block)[0]
        for local in (False, True):
            row = {"stage": stage, "sweeps_before": sweeps, "local": local}
            row.update(time_sweep(sweep_costs(x, y, perm, local, args.block)))
            rows.append(row)
            kind = "local" if local else "random"
            print(
                f"{stage:>6} {kind:>7} {row['identity_optimal_fraction']:>7.3f} {1e3 * row['ksdp_s']:>8.2f} "
                f"{1e3 * row['optax_s']:>9.2f} {1e3 * row['scipy_per_block_s']:>9.2f} {row['scipy_over_ksdp']:>10.2f}",
                flush=True,
            )
    return _common.save(
        "assignment", {"block": args.block, "sets": r, "n": n, "compile_s": compile_s, "sweep": rows}, args.out
    )


if __name__ == "__main__":
    main()
