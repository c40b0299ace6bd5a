"""Speed-up of the sharded paths (ksdp.parallel) on 1, 2 and 4 devices, on fixed problems.

    python -m benchmarks.scaling [--devices 1 2 4] [--particles 4096] [--sets 8]

Three problems, each timed on a mesh of the first n devices, for every n in ``--devices``:
a parameter sweep (``ksdp.sweep(mesh=)``, P = ``--sets`` runs of J = 1024 for 20 steps), one
particle-sharded simulation (``ksdp.simulate(mesh=)``, J = ``--particles``, 20 steps, ring and
all-gather), and one training mini-batch (``ksdp.train(mesh=)``, R = ``--sets`` sets of N = 1000, 200
Adam steps). The baseline of each row is the same call on one device in the same run; every result
is checked against it (max abs difference reported).

On a CPU without several devices the script forces 4 host devices (it re-executes itself with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``). Those devices share the machine's cores, so
the CPU figures check that the sharded programs run and agree, not that they scale; on a machine
with several GPUs the same command measures real scaling.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

FORCE = "--xla_force_host_platform_device_count=4"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--particles", type=int, default=4096)
    ap.add_argument("--sets", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import jax

    if (
        jax.default_backend() == "cpu"
        and jax.device_count() < max(args.devices)
        and FORCE not in os.environ.get("XLA_FLAGS", "")
    ):
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + FORCE).strip())
        cmd = [sys.executable, "-m", "benchmarks.scaling"] + (sys.argv[1:] if argv is None else list(argv))
        print(f"re-running with {FORCE} (CPU devices are simulated)", flush=True)
        subprocess.run(cmd, env=env, check=True)
        return None
    return _measure(args)


def _measure(args):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import ksdp
    from benchmarks import _common
    from ksdp import parallel
    from ksdp import training as T

    if max(args.devices) > jax.device_count():
        raise SystemExit(f"asked for {max(args.devices)} devices, JAX sees {jax.device_count()}.")
    times = (20 * ksdp.ipm.DEFAULT_DT,)
    amps = ksdp.Params(flow=jnp.linspace(1.0, 100.0, args.sets))
    etas = jnp.linspace(0.0, 1.0, args.sets)
    targets = jax.random.normal(jax.random.key(0), (args.sets, 2000, 2)) * (0.2 + 0.3 * etas)[:, None, None]
    mc = ksdp.make_config(2, etas)
    tc = ksdp.TrainConfig.paper(n_samples=1000, resample_every=200, renew_every=50, sweeps=4, initial_sweeps=20)
    targets, eta_n = T.check_inputs(mc, tc, targets, etas)
    state = T.init_state(jax.random.key(1), mc, tc, args.sets)

    def problems(mesh):
        return {
            "sweep": lambda: (
                ksdp.sweep(jax.random.key(2), amps, times, n_particles=1024, flow="laminar2d", mesh=mesh).particles
            ),
            "simulate-ring": lambda: (
                ksdp.simulate(
                    jax.random.key(3), ksdp.Params(), times, n_particles=args.particles, mesh=mesh, method="ring"
                ).particles
            ),
            "simulate-allgather": lambda: (
                ksdp.simulate(
                    jax.random.key(3), ksdp.Params(), times, n_particles=args.particles, mesh=mesh, method="allgather"
                ).particles
            ),
            "train-minibatch": lambda: T.train_minibatch(state, targets, eta_n, mc, tc, mesh=mesh)[1],
        }

    reference = {name: np.asarray(fn()) for name, fn in problems(None).items()}
    rows = []
    print(f"{'problem':>20} {'devices':>7} {'seconds':>9} {'speed-up':>8} {'max |diff|':>10}")
    for name in reference:
        base = None
        for n in args.devices:
            fn = problems(parallel.make_mesh(n))[name]
            out = np.asarray(fn())
            t = _common.timeit(lambda: jax.block_until_ready(fn()), repeat=2, min_time=0.5)
            base = t if base is None else base
            diff = float(np.max(np.abs(out - reference[name])))
            rows.append({"problem": name, "devices": n, "seconds": t, "speedup_vs_1": base / t, "max_abs_diff": diff})
            print(f"{name:>20} {n:>7} {t:>9.4f} {base / t:>8.2f} {diff:>10.2e}", flush=True)
    note = (
        "forced host devices sharing the CPU's cores: a correctness-of-scaling run, not a speed-up"
        if jax.default_backend() == "cpu"
        else "separate accelerators"
    )
    return _common.save(
        "scaling", {"devices_kind": note, "particles": args.particles, "sets": args.sets, "rows": rows}, args.out
    )


if __name__ == "__main__":
    main()
