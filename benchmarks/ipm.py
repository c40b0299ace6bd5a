"""Pair interactions per second of the ksdp all-pairs drift against a vectorised NumPy baseline.

    python -m benchmarks.ipm [--sizes 1000 4000 16000] [--steps 100]

For each J, d in {2, 3} and kernel in {"paper", "blob"}: one drift evaluation (J^2 pairs) by
``ksdp.drifts.pair_sum`` (jitted, float32) and by NumPy broadcasting ``[n, 1, d] - [1, J, d]`` in row
chunks (float32, so the ratio compares like with like). Then a whole simulation, J = 10,000 for
``--steps`` Euler steps with the direct drift (the GPU goal is 1000 steps in under 2 s; the
particle mesh has its own benchmark, ``benchmarks/particle_mesh.py``), and the cost of its numerical
health checks (`ksdp.Trajectory.health`, ``flow_health``, ``step_bias``, with the finiteness check) against
the same Euler scan without them. Last, what a batch of parameter sets costs per run: ``ksdp.sweep`` of one and of two
sets against ``ksdp.simulate`` of the same run, and against ``jax.vmap`` of ``simulate`` over one set
(how ``sweep`` ran a one-set batch before it took the unbatched program), at ks2d-time's quick size
(J = 2000), and the default tile of the all-pairs sum against a fixed one (``--batch-only`` runs these
two parts alone). JSON under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import ksdp
from benchmarks import _common
from ksdp import drifts, ipm


def numpy_pair_sum(x, delta, kernel, chunk=1024):
    """The baseline: vectorised NumPy, all pairs, rows in chunks to bound memory."""
    n, d = x.shape
    out = np.empty_like(x)
    dl2 = np.float32(delta * delta)
    for s in range(0, n, chunk):
        z = x[s : s + chunk, None, :] - x[None, :, :]
        r2 = np.einsum("ijk,ijk->ij", z, z)
        ok = r2 > 0
        r2s = np.where(ok, r2, np.float32(1))
        if d == 2:
            phi = (
                1 / (2 * np.pi * (r2s + dl2))
                if kernel == "blob"
                else (1 / (r2s + dl2) + dl2 * np.log(r2s) / (r2s + dl2) ** 2) / (2 * np.pi)
            )
        else:
            phi = (
                1 / (4 * np.pi * (r2s + dl2) ** 1.5)
                if kernel == "blob"
                else (r2s - dl2) / (4 * np.pi * np.sqrt(r2s) * (r2s + dl2) ** 2)
            )
        phi = np.where(ok, phi, 0).astype(np.float32)
        out[s : s + chunk] = np.einsum("ijk,ij->ik", z, phi)
    return out


def batch_cost(n_particles: int = 2000, steps: int = 300) -> dict:
    """Seconds per run of `ksdp.sweep` over one and two parameter sets against `ksdp.simulate` (best of 3)."""
    times = tuple(k * steps * ipm.DEFAULT_DT / 3 for k in (1, 2, 3))
    key = jax.random.key(0)
    one = ksdp.Params(mass=jnp.array([ipm.DEFAULT_MASS]))
    two = ksdp.Params(mass=jnp.array([ipm.DEFAULT_MASS] * 2))
    vmapped = jax.jit(
        jax.vmap(
            lambda k, m: ksdp.simulate(k, ksdp.Params(mass=m), times, n_particles=n_particles, check=False).particles
        )
    )
    cases = {
        "simulate": lambda: ksdp.simulate(key, ksdp.Params(), times, n_particles=n_particles).particles,
        "sweep_P1": lambda: ksdp.sweep(key, one, times, n_particles=n_particles).particles,
        "sweep_P2": lambda: ksdp.sweep(key, two, times, n_particles=n_particles).particles,
        "vmap_simulate_P1": lambda: vmapped(jax.random.split(key, 1), one.mass),
    }
    runs = {"simulate": 1, "sweep_P1": 1, "sweep_P2": 2, "vmap_simulate_P1": 1}
    per_run = {}
    for name, fn in cases.items():
        per_run[name] = _common.timeit(lambda f=fn: f().block_until_ready(), repeat=3, min_time=0.0) / runs[name]
    base = per_run["simulate"]
    row = {"J": n_particles, "steps": steps, "seconds_per_run": per_run}
    row["ratio_to_simulate"] = {name: t / base for name, t in per_run.items()}
    print(f"seconds per run, J={n_particles}, {steps} steps (ratio to simulate of the same run):")
    for name, t in per_run.items():
        print(f"  {name:>17}: {t:.3f} s ({t / base:.2f}x)")
    return row


def tile_cost(n_particles: int = 2000, steps: int = 300) -> list[dict]:
    """Seconds per run of `ksdp.sweep` with the default tile (`ksdp.drifts.default_tile`, by J and the
    batch's size) against the former fixed 32 targets, in 2D and 3D, one set and nine (an amplitude
    experiment's batch), best of 3."""
    times = (steps * ipm.DEFAULT_DT,)
    rows = []
    print(f"seconds per run, J={n_particles}, {steps} steps: default tile against 32")
    for d, flow in ((2, "laminar2d"), (3, "kolmogorov3d")):
        for p in (1, 9):
            params = ksdp.Params(flow=jnp.asarray(np.geomspace(1.0, 100.0, p), jnp.float32))
            per_run = {}
            for name, tile in (("default", None), ("fixed_32", 32)):
                fn = lambda t=tile: ksdp.sweep(
                    jax.random.key(0), params, times, n_particles=n_particles, d=d, flow=flow, drift="direct", tile=t
                ).particles.block_until_ready()
                per_run[name] = _common.timeit(fn, repeat=3, min_time=0.0) / p
            tile = drifts.default_tile(n_particles, p)
            rows.append({"d": d, "P": p, "default_tile": tile, "seconds_per_run": per_run})
            t_default, t_32 = per_run["default"], per_run["fixed_32"]
            print(f"  d={d} P={p}: tile {tile} {t_default:.3f} s, tile 32 {t_32:.3f} s ({t_32 / t_default:.2f}x)")
    return rows


def main(argv=None):
    gpu = jax.default_backend() != "cpu"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000] + ([64000, 100000] if gpu else []))
    ap.add_argument("--numpy-max", type=int, default=16000, help="largest J for the NumPy baseline")
    ap.add_argument("--steps", type=int, default=1000 if gpu else 100, help="Euler steps of the J=10k run")
    ap.add_argument("--batch-only", action="store_true", help="only the cost per run of a batch of parameter sets")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.batch_only:
        return _common.save("ipm-batch", {"batch": batch_cost(), "tile": tile_cost()}, args.out)

    delta = ipm.DEFAULT_DELTA
    rows = []
    print(f"{'J':>7} {'d':>2} {'kernel':>6} {'ksdp pairs/s':>13} {'numpy pairs/s':>14} {'ratio':>7}")
    for n in args.sizes:
        for d in (2, 3):
            x = ksdp.uniform_ball(jax.random.key(n + d), n, d)
            for kernel in ("paper", "blob"):
                f = jax.jit(lambda y, k=kernel: drifts.pair_sum(y, y, delta, kernel=k))
                t_ksdp = _common.timeit(lambda: f(x).block_until_ready())
                row = {"J": n, "d": d, "kernel": kernel, "ksdp_s": t_ksdp, "ksdp_pairs_per_s": n * n / t_ksdp}
                if n <= args.numpy_max:
                    xn = np.asarray(x, np.float32)
                    t_np = _common.timeit(lambda: numpy_pair_sum(xn, delta, kernel), repeat=1, min_time=0.0)
                    row.update(numpy_s=t_np, numpy_pairs_per_s=n * n / t_np, ratio=t_np / t_ksdp)
                rows.append(row)
                print(
                    f"{n:>7} {d:>2} {kernel:>6} {row['ksdp_pairs_per_s']:>13.3g} "
                    f"{row.get('numpy_pairs_per_s', float('nan')):>14.3g} {row.get('ratio', float('nan')):>7.1f}",
                    flush=True,
                )

    n_sim, times = 10_000, (args.steps * ipm.DEFAULT_DT,)
    run = lambda: ksdp.simulate(
        jax.random.key(0), ksdp.Params(), times, n_particles=n_sim, drift="direct"
    ).particles.block_until_ready()
    run()
    t0 = time.perf_counter()
    run()
    t_sim = time.perf_counter() - t0
    sim = {"J": n_sim, "steps": args.steps, "seconds": t_sim, "seconds_per_1000_steps": t_sim * 1000 / args.steps}
    print(
        f"simulate J={n_sim}, {args.steps} steps: {t_sim:.3f} s ({sim['seconds_per_1000_steps']:.2f} s per 1000 steps)"
    )

    # the same Euler--Maruyama scan without the health and finiteness tracking: the checks' cost
    def plain(key, n_steps):
        init_key, noise_key = jax.random.split(key)
        x = ksdp.uniform_ball(init_key, n_sim, 2)
        scale = jnp.sqrt(2.0 * ipm.DEFAULT_DT)

        def step(x, n):
            noise = jax.random.normal(jax.random.fold_in(noise_key, n), x.shape, x.dtype)
            return x + ipm.DEFAULT_DT * drifts.velocity(x, ksdp.Params()) + scale * noise, None

        return jax.lax.scan(step, x, jnp.arange(1, n_steps + 1))[0]

    plain_jit = jax.jit(plain, static_argnums=1)
    plain_jit(jax.random.key(0), args.steps).block_until_ready()
    checked, unchecked = [t_sim], []
    for _ in range(2):  # alternate the two, best of three each: the machine's load drifts
        t0 = time.perf_counter()
        plain_jit(jax.random.key(0), args.steps).block_until_ready()
        unchecked.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run()
        checked.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    plain_jit(jax.random.key(0), args.steps).block_until_ready()
    unchecked.append(time.perf_counter() - t0)
    overhead = min(checked) / min(unchecked) - 1
    sim.update(checked_seconds=checked, unchecked_seconds=unchecked, health_overhead=overhead)
    print(
        f"  the same scan without the health and finiteness checks: {min(unchecked):.3f} s against "
        f"{min(checked):.3f} s (best of 3 each): the checks cost {100 * overhead:+.1f}% of a step"
    )
    batch = batch_cost()
    return _common.save("ipm", {"drift": rows, "simulate": sim, "batch": batch, "delta": delta}, args.out)


if __name__ == "__main__":
    main()
