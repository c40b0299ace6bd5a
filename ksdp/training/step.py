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
from ksdp.training.config import TrainConfig, TrainState, initial_perm, optimizer
from ksdp.training.losses import debiased_objective, fit_cost, radial_objective, radial_quantiles


def _minibatch(state: TrainState, targets, eta, model_cfg, cfg: TrainConfig, axis: str | None = None):
    """One mini-batch: fresh samples, initial matching, then ``K / L`` rounds of Adam + sweeps.

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
    key, k_x, k_y, k_match, k_rounds = jax.random.split(state.key, 5)
    x = uniform_ball(k_x, n_sets * n, d).reshape(n_sets, n, d)[index]
    pick = jax.vmap(lambda k: jax.random.choice(k, n_particles, (n,), replace=False))(
        jax.random.split(k_y, n_sets)[index]
    )
    y = jnp.take_along_axis(targets, pick[..., None], axis=1)
    opt = optimizer(cfg)
    if cfg.debias:  # a second, independent batch of sources (its key leaves the paper's draws as they were)
        x_self = uniform_ball(jax.random.fold_in(k_x, 1), n_sets * n, d).reshape(n_sets, n, d)[index]

    def refine(k, a, b, perm, n_sweeps):
        return _transport.refine(k, a, b, perm, n_sweeps=n_sweeps, block=cfg.block, sets=sets)[0]

    def match(k, params, perm, n_sweeps):
        if n_sweeps == 0:
            return perm
        # the targets' matching: of the sources (it does not depend on the network), or of f(x); where
        # f(x) goes unused, the compiler drops it
        fx = _model.apply(model_cfg, params, x, eta)
        if not cfg.match_sources:
            lead = fx
        elif cfg.min_min_after:  # from that step on, the min-min's matching
            lead = jnp.where(state.step >= cfg.min_min_after, fx, x)
        else:
            lead = x
        if not cfg.debias:
            return refine(k, lead, y, perm, n_sweeps)
        k1, k2 = jax.random.split(k)
        # the self term's pairs: f(x) matched to f(x')
        a, b = fx, _model.apply(model_cfg, params, x_self, eta)
        return jnp.stack([refine(k1, lead, y, perm[:, 0], n_sweeps), refine(k2, a, b, perm[:, 1], n_sweeps)], 1)

    if cfg.radial_weight:
        quantiles = radial_quantiles(targets)

    def objective(q, perm):
        if cfg.debias:
            fx = _model.apply(model_cfg, q, x, eta)
            fs = _model.apply(model_cfg, q, x_self, eta)
            value, cost = debiased_objective(fx, fs, y, perm[:, 0], perm[:, 1], cfg.local_cap)
            generated = jnp.concatenate([fx, fs], axis=-2)
        else:
            generated = _model.apply(model_cfg, q, x, eta)
            value = cost = fit_cost(generated, y, perm)
        if cfg.radial_weight:
            value = value + cfg.radial_weight * radial_objective(generated, quantiles)
        return value, cost

    def loss_and_grad(params, perm):
        (_, cost), grads = jax.value_and_grad(objective, has_aux=True)(params, perm)
        if axis is None:
            return cost, grads
        # this device's share of the mean over all sets, summed over the mesh: the global loss/gradient
        return jax.lax.psum(jax.tree_util.tree_map(lambda a: a * (n_local / n_sets), (cost, grads)), axis)

    perm = match(k_match, state.params, initial_perm(cfg, n_local), cfg.initial_sweeps)
    decay = cfg.ema_decay

    def one_round(carry, k):
        params, opt_state, ema, perm = carry

        def adam_step(c, _):
            params, opt_state, ema = c
            value, grads = loss_and_grad(params, perm)
            updates, opt_state = opt.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
            return (params, opt_state, ema), value

        (params, opt_state, ema), losses = jax.lax.scan(
            adam_step, (params, opt_state, ema), None, length=cfg.renew_every
        )
        return (params, opt_state, ema, match(k, params, perm, cfg.sweeps)), losses

    n_rounds = cfg.resample_every // cfg.renew_every
    (params, opt_state, ema, perm), losses = jax.lax.scan(
        one_round, (state.params, state.opt_state, state.ema, perm), jax.random.split(k_rounds, n_rounds)
    )
    new = TrainState(params, opt_state, perm, state.step + cfg.resample_every, key, ema)
    return new, losses.reshape(-1)


_minibatch_jit = jax.jit(_minibatch, static_argnums=(3, 4))


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
    return lambda state, targets, eta, model_cfg, cfg: _minibatch_sharded(
        state, targets, eta, model_cfg, cfg, mesh, axis
    )


@partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _minibatch_sharded(state, targets, eta, model_cfg, cfg, mesh, axis):
    state_spec = TrainState(P(), P(), P(axis), P(), P(), P())
    fn = partial(_minibatch, model_cfg=model_cfg, cfg=cfg, axis=axis)
    return jax.shard_map(
        fn, mesh=mesh, in_specs=(state_spec, P(axis), P(axis)), out_specs=(state_spec, P()), check_vma=False
    )(state, targets, eta)


def train_minibatch(state: TrainState, targets, eta, model_cfg, cfg: TrainConfig, *, mesh=None, axis=None):
    """One mini-batch of `train`, jitted: fresh samples, their matching, then ``K / L`` rounds of
    ``L`` Adam steps each followed by ``cfg.sweeps`` block sweeps of the matching.

    `train` calls it once per mini-batch; it is public so that a loop of your own (or a benchmark)
    runs exactly the step `train` runs. One compiled program serves every call with the same configs
    and shapes.

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
    if mesh is None:
        return _minibatch_jit(state, targets, eta, model_cfg, cfg)
    return _minibatch_mesh(mesh, axis, targets.shape[0])(state, targets, eta, model_cfg, cfg)
