"""The cost of the parabolic--parabolic IPM (``eps > 0``, `ksdp.chemical`) against the elliptic one.

    python -m benchmarks.chemical [--only timing run accuracy] [--sizes ...] [--grids ...] [--steps 1000]

``timing``: per step, in 2D: the elliptic run (``eps = 0``, the particle mesh) and the parabolic one (``eps = 0.1``,
the same drift plus the chemical's field grid of ``G^2`` nodes), for each J and G, each the best of
three runs of 20 steps after a compiling one, and their ratio. ``run``: J = 10^6 in 2D for ``--steps``
steps (default 1000) at the default field grid, one wall time including its compilation. ``accuracy``:
what the field grid's cell costs: from one key (one initial cloud, one noise), J = 2000 to t = 0.05 at
eps = 0.01, 0.1 and 1 on field grids of 128 to 1024 nodes, the rms distance of the particles to the run on
1024 nodes, beside their distance to the elliptic run (the lag's own effect). JSON under
``benchmarks/results/``; ``--only`` keeps the other parts of today's file.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp

import ksdp
from benchmarks import _common
from ksdp import ipm

EPS = 0.1
STEPS_PER_TIMING = 20


def per_step(n: int, eps: float, field_grid: int | None) -> float:
    """Seconds per Euler step of a run of `STEPS_PER_TIMING` steps (best of three after a compiling one)."""
    times = (STEPS_PER_TIMING * ipm.DEFAULT_DT,)
    kw = dict(times=times, n_particles=n, field_grid=field_grid)
    keys = iter(jax.random.split(jax.random.key(0), 8))
    run = lambda: ksdp.simulate(next(keys), ksdp.Params(eps=eps), **kw).particles.block_until_ready()
    run()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best / STEPS_PER_TIMING


def accuracy(n: int = 2000, t: float = 0.05, grids=(128, 256, 512, 1024)) -> list:
    """The field grid's cell against a grid of ``grids[-1]`` nodes, pathwise (one key)."""
    key = jax.random.key(5)
    kw = dict(times=(t,), n_particles=n)
    base = ksdp.simulate(key, ksdp.Params(), **kw).particles[-1]
    rms = lambda a, b: float(jnp.sqrt(jnp.mean(jnp.sum((a - b) ** 2, axis=-1))))
    rows = []
    for eps in (0.01, 0.1, 1.0):
        runs = {}
        for g in grids:  # traced eps: the up-front refusal of coarse cells is what is measured here
            run = jax.jit(lambda e, g=g: ksdp.simulate(key, ksdp.Params(eps=e), field_grid=g, check=False, **kw))
            runs[g] = run(eps).particles[-1]
        for g in grids[:-1]:
            cell = ksdp.chemical.cell_ratio(1.0, eps, 1.0, ipm.DEFAULT_DELTA, t, g, 2)
            row = dict(eps=eps, field_grid=g, cell_over_delta=cell, to_finest=rms(runs[g], runs[grids[-1]]))
            row["lag_effect"] = rms(runs[grids[-1]], base)
            rows.append(row)
            print(
                f"eps = {eps:<5g} G = {g:>5} (cell {cell:.2f} delta): {row['to_finest']:.2e} from G = {grids[-1]}, "
                f"{row['to_finest'] / row['lag_effect']:.2%} of the lag's effect {row['lag_effect']:.2e}",
                flush=True,
            )
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=("timing", "run", "accuracy"), default=["timing", "run", "accuracy"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--grids", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--steps", type=int, default=1000, help="steps of the J = 10^6 run")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    env = _common.environment()
    today = os.path.join(args.out or _common.RESULTS, f"chemical-{env['device']}-{env['date']}.json")
    payload = {}
    if os.path.exists(today):  # --only updates its parts of today's file
        with open(today) as f:
            payload = {k: v for k, v in json.load(f).items() if k in ("timing", "run", "accuracy")}
    if "timing" in args.only:
        rows = []
        for n in args.sizes:
            elliptic = per_step(n, 0.0, None)
            for g in args.grids:
                parabolic = per_step(n, EPS, g)
                rows.append(dict(n_particles=n, field_grid=g, elliptic_s=elliptic, parabolic_s=parabolic))
                print(
                    f"J = {n:>8}  G = {g:>5}: elliptic {elliptic * 1e3:8.2f} ms/step, parabolic "
                    f"{parabolic * 1e3:8.2f} ms/step ({parabolic / elliptic:.2f}x)",
                    flush=True,
                )
        payload["timing"] = dict(eps=EPS, d=2, steps_per_timing=STEPS_PER_TIMING, rows=rows)
    if "run" in args.only:
        n, times = 1_000_000, (args.steps * ipm.DEFAULT_DT,)
        t0 = time.perf_counter()
        traj = ksdp.simulate(jax.random.key(0), ksdp.Params(eps=EPS), times=times, n_particles=n)
        traj.particles.block_until_ready()
        wall = time.perf_counter() - t0
        reach = float(traj.field_reach)
        payload["run"] = dict(n_particles=n, d=2, steps=args.steps, eps=EPS, wall_s=wall, field_reach=reach)
        print(f"J = 10^6, 2D, eps = {EPS}, {args.steps} steps: {wall:.1f} s (field reach {reach:.2f})")
    if "accuracy" in args.only:
        payload["accuracy"] = accuracy()
    _common.save("chemical", payload, args.out)


if __name__ == "__main__":
    main()
