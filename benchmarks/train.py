"""DeepParticle throughput at the paper's configuration: 8 sets x 2000 particles, 5 x 30 network.

    python -m benchmarks.train [--minibatches 2]

Reports training steps per second (Adam steps including the permutation renewals of the paper's
schedule, K = 1000, L = 200), seconds per permutation renewal (one block sweep over all 8 sets,
and a renewal of ``TrainConfig.sweeps`` sweeps), and generated particles per second (10^6 particles).
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

import ksdp
from ksdp import model as M
from ksdp import training as T
from ksdp import transport as TR
from benchmarks import _common


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minibatches", type=int, default=2, help="timed mini-batches of 1000 steps")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    r, j, d = 8, 10_000, 2
    targets = jax.random.normal(jax.random.key(0), (r, j, d)) * jnp.linspace(0.2, 0.6, r)[:, None, None]
    eta = jnp.linspace(0.0, 0.1, r)
    mc = M.make_config(d, eta)
    cfg = T.TrainConfig()  # the paper's N, K, L
    targets, eta = T.check_inputs(mc, cfg, targets, eta)
    state = T.init_state(jax.random.key(1), mc, cfg, r)
    state, _ = T._minibatch_jit(state, targets, eta, mc, cfg)  # compile
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(args.minibatches):
        state, losses = T._minibatch_jit(state, targets, eta, mc, cfg)
    jax.block_until_ready(losses)
    t_train = time.perf_counter() - t0
    steps_per_s = args.minibatches * cfg.resample_every / t_train

    x = ksdp.uniform_ball(jax.random.key(2), r * cfg.n_samples, d).reshape(r, cfg.n_samples, d)
    y = targets[:, : cfg.n_samples]
    perm = TR.identity(x)
    sweep = jax.jit(lambda k, p: TR.sweep(k, x, y, p, False, block=cfg.block))
    t_sweep = _common.timeit(lambda: sweep(jax.random.key(3), perm).block_until_ready())

    n = 1_000_000
    M.generate(mc, state.params, 0.05, jax.random.key(4), n)
    t0 = time.perf_counter()
    M.generate(mc, state.params, 0.05, jax.random.key(5), n)
    t_gen = time.perf_counter() - t0
    payload = {"sets": r, "n_samples": cfg.n_samples, "network": f"{mc.depth}x{mc.width} {mc.activation}",
               "n_parameters": M.n_parameters(state.params), "train_steps_per_s": steps_per_s,
               "sweep_s": t_sweep, "renewal_s": t_sweep * cfg.sweeps, "sweeps_per_renewal": cfg.sweeps,
               "generated_particles_per_s": n / t_gen, "generate_1M_s": t_gen}
    for k, v in payload.items():
        print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
    return _common.save("train", payload, args.out)


if __name__ == "__main__":
    main()
