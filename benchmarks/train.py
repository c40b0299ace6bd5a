"""DeepParticle throughput at the paper's configuration: 8 sets x 2000 particles, 5 x 30 network.

    python -m benchmarks.train [--minibatches 2]

Reports, each against a baseline measured in the same run:

* training steps per second (Adam steps including the permutation renewals of the paper's schedule,
  K = 1000, L = 200), one jitted ``lax.scan`` per mini-batch; baseline: the same schedule driven from
  Python, one jitted Adam step per call and one jitted renewal per L steps (the loop a user would
  write first);
* seconds per block sweep over all 8 sets (``ksdp.assignment.solve_batch``, blocks batched); baseline: the same
  blocks solved one after another by ``scipy.optimize.linear_sum_assignment``;
* generated particles per second (10^6 particles, chunks of 65,536); baseline: the network applied
  to all 10^6 sources in one un-chunked jitted call.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

import ksdp
from benchmarks import _common
from ksdp import model as M
from ksdp import training as T
from ksdp import transport as TR


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

    # baseline loop: one dispatch per Adam step, one per renewal
    opt = optax.adam(cfg.learning_rate)

    @jax.jit
    def adam_step(params, opt_state, perm):
        loss, g = jax.value_and_grad(lambda q: T.loss_fn(mc, q, x, y, perm, eta))(params)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def renew(k, params, perm):
        return TR.refine(k, M.apply(mc, params, x, eta), y, perm, n_sweeps=cfg.sweeps, block=cfg.block)[0]

    def python_loop(n_steps):
        params, opt_state, p = state.params, state.opt_state, perm
        for i in range(n_steps):
            params, opt_state, loss = adam_step(params, opt_state, p)
            if (i + 1) % cfg.renew_every == 0:
                p = renew(jax.random.key(i), params, p)
        return jax.block_until_ready((params, p))

    python_loop(cfg.renew_every)  # compile
    t0 = time.perf_counter()
    python_loop(cfg.resample_every)
    baseline_steps_per_s = cfg.resample_every / (time.perf_counter() - t0)

    sweep = jax.jit(lambda k, p: TR.sweep(k, x, y, p, False, block=cfg.block))
    t_sweep = _common.timeit(lambda: sweep(jax.random.key(3), perm).block_until_ready())
    xn, yn = np.asarray(x, np.float64), np.asarray(y, np.float64)
    blocks = [np.asarray(TR.block_rows(jax.random.key(10 + s), x[s], cfg.block, False)[0]) for s in range(r)]

    def scipy_sweep():  # the same work: every block of every set, one linear_sum_assignment each
        for s in range(r):
            for rows in blocks[s]:
                c = ((xn[s, rows, None] - yn[s, None, rows]) ** 2).sum(-1)  # identity start: columns = rows
                scipy.optimize.linear_sum_assignment(c)

    t_sweep_scipy = _common.timeit(scipy_sweep, repeat=2, min_time=0.2)

    n = 1_000_000
    M.generate(mc, state.params, 0.05, jax.random.key(4), n)
    t0 = time.perf_counter()
    M.generate(mc, state.params, 0.05, jax.random.key(5), n)
    t_gen = time.perf_counter() - t0
    M.generate(mc, state.params, 0.05, jax.random.key(4), n, chunk=None)
    t0 = time.perf_counter()
    M.generate(mc, state.params, 0.05, jax.random.key(5), n, chunk=None)  # a host array: synchronous
    t_gen_whole = time.perf_counter() - t0
    payload = {
        "sets": r,
        "n_samples": cfg.n_samples,
        "network": f"{mc.depth}x{mc.width} {mc.activation}",
        "n_parameters": M.n_parameters(state.params),
        "train_steps_per_s": steps_per_s,
        "baseline_python_loop_steps_per_s": baseline_steps_per_s,
        "train_ratio_vs_python_loop": steps_per_s / baseline_steps_per_s,
        "sweep_s": t_sweep,
        "sweep_scipy_per_block_s": t_sweep_scipy,
        "sweep_ratio_vs_scipy_per_block": t_sweep_scipy / t_sweep,
        "renewal_s": t_sweep * cfg.sweeps,
        "sweeps_per_renewal": cfg.sweeps,
        "generated_particles_per_s": n / t_gen,
        "generate_1M_s": t_gen,
        "generate_1M_unchunked_s": t_gen_whole,
        "generate_ratio_vs_unchunked": t_gen_whole / t_gen,
    }
    for k, v in payload.items():
        print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
    return _common.save("train", payload, args.out)


if __name__ == "__main__":
    main()
