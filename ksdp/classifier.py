r"""The classifier two-sample test (C2ST) with sbibm's protocol: an MLP with two hidden layers of
``10 d`` ReLU units, z-scored inputs, k-fold cross-validation (flax + optax, the folds trained at
once under ``vmap``). Accuracy 0.5 means the classifier cannot tell the clouds apart; its standard
error is the binomial one of the held-out predictions. `ksdp.metrics` builds its checks on it
(`ksdp.metrics.c2st_pairs`, `ksdp.metrics.compare`).
"""

from __future__ import annotations

import math
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ksdp.estimate import Estimate, as_cloud


class _Classifier(nn.Module):
    """sbibm's C2ST classifier: two hidden ReLU layers of ``width`` units, one logit."""

    width: int

    @nn.compact
    def __call__(self, h):
        h = jax.nn.relu(nn.Dense(self.width)(h))
        h = jax.nn.relu(nn.Dense(self.width)(h))
        return nn.Dense(1)(h)[..., 0]


def _c2st_fold_counts(key, z, label, train_mask, *, width: int, steps: int, batch: int, learning_rate: float):
    """Trains one classifier per fold (``vmap``) and returns each fold's held-out correct count."""
    net = _Classifier(width)
    opt = optax.adam(learning_rate)

    def one_fold(key, mask):
        k_init, k_steps = jax.random.split(key)
        params = net.init(k_init, z[:1])
        # sample mini-batches among this fold's training rows: weights 0 on the held-out rows
        p = mask / jnp.sum(mask)

        def step(carry, k):
            params, state = carry
            idx = jax.random.choice(k, z.shape[0], (batch,), p=p)

            def loss(q):
                return jnp.mean(optax.sigmoid_binary_cross_entropy(net.apply(q, z[idx]), label[idx]))

            g = jax.grad(loss)(params)
            updates, state = opt.update(g, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(k_steps, steps))
        correct = (net.apply(params, z) > 0) == (label > 0.5)
        return jnp.sum(correct & ~mask)

    return jax.vmap(one_fold)(jax.random.split(key, train_mask.shape[0]), train_mask)


_STATIC_C2ST = ("width", "steps", "batch")
_c2st_folds = jax.jit(_c2st_fold_counts, static_argnames=_STATIC_C2ST)
# several tests of one size at once: on a CPU a step of this small network is mostly overhead, which
# a batch of tests shares (c2st_pairs)
_c2st_tests = jax.jit(
    lambda keys, z, label, mask, **kw: jax.vmap(partial(_c2st_fold_counts, **kw))(keys, z, label, mask),
    static_argnames=_STATIC_C2ST,
)


def _check_c2st_settings(folds, steps, batch, learning_rate):
    for name, v, lo in (("folds", folds, 2), ("steps", steps, 1), ("batch", batch, 1)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}.")
    if not (
        isinstance(learning_rate, (int, float, np.floating)) and math.isfinite(learning_rate) and learning_rate > 0
    ):
        raise ValueError(f"learning_rate must be a positive finite float, got {learning_rate!r}.")


def _c2st_inputs(key, x, y, folds: int):
    """One test's pooled, z-scored points, labels, fold masks and training key (sbibm's protocol)."""
    n = min(len(x), len(y))
    if 2 * n < 2 * folds:
        raise ValueError(f"c2st needs at least {folds} points per cloud for {folds} folds, got {n}.")
    k_sub, k_fold, k_train = jax.random.split(key, 3)
    kx, ky = jax.random.split(k_sub)
    x = x[np.asarray(jax.random.permutation(kx, len(x)))[:n]]
    y = y[np.asarray(jax.random.permutation(ky, len(y)))[:n]]
    z = np.concatenate([x, y]).astype(np.float64)
    z = (z - z.mean(0)) / np.maximum(z.std(0), 1e-12)
    label = np.concatenate([np.zeros(n), np.ones(n)])
    order = np.asarray(jax.random.permutation(k_fold, 2 * n))
    fold_of = np.empty(2 * n, np.int64)
    fold_of[order] = np.arange(2 * n) % folds
    train_mask = fold_of[None, :] != np.arange(folds)[:, None]  # [folds, 2n]
    return z.astype(np.float32), label.astype(np.float32), train_mask, k_train


def _accuracy(correct, n_points: int) -> Estimate:
    acc = float(np.sum(np.asarray(correct))) / n_points
    return Estimate(acc, math.sqrt(max(acc * (1 - acc), 1e-12) / n_points))


def c2st(key, x, y, *, folds: int = 5, steps: int = 3000, batch: int = 128, learning_rate: float = 1e-3) -> Estimate:
    """Classifier two-sample test: cross-validated accuracy of a classifier telling ``x`` from ``y``.

    sbibm's protocol: the larger cloud is subsampled to the size of the smaller, the pooled points
    are z-scored, and an MLP with two hidden layers of ``10 d`` ReLU units is trained by Adam on the
    cross-entropy, once per fold of a ``folds``-fold split, each fold held out once. 0.5 means the
    classifier cannot tell the clouds apart; 1 means it always can.

    Args:
      key: random key (subsampling, folds, initialisation, mini-batches).
      x: ``[n, d]`` cloud.
      y: ``[m, d]`` cloud.
      folds: number of cross-validation folds (``>= 2``).
      steps: Adam steps per fold (mini-batches of ``batch`` points).
      batch: mini-batch size.
      learning_rate: Adam step size.

    Returns:
      `Estimate`: the accuracy over all held-out predictions and its binomial standard error
      ``sqrt(a (1 - a) / n_predictions)``.
    """
    x = as_cloud(x, "x")
    y = as_cloud(y, "y", x.shape[1])
    _check_c2st_settings(folds, steps, batch, learning_rate)
    z, label, mask, k_train = _c2st_inputs(key, x, y, folds)
    kw = dict(width=10 * x.shape[1], steps=int(steps), batch=int(batch), learning_rate=float(learning_rate))
    correct = _c2st_folds(k_train, jnp.asarray(z), jnp.asarray(label), jnp.asarray(mask), **kw)
    return _accuracy(correct, len(z))


def c2st_batch(
    keys, pairs, *, folds: int = 5, steps: int = 3000, batch: int = 128, learning_rate: float = 1e-3
) -> list:
    """`c2st` of every ``(x, y)`` in ``pairs`` (clouds of one size, the same settings), trained together:
    a list of `Estimate`."""
    _check_c2st_settings(folds, steps, batch, learning_rate)
    pairs = [(as_cloud(x, "x"), as_cloud(y, "y", np.shape(x)[-1])) for x, y in pairs]
    if len({(len(x), len(y)) for x, y in pairs}) > 1:
        raise ValueError("c2st_batch takes pairs of clouds of one size (one compiled program trains them all).")
    tests = [_c2st_inputs(k, x, y, folds) for k, (x, y) in zip(keys, pairs, strict=True)]
    z, label, mask = (jnp.asarray(np.stack([t[i] for t in tests])) for i in range(3))
    k_train = jnp.stack([t[3] for t in tests])
    kw = dict(width=10 * z.shape[-1], steps=int(steps), batch=int(batch), learning_rate=float(learning_rate))
    correct = np.asarray(_c2st_tests(k_train, z, label, mask, **kw))
    return [_accuracy(c, z.shape[1]) for c in correct]
