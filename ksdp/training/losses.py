r"""The training losses: the matched cost of eq. (14), its debiased form, and the radial term."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ksdp import model as _model


def loss_fn(model_cfg, params, x, y, perm, eta):
    """Mean over sets of the matched cost; the matching is data (``stop_gradient``)."""
    return fit_cost(_model.apply(model_cfg, params, x, eta), y, perm)


def fit_cost(fx, y, perm):
    """Mean squared distance of ``fx`` to its matched targets ``y[perm]``; the matching is data."""
    matched = jax.lax.stop_gradient(jnp.take_along_axis(y, perm[..., None], axis=-2))
    return jnp.mean(jnp.sum((fx - matched) ** 2, axis=-1))


# The self term of the debiased loss counts a pair's cost up to SELF_CAP times the largest squared
# distance of a mini-batch target from the targets' mean; 4x that bounds the targets' squared
# diameter, so the cap never binds on a pair of points inside the targets' extent.
SELF_CAP = 4.0


def debiased_objective(fx, fs, y, perm, perm_self, local_cap: float = 0.0):
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

    With ``local_cap > 0`` (or any array, the compiled training step's traced value) the cap is also
    at most ``local_cap`` times the median of the set's self pair costs (held fixed in the gradient;
    the median, so that the stray points it is meant for do not raise it): a stray point then pays for
    its distance beyond a few particle spacings.

    The cap ``c`` (at least the targets' squared diameter, so it does not bind inside their extent)
    keeps the objective bounded below. Without it a rare far point costs nothing on average: drawn in
    ``f`` it pays ``R^2`` in the first term and earns back ``R^2 / 2`` in the second, drawn in ``f'``
    it earns ``R^2 / 2``, so its expected contribution is zero at every distance ``R``, and nothing
    holds back a few generated points running away (a paper-scale laminar2d-time run did, after
    20000 steps). With the cap the second term earns at most ``c / 2`` per pair, and a far point pays
    ``R^2 - c`` in expectation. The matched cost, the first term, is returned for the loss history.
    """
    cost = fit_cost(fx, y, perm)
    other = jnp.take_along_axis(fs, perm_self[..., None], axis=-2)
    y = jax.lax.stop_gradient(y)
    radius2 = jnp.max(jnp.sum((y - jnp.mean(y, axis=-2, keepdims=True)) ** 2, axis=-1), axis=-1, keepdims=True)
    pair = jnp.sum((fx - other) ** 2, axis=-1)
    cap = SELF_CAP * radius2
    if not isinstance(local_cap, (int, float)) or local_cap:
        cap = jnp.minimum(cap, local_cap * jax.lax.stop_gradient(jnp.median(pair, axis=-1, keepdims=True)))
    return cost - 0.5 * jnp.mean(jnp.minimum(pair, cap)), cost


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
    # the k-th smallest value is paired with the quantile (k + 1/2) / M: sorting the values pairs each with
    # its rank's quantile (the sort's gradient flows back to each value; the order itself is data).
    # The index of that quantile in 0..J-1, floor((2k + 1) J / (2M)), exactly in int32: with
    # J = a 2M + b, it is (2k + 1) a + floor((2k + 1) b / (2M)), whose products stay below J and 4 M^2.
    # (2k + 1) J itself overflows int32 once J M > 2^30 (a pool of 40 runs of 10^4 against 2N = 4000
    # generated points did, and pulled the distances towards wrong quantiles)
    a, b = divmod(j, 2 * m)
    odd = 2 * jnp.arange(m, dtype=jnp.int32) + 1
    q = jnp.take(jax.lax.stop_gradient(quantiles), odd * a + (odd * b) // (2 * m), axis=-1)
    return jnp.mean((jnp.sort(r, axis=-1) - q) ** 2)
