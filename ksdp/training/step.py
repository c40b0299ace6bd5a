"""One mini-batch of training (fresh samples, their matching, rounds of Adam steps and sweeps), jitted,
on one device or split over the parameter sets of a device mesh."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from ksdp import model as _model
from ksdp import parallel as _parallel
from ksdp import transport as _transport
from ksdp.initial import uniform_ball
from ksdp.training.config import TrainConfig, TrainState, hyperparameters, initial_perm, optimizer, structure
from ksdp.training.losses import debiased_objective, fit_cost, radial_objective, radial_quantiles


def _minibatch(state: TrainState, targets, eta, hyper, model_cfg, cfg: TrainConfig, axis: str | None = None):
    """One mini-batch: fresh samples, then ``K / L`` rounds of a matching renewal and ``L`` Adam steps.

    ``cfg`` is the config's `structure` (static), ``hyper`` its `hyperparameters` (traced).

    With ``axis`` (inside ``shard_map``), ``targets``, ``eta`` and ``state.perm`` are this device's
    slice of the parameter sets; every random draw is the one the unsharded call makes for those
    sets, and the loss and gradient are summed over the mesh axis, so the step equals the
    unsharded step to round-off.
    """
    n_local, n_particles, d = targets.shape
    n = cfg.n_samples
    if axis is None:
        n_sets, index, sets = n_local, jnp.arange(n_local), None
    else:
        n_sets = n_local * jax.lax.axis_size(axis)
        index = jax.lax.axis_index(axis) * n_local + jnp.arange(n_local)
        sets = (index, n_sets)
    key, k_x, k_y, k_rounds = jax.random.split(state.key, 4)
    x = uniform_ball(k_x, n_sets * n, d).reshape(n_sets, n, d)[index]
    pick = jax.vmap(lambda k: jax.random.choice(k, n_particles, (n,), replace=False))(
        jax.random.split(k_y, n_sets)[index]
    )
    y = jnp.take_along_axis(targets, pick[..., None], axis=1)
    opt = optimizer(cfg, hyper)
    if cfg.debias:  # a second, independent batch of sources (its key leaves the paper's draws as they were)
        x_self = uniform_ball(jax.random.fold_in(k_x, 1), n_sets * n, d).reshape(n_sets, n, d)[index]

    def match(k, params, perm, n_sweeps):
        """``n_sweeps`` (traced) sweeps of the round's matching(s), from ``perm``."""
        # the targets' matching: of the sources (it does not depend on the network), or of f(x); where
        # f(x) goes unused, the compiler drops it
        fx = _model.apply(model_cfg, params, x, eta)
        if not cfg.match_sources:
            lead = fx
        elif cfg.min_min_after:  # from that step on, the min-min's matching
            lead = jnp.where(state.step >= hyper["min_min_after"], fx, x)
        else:
            lead = x
        refine = partial(_transport.refine_for, n_sweeps=n_sweeps, block=cfg.block)
        if not cfg.debias:
            return refine(k, lead, y, perm, sets=sets)
        # and the self term's, f(x) to f(x'): the two as one batch of 2 R problems (one compiled solver),
        # their keys those of a batch of 2 R sets, the self term's the second R
        a = jnp.concatenate([lead, fx])
        b = jnp.concatenate([y, _model.apply(model_cfg, params, x_self, eta)])
        both = None if sets is None else (jnp.concatenate([index, index + n_sets]), 2 * n_sets)
        p = refine(k, a, b, jnp.concatenate([perm[:, 0], perm[:, 1]]), sets=both)
        return jnp.stack([p[:n_local], p[n_local:]], 1)

    if cfg.radial_weight:
        quantiles = radial_quantiles(targets)

    def objective(q, perm):
        if cfg.debias:
            fx = _model.apply(model_cfg, q, x, eta)
            fs = _model.apply(model_cfg, q, x_self, eta)
            cap = hyper["local_cap"] if cfg.local_cap else 0.0
            value, cost = debiased_objective(fx, fs, y, perm[:, 0], perm[:, 1], cap)
            generated = jnp.concatenate([fx, fs], axis=-2)
        else:
            generated = _model.apply(model_cfg, q, x, eta)
            value = cost = fit_cost(generated, y, perm)
        if cfg.radial_weight:
            value = value + hyper["radial_weight"] * radial_objective(generated, quantiles)
        return value, cost

    def loss_and_grad(params, perm):
        (_, cost), grads = jax.value_and_grad(objective, has_aux=True)(params, perm)
        if axis is None:
            return cost, grads
        # this device's share of the mean over all sets, summed over the mesh: the global loss/gradient
        return jax.lax.psum(jax.tree_util.tree_map(lambda a: a * (n_local / n_sets), (cost, grads)), axis)

    keep, new = hyper["ema_decay"], hyper["ema_new"]

    def one_round(carry, inp):
        """A renewal of the matching (the fresh mini-batch's first, from the identity, with
        ``initial_sweeps``; then ``sweeps`` from the last), then ``L`` Adam steps against it."""
        params, opt_state, ema, perm = carry
        k, first = inp
        if cfg.initial_sweeps or cfg.sweeps:
            perm = match(k, params, perm, jnp.where(first, cfg.initial_sweeps, cfg.sweeps))

        def adam_step(c, _):
            params, opt_state, ema = c
            value, grads = loss_and_grad(params, perm)
            updates, opt_state = opt.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            ema = jax.tree_util.tree_map(lambda e, p: keep * e + new * p, ema, params)
            return (params, opt_state, ema), value

        (params, opt_state, ema), losses = jax.lax.scan(
            adam_step, (params, opt_state, ema), None, length=cfg.renew_every
        )
        return (params, opt_state, ema, perm), losses

    n_rounds = cfg.resample_every // cfg.renew_every
    rounds = (jax.random.split(k_rounds, n_rounds), jnp.arange(n_rounds) == 0)
    start = (state.params, state.opt_state, state.ema, initial_perm(cfg, n_local))
    (params, opt_state, ema, perm), losses = jax.lax.scan(one_round, start, rounds)
    new = TrainState(params, opt_state, perm, state.step + cfg.resample_every, key, ema)
    return new, losses.reshape(-1)


_minibatch_jit = jax.jit(_minibatch, static_argnums=(4, 5))


def mesh_split(mesh, axis: str | None, n_sets: int) -> str:
    """The mesh axis to split ``n_sets`` parameter sets over (``axis``, default the mesh's only one);
    raises ``ValueError`` unless ``n_sets`` is a multiple of its devices. `train` checks it before any work."""
    axis, n_dev = _parallel.mesh_axis(mesh, axis)
    _parallel.check_divisible(n_sets, n_dev, "the number of parameter sets R", "train on a multiple of the devices")
    return axis


def _minibatch_mesh(mesh, axis: str | None, n_sets: int):
    """The jitted, sharded mini-batch of `train`: ``fn(state, targets, eta, model_cfg, cfg)``.

    ``targets [R, J, d]``, ``eta [R, p]`` and ``state.perm [R, N]`` are split along ``R = n_sets``
    (`mesh_split`); the network and optimiser state are replicated.
    """
    axis = mesh_split(mesh, axis, n_sets)
    return lambda state, targets, eta, hyper, model_cfg, cfg: _minibatch_sharded(
        state, targets, eta, hyper, model_cfg, cfg, mesh, axis
    )


@partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _minibatch_sharded(state, targets, eta, hyper, model_cfg, cfg, mesh, axis):
    state_spec = TrainState(P(), P(), P(axis), P(), P(), P())
    fn = partial(_minibatch, model_cfg=model_cfg, cfg=cfg, axis=axis)
    return jax.shard_map(
        fn, mesh=mesh, in_specs=(state_spec, P(axis), P(axis), P()), out_specs=(state_spec, P()), check_vma=False
    )(state, targets, eta, hyper)


def train_minibatch(state: TrainState, targets, eta, model_cfg, cfg: TrainConfig, *, mesh=None, axis=None):
    """One mini-batch of `train`, jitted: fresh samples, then ``K / L`` rounds of a renewal of their
    matching (``cfg.initial_sweeps`` block sweeps from the identity in the first round, ``cfg.sweeps``
    from the last matching after it) and ``L`` Adam steps against it.

    `train` calls it once per mini-batch; it is public so that a loop of your own (or a benchmark)
    runs exactly the step `train` runs. One compiled program serves every call with the same shapes,
    model config and config `structure`: the learning rate, the moving average, the decay's length,
    the cap and the radial weight are traced (`TRACED`), so any run length reuses it.

    Args:
      state: `TrainState` (from `init_state`, or a previous call).
      targets: ``[R, J, d]`` and ``eta``: ``[R, p]``, as `check_inputs` returns them.
      eta: see ``targets``.
      model_cfg: `ksdp.model.ModelConfig` (static).
      cfg: `TrainConfig` (static).
      mesh: a `jax.sharding.Mesh` to split the ``R`` sets across (as in `train`); ``axis`` names its axis.
      axis: see ``mesh``.

    Returns:
      ``(new state, losses [cfg.resample_every])``: the matched cost before each Adam step.
    """
    hyper, static = hyperparameters(cfg), structure(cfg)
    if mesh is None:
        return _minibatch_jit(state, targets, eta, hyper, model_cfg, static)
    return _minibatch_mesh(mesh, axis, targets.shape[0])(state, targets, eta, hyper, model_cfg, static)
