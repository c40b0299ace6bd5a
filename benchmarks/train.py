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
  to all 10^6 sources in one un-chunked jitted call;
* with ``--pool-sizes J1 J2 ...``, what a training pool costs: seconds per mini-batch of
  ks2d-time's paper configuration (its own `ksdp.experiments.run.configs`: 8 sets, N = 2000,
  K = L = 50, the debiased loss, the radial term) on J particles per set (a pool of J / 10^4 runs),
  against J = 10^4 (one run) measured in the same process; and, alone, the two steps of a
  mini-batch that read the whole pool: the radial quantiles' sort and the draw of N targets per set
  without replacement (a permutation of the pool, as training draws them; and, as a candidate, the
  indices of the N largest of J uniform keys, ``lax.top_k``).
* with ``--radial-only`` (alone, saved as ``train-radial-...``), what the radial term costs: seconds per
  mini-batch of kolmogorov3d-amplitude's quick configuration (its own `ksdp.experiments.run.configs`: one
  set per training value, each its 30-run pool, N = 2000, the radial term) against the same mini-batch
  without the term; and the term's value and gradient alone on 2N generated points per set
  (`ksdp.training.radial_objective`, which sorts the distances) against the same term from the
  distances' ranks (two argsorts, its earlier form), in the same process.
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
    ap.add_argument(
        "--pool-sizes",
        type=int,
        nargs="*",
        default=[],
        help="particles per set J of the training-pool measurement, e.g. 100000 400000 (none: skip it)",
    )
    ap.add_argument("--radial-only", action="store_true", help="only what the radial term costs")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.radial_only:
        return _common.save("train-radial", radial_costs(), args.out)
    if any(j < 2000 for j in args.pool_sizes):
        ap.error(f"--pool-sizes must be >= 2000 (N = 2000 targets are drawn per set), got {args.pool_sizes}")
    r, j, d = 8, 10_000, 2
    targets = jax.random.normal(jax.random.key(0), (r, j, d)) * jnp.linspace(0.2, 0.6, r)[:, None, None]
    eta = jnp.linspace(0.0, 0.1, r)
    mc = M.make_config(d, eta)
    cfg = T.TrainConfig.paper()  # the paper's N, K, L
    targets, eta = T.check_inputs(mc, cfg, targets, eta)
    state = T.init_state(jax.random.key(1), mc, cfg, r)
    state, _ = T.train_minibatch(state, targets, eta, mc, cfg)  # compile
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(args.minibatches):
        state, losses = T.train_minibatch(state, targets, eta, mc, cfg)
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

    sweep = jax.jit(lambda k, p: TR.block_sweep(k, x, y, p, False, block=cfg.block))
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
    M.generate(jax.random.key(4), mc, state.params, 0.05, n)
    t0 = time.perf_counter()
    M.generate(jax.random.key(5), mc, state.params, 0.05, n)
    t_gen = time.perf_counter() - t0
    M.generate(jax.random.key(4), mc, state.params, 0.05, n, chunk=None)
    t0 = time.perf_counter()
    M.generate(jax.random.key(5), mc, state.params, 0.05, n, chunk=None)  # a host array: synchronous
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
    if args.pool_sizes:
        payload["pool"] = pool_costs(args.pool_sizes, repeat=4)
    for k, v in payload.items():
        if k == "pool":
            for row in v:
                print(
                    "  pool "
                    + ", ".join(f"{a} {b:.4g}" if isinstance(b, float) else f"{a} {b}" for a, b in row.items())
                )
            continue
        print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
    return _common.save("train", payload, args.out)


def pool_costs(sizes, repeat: int = 4) -> list[dict]:
    """Seconds per mini-batch of ks2d-time's paper configuration on 8 sets of J particles, per J."""
    from ksdp.experiments import run as RUN
    from ksdp.experiments.specs import EXPERIMENTS

    mc, cfg = RUN.configs(EXPERIMENTS["ks2d-time"], "paper")
    eta = jnp.linspace(0.0, 0.1, 8)
    rows, base = [], None
    for j in [10_000, *[s for s in sizes if s != 10_000]]:
        targets = jax.random.normal(jax.random.key(6), (8, j, 2)) * jnp.linspace(0.2, 0.6, 8)[:, None, None]
        targets, eta_c = T.check_inputs(mc, cfg, targets, eta)
        state = T.init_state(jax.random.key(7), mc, cfg, 8)
        jax.block_until_ready(T.train_minibatch(state, targets, eta_c, mc, cfg))  # compile
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            jax.block_until_ready(T.train_minibatch(state, targets, eta_c, mc, cfg))
            times.append(time.perf_counter() - t0)
        sort = jax.jit(T.radial_quantiles)
        draw = jax.jit(
            lambda k, j=j: jax.vmap(lambda kk: jax.random.choice(kk, j, (cfg.n_samples,), replace=False))(
                jax.random.split(k, 8)
            )
        )
        t_sort = _common.timeit(lambda: sort(targets).block_until_ready(), repeat=3, min_time=0.2)
        t_draw = _common.timeit(lambda: draw(jax.random.key(8)).block_until_ready(), repeat=3, min_time=0.2)
        # the candidate: the N largest of J uniform keys per set, also a uniform draw without replacement
        top = jax.jit(lambda k, j=j: jax.lax.top_k(jax.random.uniform(k, (8, j)), cfg.n_samples)[1])
        t_top = _common.timeit(lambda: top(jax.random.key(8)).block_until_ready(), repeat=3, min_time=0.2)
        row = {
            "particles_per_set": j,
            "runs_per_set": j / 10_000,
            "minibatch_s": float(np.median(times)),
            "minibatch_s_range": f"{min(times):.3f}-{max(times):.3f}",
            "quantile_sort_s": t_sort,
            "target_draw_s": t_draw,
            "target_draw_top_k_s": t_top,
        }
        base = base or row["minibatch_s"]
        row["ratio_vs_one_run"] = row["minibatch_s"] / base
        rows.append(row)
    return rows


def _radial_by_ranks(f, quantiles):
    """The radial term's earlier form: each distance paired with its rank's quantile through two argsorts."""
    r = jnp.sqrt(jnp.sum(f**2, axis=-1) + jnp.finfo(f.dtype).tiny)
    m, j = r.shape[-1], quantiles.shape[-1]
    rank = jnp.argsort(jnp.argsort(jax.lax.stop_gradient(r), axis=-1), axis=-1)
    a, b = divmod(j, 2 * m)
    level = (2 * rank + 1) * a + ((2 * rank + 1) * b) // (2 * m)
    q = jnp.take_along_axis(jax.lax.stop_gradient(quantiles), level, axis=-1)
    return jnp.mean((r - q) ** 2)


def radial_costs(repeat: int = 5) -> dict:
    """The radial term's share of a mini-batch, and its value and gradient against its earlier form."""
    from ksdp.experiments import run as RUN
    from ksdp.experiments.specs import EXPERIMENTS

    exp = EXPERIMENTS["kolmogorov3d-amplitude"]
    mc, cfg = RUN.configs(exp, "quick")
    r, j = len(exp.values("quick")[0]), 30 * 2000  # its training values, its pool of 30 runs of J = 2000
    eta = jnp.asarray(exp.values("quick")[0])
    targets = jax.random.normal(jax.random.key(6), (r, j, exp.d)) * 0.3
    targets, eta = T.check_inputs(mc, cfg, targets, eta)
    minibatch = {}
    for label, c in (("with", cfg), ("without", cfg._replace(radial_weight=0.0))):
        state = T.init_state(jax.random.key(7), mc, c, r)
        minibatch[label] = _common.timeit(
            lambda s=state, c=c: jax.block_until_ready(T.train_minibatch(s, targets, eta, mc, c)), repeat=repeat
        )
    f = jax.random.normal(jax.random.key(8), (r, 2 * cfg.n_samples, exp.d)) * 0.3
    quantiles = T.radial_quantiles(targets)
    term = {}
    for label, fn in (("sort", T.radial_objective), ("ranks", _radial_by_ranks)):
        g = jax.jit(jax.value_and_grad(fn))
        term[label] = _common.timeit(lambda g=g: jax.block_until_ready(g(f, quantiles)), repeat=repeat)
    same = float(T.radial_objective(f, quantiles)), float(_radial_by_ranks(f, quantiles))
    payload = {
        "configuration": f"kolmogorov3d-amplitude quick: {r} sets of {j} particles, N = {cfg.n_samples}, d = {exp.d}",
        "minibatch_s": minibatch["with"],
        "minibatch_without_radial_s": minibatch["without"],
        "radial_share_of_minibatch": (minibatch["with"] - minibatch["without"]) / minibatch["with"],
        "term_sort_s": term["sort"],
        "term_ranks_s": term["ranks"],
        "term_ratio_ranks_vs_sort": term["ranks"] / term["sort"],
        "term_values_sort_ranks": same,
    }
    for k, v in payload.items():
        print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
    return payload


if __name__ == "__main__":
    main()
