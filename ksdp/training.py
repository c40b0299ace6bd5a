r"""DeepParticle training: the alternating min--min loop of Algorithm 1 (paper Sec. 3.3--3.4).

$$
\min_\theta \frac1R\sum_{r=1}^R \min_{\gamma_r} \frac1N\sum_i
|f_\theta(x_{i,r};\eta_r) - y_{\gamma_r(i),r}|^2
$$

(eq. 14 averaged over the ``R`` parameter sets, so the learning rate does not depend on ``R``).

One **mini-batch** (``resample_every = K`` steps) draws fresh sources ``x`` from the initial law
and ``N`` targets ``y`` from each set's particles, matches them (``initial_sweeps`` block
sweeps from the identity), then alternates ``renew_every = L`` Adam steps on ``theta`` with
``sweeps`` block sweeps on every ``gamma_r`` (all sets batched). The permutations are integer data:
the gradient flows through the matched cost only (Danskin), the matching under ``stop_gradient``.

A mini-batch is one jitted call (``lax.scan`` inside), so the loop compiles once whatever the
number of mini-batches. The state is data (`TrainState`); checkpoints are written
atomically after every ``checkpoint_every`` mini-batches and at the end, and `train`
resumes from one exactly (same keys, same result to float32 round-off).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from ksdp import metrics as _metrics
from ksdp import model as _model
from ksdp import parallel as _parallel
from ksdp import storage
from ksdp import transport as _transport
from ksdp._checks import is_permutation
from ksdp.initial import uniform_ball

CHECKPOINT_FORMAT = "ksdp-checkpoint/2"  # /2: the state carries the moving average


class TrainConfig(NamedTuple):
    """Static training settings; the defaults are the paper's (N = 2000, K = 1000, L = 200).

    Attributes:
      n_samples: ``N``, samples per parameter set in a mini-batch.
      resample_every: ``K``, Adam steps per mini-batch.
      renew_every: ``L``, Adam steps between permutation renewals (divides ``K``).
      sweeps: block sweeps per renewal.
      initial_sweeps: block sweeps matching a fresh mini-batch.
      block: assignment block size ``M``.
      learning_rate: Adam step size.
      ema_decay: decay of an exponential moving average of the parameters, used for generation
        (`TrainResult.params`); ``0`` keeps none (the paper).
      decay_steps: cosine decay of the learning rate to 1% of ``learning_rate`` over this many Adam
        steps (then constant); ``0`` keeps it constant (the paper).
      debias: subtract half the matched cost between two independent generated batches, capped
        (see `debiased_objective`), which removes the shrinkage of the min--min loss; ``False`` is
        the paper's loss.
      local_cap: with ``debias``, also cap each self pair at this many times the median self-pair
        cost of its set (`debiased_objective`), so that a stray generated point pays for its
        distance beyond a few particle spacings; ``0`` (default) keeps only the extent's cap.
      match_sources: match the mini-batch's sources ``x``, not the generated points ``f(x)``, to its
        targets: the network regresses onto the optimal coupling of the two samples, whose map does
        not fold (`ksdp.model.folded_fraction`); the renewals refine that matching. ``False`` is
        the paper's min--min. With ``debias`` the self term still matches ``f(x)`` to ``f(x')``
        unless ``match_sources_self`` (an experiment: the debiased loss was derived for the min--min).
      min_min_after: with ``match_sources``, the mini-batches from this Adam step on match the
        generated points instead (the min--min, whose debiased loss is stationary at the target
        law rather than at the coupling's conditional mean); ``0`` (default) never switches. An
        experiment: on ks2d-time it lowered the loss but left the law as shrunk (docs/training.md,
        "The radial term").
      match_sources_self: with ``match_sources`` and ``debias``, the self term pairs ``f(x)`` with
        ``f(x')`` by the matching of the sources ``x`` to ``x'``, mirroring the first term's
        matching of ``x`` to the targets (an experiment; ``False``: by the matching of ``f(x)`` to
        ``f(x')``). On ks2d-time it overshot the second moment late in time and worsened the radial
        KS distance (docs/training.md, "The radial term").
      mirror_self: with ``match_sources`` and ``debias``, a weight ``w`` in ``(0, 1]``: the self term
        pairs ``f(x)`` with ``f(x')`` by the matching of the *sources* ``x`` to the generated points
        ``f(x')`` (the first term's geometry: at the target law that coupling has the law of the
        sources' coupling to the targets), holds ``f(x')`` fixed and weighs ``w`` instead of ``1/2``
        (`debiased_objective`'s ``mirror``); ``0`` (default) keeps the self term as above. An
        experiment: on ks2d-time ``w = 0.5`` left the law as shrunk as the default self term and
        ``w = 0.9`` diverged where the law collapses (docs/training.md, "The radial term").
      radial_weight: a weight ``lambda >= 0`` of a second term, the one-dimensional optimal transport
        between the generated points' distances from the origin and the *whole* training set's
        (`radial_objective`): every generated point of the mini-batch (both batches with ``debias``)
        is paired by rank with the training set's radial quantile, so that the law of ``|f(x)|``
        is fitted against thousands of targets without a sampled coupling's shrinkage. A marginal of
        any law, most telling for a rotation-invariant one; ``0`` (default) adds nothing.
    """

    n_samples: int = 2000
    resample_every: int = 1000
    renew_every: int = 200
    sweeps: int = 10
    initial_sweeps: int = 50
    block: int = 16
    learning_rate: float = 1e-3
    ema_decay: float = 0.0
    decay_steps: int = 0
    debias: bool = False
    local_cap: float = 0.0
    match_sources: bool = False
    min_min_after: int = 0
    match_sources_self: bool = False
    mirror_self: float = 0.0
    radial_weight: float = 0.0


class TrainState(NamedTuple):
    """Everything the loop carries between mini-batches."""

    params: Any
    opt_state: Any
    perm: jax.Array  # [R, N] of the last mini-batch ([R, 2, N] with TrainConfig.debias: targets, self)
    step: jax.Array  # Adam steps done
    key: jax.Array
    ema: Any  # moving average of params (equal to params when TrainConfig.ema_decay == 0)


class TrainingError(RuntimeError):
    """Training produced a non-finite or diverging loss; the last good checkpoint is kept."""


# a loss this many times the best mini-batch mean so far (the first step's, in the first mini-batch)
# stops training: the untrained residual map starts at the squared W2 between the source ball and the
# targets, and a healthy run only lowers it, up to the noise between mini-batches
DIVERGED = 100.0
# lines a callable ``progress`` of `train` gets over a run (plus one at its end)
PROGRESS_LINES = 20


class CheckpointMismatch(ValueError):
    """A checkpoint was written for other training data, key, configs or loss than those given."""


def fingerprint(key, targets, eta, model_cfg: _model.ModelConfig, cfg: TrainConfig) -> str:
    """SHA-256 of what a training run depends on: targets, eta, key and both configs.

    Stored in every checkpoint; `train` resumes only from a checkpoint with the same fingerprint.
    """
    return _fingerprint(key, *check_inputs(model_cfg, cfg, targets, eta), model_cfg, cfg)


def _fingerprint(key, targets, eta, model_cfg, cfg) -> str:
    """`fingerprint` of inputs `check_inputs` has already validated."""
    h = hashlib.sha256()
    if jax.dtypes.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    for a in (targets, eta, key):
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    # the debiased loss changed once (its self term is capped, `debiased_objective`): a checkpoint
    # trained with the uncapped loss is not resumed with the capped one
    loss = ["self term capped"] if cfg.debias else []
    settings = cfg._asdict()
    # added later: off, they leave earlier fingerprints as they were
    for later in ("local_cap", "match_sources", "min_min_after", "match_sources_self", "mirror_self", "radial_weight"):
        if not settings[later]:
            del settings[later]
    h.update(json.dumps([model_cfg.to_dict(), settings, *loss], sort_keys=True).encode())
    return h.hexdigest()


def _optimizer(cfg: TrainConfig):
    if cfg.decay_steps:
        return optax.adam(optax.cosine_decay_schedule(cfg.learning_rate, cfg.decay_steps, alpha=0.01))
    return optax.adam(cfg.learning_rate)


def check_inputs(model_cfg: _model.ModelConfig, cfg: TrainConfig, targets, eta):
    """Validates the training data; returns ``(targets [R, J, d], eta [R, p])`` as float32."""
    targets = jnp.asarray(targets, jnp.float32)
    if targets.ndim != 3:
        raise ValueError(f"targets must be [R, J, d] (R parameter sets of J particles), got {targets.shape}.")
    if targets.shape[-1] != model_cfg.d:
        raise ValueError(f"targets have dimension d={targets.shape[-1]} but the model maps R^{model_cfg.d}.")
    eta = _model.check_eta(model_cfg, eta)
    if eta.ndim != 2 or eta.shape[0] != targets.shape[0]:
        raise ValueError(f"eta must be [R, p] with R={targets.shape[0]} (one per target set), got {eta.shape}.")
    if cfg.n_samples > targets.shape[1]:
        raise ValueError(
            f"n_samples N={cfg.n_samples} exceeds the J={targets.shape[1]} particles per set; "
            f"lower TrainConfig.n_samples or simulate more particles."
        )
    for name in ("n_samples", "resample_every", "renew_every", "sweeps", "initial_sweeps"):
        v = getattr(cfg, name)
        if not isinstance(v, (int, np.integer)) or v < (0 if "sweeps" in name else 1):
            raise ValueError(
                f"TrainConfig.{name} must be a {'non-negative' if 'sweeps' in name else 'positive'} integer, got {v!r}."
            )
    if not isinstance(cfg.block, (int, np.integer)) or cfg.block < 2:
        raise ValueError(
            f"TrainConfig.block (the assignment sub-problem size M) must be an integer >= 2, got {cfg.block!r}."
        )
    if cfg.resample_every % cfg.renew_every:
        raise ValueError(f"renew_every={cfg.renew_every} must divide resample_every={cfg.resample_every}.")
    if not isinstance(cfg.debias, (bool, np.bool_)):
        raise TypeError(f"TrainConfig.debias must be True or False, got {cfg.debias!r}.")
    if not (cfg.learning_rate > 0):
        raise ValueError(f"learning_rate must be positive, got {cfg.learning_rate}.")
    if isinstance(cfg.local_cap, bool) or not (np.isfinite(cfg.local_cap) and cfg.local_cap >= 0):
        raise ValueError(
            f"TrainConfig.local_cap must be a finite number >= 0 (0: off; e.g. 100 times the median self-pair "
            f"cost), got {cfg.local_cap!r}."
        )
    if not isinstance(cfg.match_sources, (bool, np.bool_)):
        raise TypeError(f"TrainConfig.match_sources must be True or False, got {cfg.match_sources!r}.")
    if isinstance(cfg.min_min_after, bool) or not isinstance(cfg.min_min_after, (int, np.integer)):
        raise TypeError(f"TrainConfig.min_min_after must be an integer (an Adam step), got {cfg.min_min_after!r}.")
    if cfg.min_min_after < 0:
        raise ValueError(f"TrainConfig.min_min_after must be >= 0 (0: never switch), got {cfg.min_min_after}.")
    if cfg.min_min_after and not cfg.match_sources:
        raise ValueError(
            "TrainConfig.min_min_after switches the sources' matching to the min-min: set match_sources=True, "
            "or min_min_after=0."
        )
    if not isinstance(cfg.match_sources_self, (bool, np.bool_)):
        raise TypeError(f"TrainConfig.match_sources_self must be True or False, got {cfg.match_sources_self!r}.")
    if cfg.match_sources_self and not (cfg.match_sources and cfg.debias):
        raise ValueError(
            "TrainConfig.match_sources_self matches the debiased loss's self term by the sources: set "
            "match_sources=True and debias=True, or match_sources_self=False."
        )
    if isinstance(cfg.mirror_self, bool) or not isinstance(cfg.mirror_self, (int, float, np.integer, np.floating)):
        raise TypeError(f"TrainConfig.mirror_self must be a number in [0, 1] (0: off), got {cfg.mirror_self!r}.")
    if not (0.0 <= cfg.mirror_self <= 1.0):
        raise ValueError(f"TrainConfig.mirror_self must be in [0, 1] (0: off), got {cfg.mirror_self!r}.")
    if cfg.mirror_self and not (
        cfg.match_sources and cfg.debias and not cfg.match_sources_self and not cfg.min_min_after
    ):
        raise ValueError(
            "TrainConfig.mirror_self pairs the debiased loss's self term by the sources' matching to f(x'): set "
            "match_sources=True, debias=True, match_sources_self=False and min_min_after=0, or mirror_self=0."
        )
    if isinstance(cfg.radial_weight, bool) or not isinstance(cfg.radial_weight, (int, float, np.integer, np.floating)):
        raise TypeError(f"TrainConfig.radial_weight must be a number >= 0 (0: off), got {cfg.radial_weight!r}.")
    if not (np.isfinite(cfg.radial_weight) and cfg.radial_weight >= 0):
        raise ValueError(f"TrainConfig.radial_weight must be a finite number >= 0 (0: off), got {cfg.radial_weight!r}.")
    # the radial term ranks M = N (2N with debias) generated points per set in int32 (radial_objective)
    if cfg.radial_weight and (2 if cfg.debias else 1) * cfg.n_samples > RADIAL_MAX_POINTS:
        raise ValueError(
            f"TrainConfig.radial_weight ranks {'2N' if cfg.debias else 'N'} generated points per set, at most "
            f"{RADIAL_MAX_POINTS}: lower TrainConfig.n_samples (got N={cfg.n_samples}) or set radial_weight=0."
        )
    if cfg.local_cap and not cfg.debias:
        raise ValueError("TrainConfig.local_cap caps the debiased loss's self term: set debias=True, or local_cap=0.")
    if not (0.0 <= cfg.ema_decay < 1.0):
        raise ValueError(f"TrainConfig.ema_decay must be in [0, 1) (0: no moving average), got {cfg.ema_decay!r}.")
    if not isinstance(cfg.decay_steps, (int, np.integer)) or cfg.decay_steps < 0:
        raise ValueError(
            f"TrainConfig.decay_steps must be an integer >= 0 (0: constant rate), got {cfg.decay_steps!r}."
        )
    if not bool(jnp.all(jnp.isfinite(targets))):
        raise ValueError("targets contain non-finite particles.")
    return targets, eta


def _initial_perm(cfg: TrainConfig, n_sets: int):
    shape = (n_sets, 2, cfg.n_samples) if cfg.debias else (n_sets, cfg.n_samples)
    return jnp.broadcast_to(jnp.arange(cfg.n_samples, dtype=jnp.int32), shape)


def init_state(key, model_cfg: _model.ModelConfig, cfg: TrainConfig, n_sets: int) -> TrainState:
    k_init, k_loop = jax.random.split(key)
    params = _model.init(k_init, model_cfg)
    perm = _initial_perm(cfg, n_sets)
    return TrainState(params, _optimizer(cfg).init(params), perm, jnp.int32(0), k_loop, params)


def loss_fn(model_cfg, params, x, y, perm, eta):
    """Mean over sets of the matched cost; the matching is data (``stop_gradient``)."""
    return _fit_cost(_model.apply(model_cfg, params, x, eta), y, perm)


def _fit_cost(fx, y, perm):
    matched = jax.lax.stop_gradient(jnp.take_along_axis(y, perm[..., None], axis=-2))
    return jnp.mean(jnp.sum((fx - matched) ** 2, axis=-1))


# The self term of the debiased loss counts a pair's cost up to SELF_CAP times the largest squared
# distance of a mini-batch target from the targets' mean; 4x that bounds the targets' squared
# diameter, so the cap never binds on a pair of points inside the targets' extent.
SELF_CAP = 4.0


def debiased_objective(fx, fs, y, perm, perm_self, local_cap: float = 0.0, mirror: float = 0.0):
    r"""The debiased loss of generated points: ``(objective, matched cost)``.

    ``fx`` and ``fs`` (``[..., N, d]``) are two independent batches of generated points, ``y`` the
    targets, ``perm`` the matching of ``fx`` to ``y`` and ``perm_self`` that of ``fx`` to ``fs``:

    $$
    \frac1N\sum_i |f_i - y_{\gamma(i)}|^2
      - \frac12\,\frac1N\sum_i \min\big(|f_i - f'_{\tau(i)}|^2,\; c\big),
    \qquad c = 4 \max_j |y_j - \bar y|^2 .
    $$

    The first term alone (the paper's loss, the expected squared W2 between an ``N``-sample of the
    generated law and one of the target law) is smallest for a law *narrower* than the target: a
    sample matched to another sample pulls its outer points in, and the fitted map regresses towards
    its conditional mean, losing about one squared W2 floor from the second moment. The second term is
    the same expectation between two samples of the generated law; its derivative at the target law is
    twice the first term's, so the objective is stationary at the target law (to first order the bias
    cancels, as in the Sinkhorn divergence).

    With ``local_cap > 0`` the cap is also at most ``local_cap`` times the median of the set's self
    pair costs (held fixed in the gradient; the median, so that the stray points it is meant for do
    not raise it): a stray point then pays for its distance beyond a few particle spacings.

    With ``mirror = w > 0`` the partners ``f'_{\tau(i)}`` are held fixed (``stop_gradient``) and the
    second term weighs ``w`` instead of ``1/2``. Meant for ``perm`` matching the *sources* to ``y``
    and ``perm_self`` the sources to ``fs`` (`TrainConfig.mirror_self`): the gradient at a point is
    then ``2 (f - m_y) - 2 w (f - m_f)``, with ``m_y`` the mean of its partners among the targets and
    ``m_f`` among the generated points, which two couplings of the same law give the same mean when
    ``f`` is the target map. The fit is ``f = (m_y - w m_f) / (1 - w)``: the regression's
    shrinkage ``m_y - T`` (the coupling's conditional spread) is cut to about ``(1 - w)`` of itself,
    removed at ``w = 1``, where only the smoothness of the network holds the map's finest scales.

    The cap ``c`` (at least the targets' squared diameter, so it does not bind inside their extent)
    keeps the objective bounded below. Without it a rare far point costs nothing on average: drawn in
    ``f`` it pays ``R^2`` in the first term and earns back ``R^2 / 2`` in the second, drawn in ``f'``
    it earns ``R^2 / 2``, so its expected contribution is zero at every distance ``R``, and nothing
    holds back a few generated points running away (a paper-scale laminar2d-time run did, after
    20000 steps). With the cap the second term earns at most ``c / 2`` per pair, and a far point pays
    ``R^2 - c`` in expectation. The matched cost, the first term, is returned for the loss history.
    """
    cost = _fit_cost(fx, y, perm)
    other = jnp.take_along_axis(fs, perm_self[..., None], axis=-2)
    if mirror:
        other = jax.lax.stop_gradient(other)
    y = jax.lax.stop_gradient(y)
    radius2 = jnp.max(jnp.sum((y - jnp.mean(y, axis=-2, keepdims=True)) ** 2, axis=-1), axis=-1, keepdims=True)
    pair = jnp.sum((fx - other) ** 2, axis=-1)
    cap = SELF_CAP * radius2
    if local_cap:
        cap = jnp.minimum(cap, local_cap * jax.lax.stop_gradient(jnp.median(pair, axis=-1, keepdims=True)))
    weight = mirror if mirror else 0.5
    return cost - weight * jnp.mean(jnp.minimum(pair, cap)), cost


# the most generated points per set the radial term ranks: 4 M^2 < 2^31 keeps its int32 arithmetic exact
RADIAL_MAX_POINTS = 23170


def radial_quantiles(targets):
    """The training sets' sorted distances from the origin, ``[..., J]``: their radial quantiles."""
    return jnp.sort(jnp.sqrt(jnp.sum(targets**2, axis=-1)), axis=-1)


def radial_objective(f, quantiles):
    r"""One-dimensional optimal transport of the generated distances onto a set's radial quantiles.

    ``f`` (``[..., M, d]``) are generated points, ``quantiles`` (``[..., J]``, `radial_quantiles`) the
    sorted distances from the origin of a training set. The ``k``-th smallest of the ``M`` distances
    ``r = |f|`` is paired with the quantile at the level ``(k + 1/2) / M``, the sorted matching that is
    optimal in one dimension, and the term is ``(1/M) sum_k (r_(k) - Q((k + 1/2) / M))^2`` (the ranks are
    data: the gradient flows through ``r`` only). Against all ``J`` training particles instead of a
    sample of ``N`` of them, a generated point is pulled towards the quantile at its own rank: no
    sampled coupling whose conditional mean shrinks the tail (`debiased_objective`), only the
    rank's own noise, a spread of ``sqrt(q (1 - q) / M)`` in the level ``q``.
    """
    r = jnp.sqrt(jnp.sum(f**2, axis=-1) + jnp.finfo(f.dtype).tiny)
    m, j = r.shape[-1], quantiles.shape[-1]
    if m > RADIAL_MAX_POINTS or j >= 2**31:
        raise ValueError(
            f"radial_objective: f has M = {m} points per set and quantiles J = {j}; the ranks' int32 "
            f"arithmetic needs M <= {RADIAL_MAX_POINTS} and J < 2^31: use fewer generated points per set."
        )
    rank = jnp.argsort(jnp.argsort(jax.lax.stop_gradient(r), axis=-1), axis=-1)
    # the index of the quantile (k + 1/2) / M in 0..J-1, floor((2k + 1) J / (2M)), exactly in int32: with
    # J = a 2M + b, it is (2k + 1) a + floor((2k + 1) b / (2M)), whose products stay below J and 4 M^2.
    # (2k + 1) J itself overflows int32 once J M > 2^30 (a pool of 40 runs of 10^4 against 2N = 4000
    # generated points did, and pulled the distances towards wrong quantiles)
    a, b = divmod(j, 2 * m)
    level = (2 * rank + 1) * a + ((2 * rank + 1) * b) // (2 * m)
    q = jnp.take_along_axis(jax.lax.stop_gradient(quantiles), level, axis=-1)
    return jnp.mean((r - q) ** 2)


def debiased_loss_fn(
    model_cfg, params, x, x_self, y, perm, perm_self, eta, local_cap: float = 0.0, mirror: float = 0.0
):
    """The debiased loss of the network on sources ``x`` and ``x_self``: ``(objective, matched cost)``.

    `debiased_objective` of ``f(x)`` and ``f(x_self)``; the gradient flows through both (through
    ``f(x_self)`` not at all with ``mirror``, which holds the self term's partners fixed).
    """
    fx = _model.apply(model_cfg, params, x, eta)
    fs = _model.apply(model_cfg, params, x_self, eta)
    return debiased_objective(fx, fs, y, perm, perm_self, local_cap, mirror)


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
    opt = _optimizer(cfg)
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
        # the self term's pairs: by the sources' matching to x' (match_sources_self), the sources' to f(x')
        # (mirror_self, as the first term matches them to the targets), else by f(x)'s matching to f(x')
        if cfg.match_sources_self:
            a, b = x, x_self
        else:
            a, b = (x if cfg.mirror_self else fx), _model.apply(model_cfg, params, x_self, eta)
        return jnp.stack([refine(k1, lead, y, perm[:, 0], n_sweeps), refine(k2, a, b, perm[:, 1], n_sweeps)], 1)

    if cfg.radial_weight:
        quantiles = radial_quantiles(targets)

    def objective(q, perm):
        if cfg.debias:
            fx = _model.apply(model_cfg, q, x, eta)
            fs = _model.apply(model_cfg, q, x_self, eta)
            value, cost = debiased_objective(fx, fs, y, perm[:, 0], perm[:, 1], cfg.local_cap, cfg.mirror_self)
            generated = jnp.concatenate([fx, fs], axis=-2)
        else:
            generated = _model.apply(model_cfg, q, x, eta)
            value = cost = _fit_cost(generated, y, perm)
        if cfg.radial_weight:
            value = value + cfg.radial_weight * radial_objective(generated, quantiles)
        return value, cost

    def loss_and_grad(params, perm):
        (_, cost), grads = jax.value_and_grad(objective, has_aux=True)(params, perm)
        if axis is None:
            return cost, grads
        # this device's share of the mean over all sets, summed over the mesh: the global loss/gradient
        return jax.lax.psum(jax.tree_util.tree_map(lambda a: a * (n_local / n_sets), (cost, grads)), axis)

    perm = match(k_match, state.params, _initial_perm(cfg, n_local), cfg.initial_sweeps)
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


def _minibatch_mesh(mesh, axis: str | None, n_sets: int):
    """The jitted, sharded mini-batch of `train`: ``fn(state, targets, eta, model_cfg, cfg)``.

    ``targets [R, J, d]``, ``eta [R, p]`` and ``state.perm [R, N]`` are split along ``R = n_sets``
    (checked to be a multiple of the devices); the network and optimiser state are replicated.
    """
    axis, n_dev = _parallel.mesh_axis(mesh, axis)
    _parallel.check_divisible(n_sets, n_dev, "the number of parameter sets R", "train on a multiple of the devices")
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


def fresh_batch_loss(history, resample_every: int, n_batches: int = 20) -> float:
    """Mean loss at the first Adam step of each of the last ``n_batches`` mini-batches.

    At that step the parameters have not yet been trained on the mini-batch's points (drawn afresh,
    then matched), so the value is an out-of-sample estimate of the matched cost, to hold against
    the squared W2 floor of two independent ``N``-samples; the losses of later steps include the fit
    to the particular points of the mini-batch.
    """
    h = np.asarray(history, float)
    first = h[: len(h) - len(h) % resample_every : resample_every]  # empty without a whole mini-batch
    if not len(first):
        raise ValueError(f"the history ({len(h)} steps) holds no whole mini-batch of {resample_every} steps.")
    return float(np.mean(first[-n_batches:]))


def batch_means(history, resample_every: int) -> np.ndarray:
    """The mean loss of each whole mini-batch of ``resample_every`` steps (an unfinished one is left out)."""
    h = np.asarray(history, float)
    whole = len(h) // resample_every
    return h[: whole * resample_every].reshape(whole, resample_every).mean(axis=1)


def final_loss(history, resample_every: int, n_batches: int = 20) -> _metrics.Estimate:
    """The training loss at the end of training: the mean over the last ``n_batches`` whole
    mini-batches of each one's mean loss, with its standard error (their spread / sqrt(n)).

    Each mini-batch draws its own sources and targets, so the batch means are close to independent
    draws; the last steps of one mini-batch alone are a single draw (at the paper scale, about 9%
    from one mini-batch to the next) and the most fitted part of it.
    """
    means = batch_means(history, resample_every)
    if len(means) < 2:
        raise ValueError(
            f"the history ({len(history)} steps) holds {len(means)} whole mini-batch(es) of {resample_every} "
            "steps; a standard error needs at least 2."
        )
    spread = _metrics.run_spread(means[-n_batches:])
    return _metrics.Estimate(spread["mean"], spread["se"])


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def save_checkpoint(path, state: TrainState, model_cfg, cfg: TrainConfig, history, extra: dict | None = None):
    """Writes the state, configs, normalisation and loss history to one ``.npz`` atomically.

    Sharded arrays are gathered first, across processes too (`ksdp.parallel.gather`), so
    every process must call this; only process 0 writes (with several hosts, ``path`` belongs on a
    disk they share, so that each can resume from it).
    """
    host = _parallel.gather(state._replace(key=jax.random.key_data(state.key)))
    arrays = {f"leaf_{i:04d}": leaf for i, leaf in enumerate(jax.tree_util.tree_leaves(host))}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model": model_cfg.to_dict(),
        "train": cfg._asdict(),
        "step": int(host.step),
        "n_sets": int(state.perm.shape[0]),
        "extra": extra or {},
    }
    arrays["meta_json"] = np.asarray(json.dumps(meta))
    arrays["history"] = np.asarray(history, np.float32)
    if jax.process_index() == 0:
        storage.atomic_write(path, lambda f: np.savez(f, **arrays))


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, truncated, or holds values no training run writes."""


MAX_STEPS = 10**9  # a plausible bound on the Adam steps a checkpoint holds


def load_checkpoint(path):
    """Reads a checkpoint: ``(state, model_cfg, train_cfg, history, extra)``.

    Validates before trusting: each member's size against the zip header (so a small file cannot
    make the loader allocate gigabytes), shapes and dtypes against the model, finite parameters and
    optimiser state, a permutation per set and a plausible step matching the loss history.

    Raises:
      CheckpointError: (a `ValueError`) naming the file and what is wrong with it.
    """

    def bad(what):
        return CheckpointError(f"{path}: {what}; delete it (or move it aside) and train afresh.")

    def unreadable(e):
        return CheckpointError(f"{e} Delete it (or move it aside) and train afresh.")

    try:
        meta_only = storage.read_npz(path, lambda name: 1 << 20 if name == "meta_json" else None)
        meta = json.loads(str(meta_only["meta_json"]))
        if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
            raise bad(f"not a ksdp checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
        model_cfg = _model.ModelConfig.from_dict(meta["model"])
        cfg = TrainConfig(**meta["train"])
        step, n_sets = meta["step"], meta["n_sets"]
        if not (isinstance(step, int) and 0 <= step <= MAX_STEPS and step % cfg.resample_every == 0):
            raise bad(f"its step {step!r} is not a whole number of mini-batches of {cfg.resample_every} in [0, 1e9]")
        if not (isinstance(n_sets, int) and 1 <= n_sets <= 10**7):
            raise bad(f"its number of parameter sets {n_sets!r} is implausible")
        template = init_state(jax.random.key(0), model_cfg, cfg, n_sets)
    except CheckpointError:
        raise
    except ValueError as e:  # from storage.read_npz, naming the file
        raise unreadable(e) from e
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        raise bad(f"its metadata is incomplete or malformed ({type(e).__name__}: {e})") from e
    template = template._replace(key=jax.random.key_data(template.key))
    leaves, tree = jax.tree_util.tree_flatten(template)
    sizes = {f"leaf_{i:04d}": np.asarray(leaf).nbytes + 4096 for i, leaf in enumerate(leaves)}
    sizes["history"] = 4 * step + 4096
    try:
        files = storage.read_npz(path, lambda name: sizes.get(name))
    except ValueError as e:
        raise unreadable(e) from e
    missing = sorted(set(sizes) - set(files))
    if missing:
        raise bad(f"arrays {missing[:3]} are missing")
    stored = []
    for i, leaf in enumerate(leaves):
        a, want = files[f"leaf_{i:04d}"], np.asarray(leaf)
        if a.shape != want.shape:
            raise bad(f"a stored array has shape {a.shape}, the model expects {want.shape}")
        if a.dtype != want.dtype:
            raise bad(f"a stored array has dtype {a.dtype}, the model expects {want.dtype}")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise bad("its parameters or optimiser state contain NaN or inf")
        stored.append(a)
    state = jax.tree_util.tree_unflatten(tree, [jnp.asarray(a) for a in stored])
    if int(state.step) != step:
        raise bad(f"its state holds step {int(state.step)} but its metadata step {step}")
    if not is_permutation(state.perm):
        raise bad("its matchings are not permutations")
    history = files["history"]
    if history.dtype != np.float32 or history.shape != (step,) or not np.all(np.isfinite(history)):
        raise bad(f"its loss history ({history.dtype}, shape {history.shape}) is not {step} finite float32 losses")
    state = state._replace(key=jax.random.wrap_key_data(state.key))
    return state, model_cfg, cfg, history.tolist(), meta.get("extra", {})


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------
class TrainResult(NamedTuple):
    """What `train` returns: the parameters to generate with (the moving average when
    ``TrainConfig.ema_decay > 0``, else the last iterate), the model, the loss history and the state."""

    params: Any
    model: _model.ModelConfig
    history: list  # loss after every Adam step
    state: TrainState


def train(
    key,
    targets,
    eta,
    model_cfg: _model.ModelConfig,
    cfg: TrainConfig = TrainConfig(),
    *,
    n_steps: int,
    checkpoint: str | None = None,
    checkpoint_every: int = 1,
    resume: bool = True,
    progress: bool | Callable[[str], Any] | None = None,
    mesh=None,
    axis: str | None = None,
) -> TrainResult:
    """Trains $f_\\theta$ on target particle sets, one per physical parameter.

    Args:
      key: random key (initial parameters and all sampling).
      targets: ``[R, J, d]`` particles of each training set.
      eta: ``[R, p]`` (or ``[R]``) physical parameters, raw (the model normalises them).
      model_cfg: from `ksdp.model.make_config`.
      cfg: `TrainConfig`.
      n_steps: total Adam steps, a multiple of ``cfg.resample_every``.
      checkpoint: path of the checkpoint file; ``None`` for none.
      checkpoint_every: mini-batches between checkpoints (one is always written at the end).
      resume: continue from ``checkpoint`` if it exists (its data, key and configs must match).
      progress: ``True`` for a progress bar, ``False`` for none, ``None`` (default) for a bar when stderr
        is a terminal; or a callable such as ``print`` or a logger's method, for runs whose output goes
        to a file: it gets one line at every twentieth of the training (`PROGRESS_LINES`) and at its
        end, with the step, the mini-batch's mean loss, the rate and the time left.
      mesh: a `jax.sharding.Mesh` to train data parallel over the ``R`` sets (``R`` a
        multiple of its devices; ``axis`` names the mesh axis, default its only one). Each device
        matches its own sets; every step equals the unsharded one to round-off (`ksdp.parallel`).

    Returns:
      `TrainResult`.

    Raises:
      TrainingError: the loss turned non-finite or diverged (above `DIVERGED` times the best
        mini-batch mean so far); the last checkpoint stays as it was.
      CheckpointMismatch: ``checkpoint`` exists but was written for other targets, eta, key or
        configs (`fingerprint`), or holds more than ``n_steps`` steps.
    """
    targets, eta = check_inputs(model_cfg, cfg, targets, eta)
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}.")
    if not isinstance(checkpoint_every, (int, np.integer)) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer (mini-batches), got {checkpoint_every!r}.")
    if n_steps % cfg.resample_every:
        raise ValueError(f"n_steps={n_steps} must be a multiple of resample_every={cfg.resample_every}.")
    if mesh is not None:
        _minibatch_mesh(mesh, axis, targets.shape[0])  # the split is checked before any work
    history: list = []
    state = None
    fp = _fingerprint(key, targets, eta, model_cfg, cfg)
    if checkpoint and resume and os.path.exists(checkpoint):
        state, saved_model, saved_cfg, history, extra = load_checkpoint(checkpoint)
        if saved_model != model_cfg or saved_cfg != cfg or state.perm.shape[0] != targets.shape[0]:
            raise CheckpointMismatch(
                f"checkpoint {checkpoint} was written for another model or training config; "
                f"delete it or pass resume=False."
            )
        saved_fp = extra.get("fingerprint")
        if saved_fp != fp:
            why = (
                "carries no fingerprint (an older ksdp wrote it)"
                if saved_fp is None
                else f"was written for other training data, eta, key or loss (its fingerprint {str(saved_fp)[:12]} "
                f"is not {fp[:12]})"
            )
            raise CheckpointMismatch(f"checkpoint {checkpoint} {why}; delete it or pass resume=False.")
        if int(state.step) > n_steps:
            raise CheckpointMismatch(
                f"checkpoint {checkpoint} holds {int(state.step)} steps, more than n_steps={n_steps}; pass "
                f"n_steps >= {int(state.step)}, or resume=False to train {n_steps} steps afresh."
            )
    if state is None:
        state = init_state(key, model_cfg, cfg, targets.shape[0])
    step = int(state.step)  # counted here: a sharded state need not be readable on this process
    saved = step if history else None  # the step of this run's checkpoint on disk
    k = cfg.resample_every
    best = min((float(np.mean(history[i : i + k])) for i in range(0, len(history) - k + 1, k)), default=np.inf)
    done = step // cfg.resample_every
    total = n_steps // cfg.resample_every
    say = progress if callable(progress) else None
    if progress is not None and say is None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False, None or a callable taking a str, got {progress!r}.")
    show = sys.stderr.isatty() if progress is None else (progress is True)
    every = max(1, -(-(total - done) // PROGRESS_LINES))  # mini-batches between two lines of `say`
    bar = None
    if show and total > done:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, initial=done * cfg.resample_every, unit="step", desc="train", leave=False)
    kept = lambda s: (
        f"the checkpoint {checkpoint} holds step {s}" if s is not None else "no checkpoint was written for this run"
    )
    t0 = time.perf_counter()
    try:
        for b in range(done, total):
            new, losses = train_minibatch(state, targets, eta, model_cfg, cfg, mesh=mesh, axis=axis)
            losses = _parallel.gather(losses)
            if not np.all(np.isfinite(losses)):
                bad = step + int(np.flatnonzero(~np.isfinite(losses))[0]) + 1
                raise TrainingError(
                    f"the loss turned non-finite at step {bad}; {kept(saved)}. Lower the learning rate or check "
                    "the targets."
                )
            # against the best mini-batch mean so far (the first step's loss in the first mini-batch)
            ref = max(min(best, float(losses[0])), float(np.finfo(np.float32).tiny))
            if np.max(losses) > DIVERGED * ref:
                bad = step + int(np.argmax(losses > DIVERGED * ref)) + 1
                hint = "; or train with TrainConfig.debias=False" if cfg.debias else ""
                raise TrainingError(
                    f"the loss diverged: {float(np.max(losses)):.3g} at step {bad}, more than {DIVERGED:g} times "
                    f"the best mini-batch mean so far ({ref:.3g}); {kept(saved)}. Lower the learning rate (now "
                    f"{cfg.learning_rate:g}){hint}."
                )
            state, step = new, step + cfg.resample_every
            history.extend(losses.tolist())
            best = min(best, float(np.mean(losses)))
            rate = (b + 1 - done) * cfg.resample_every / (time.perf_counter() - t0)  # steps per second
            if bar is not None:
                bar.update(cfg.resample_every)
                bar.set_postfix(loss=f"{losses[-1]:.3g}", rate=f"{rate:.0f}/s")
            if say is not None and ((b + 1 - done) % every == 0 or b + 1 == total):
                left = (n_steps - step) / rate / 60
                say(
                    f"  train: step {step}/{n_steps} ({100 * step / n_steps:.0f}%), mini-batch loss "
                    f"{float(np.mean(losses)):.4g}, {rate:.1f} steps/s, about {left:.0f} min left"
                )
            if checkpoint and ((b + 1 - done) % checkpoint_every == 0 or b + 1 == total):
                save_checkpoint(checkpoint, state, model_cfg, cfg, history, {"fingerprint": fp})
                saved = step
    finally:
        if bar is not None:
            bar.close()
    return TrainResult(state.ema if cfg.ema_decay else state.params, model_cfg, history, state)
