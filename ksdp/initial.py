"""The initial law: uniform on the unit ball of R^d (the paper's).

Both the IPM (`ksdp.ipm`, the initial particles) and DeepParticle (`ksdp.model`, the
sources pushed through the network) draw from it, so it lives below both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def uniform_ball(key, n: int, d: int, dtype=None):
    """``[n, d]`` samples of the uniform law on the unit ball of R^d (the paper's initial law)."""
    k1, k2 = jax.random.split(key)
    g = jax.random.normal(k1, (n, d), dtype or jnp.zeros(()).dtype)
    u = jax.random.uniform(k2, (n, 1), g.dtype)
    return g / jnp.linalg.norm(g, axis=1, keepdims=True) * u ** (1.0 / d)


# the largest level below 1 in float32 (as jax.random.uniform's largest draw): |x| < 1 strictly
_LEVEL_MAX = 1.0 - 2.0**-24


def uniform_ball_at_levels(key, levels, d: int):
    r"""Points of the unit ball of R^d at given radial levels: ``[n, d]`` for ``levels [n]``.

    The point ``k`` has ``|x_k|^d = levels[k]`` (its level in the uniform law's radial CDF
    $r \mapsto r^d$) and an independent direction, uniform on the sphere. With levels uniform on
    ``[0, 1)`` this is `uniform_ball`; `uniform_ball_stratified` stratifies them.
    """
    levels = jnp.minimum(jnp.asarray(levels), _LEVEL_MAX)
    g = jax.random.normal(key, levels.shape + (d,), levels.dtype)
    return g / jnp.linalg.norm(g, axis=-1, keepdims=True) * (levels ** (1.0 / d))[..., None]


def stratified_levels(key, index, n: int, dtype=None):
    """The levels ``(index + U) / n`` with ``U`` uniform on ``[0, 1)``, independent per entry.

    For ``index`` a permutation of ``0 .. n-1`` these are a stratified sample of the uniform law
    on ``[0, 1)``: exactly one in each stratum ``[k / n, (k + 1) / n)``.
    """
    dtype = dtype or jnp.zeros(()).dtype
    u = jax.random.uniform(key, jnp.shape(index), dtype)
    return (jnp.asarray(index).astype(dtype) + u) / jnp.asarray(n, dtype)


def uniform_ball_stratified(key, n: int, d: int, dtype=None):
    r"""``[n, d]`` points of the unit ball whose radial levels are stratified, in random order.

    The levels ``|x|^d`` take exactly one value in each of the ``n`` strata ``[k / n, (k + 1) / n)``
    (uniform within it), the directions are independent and uniform. Every point, picked at random
    from the set, is uniform on the ball, so the set's empirical law is unbiased for the uniform law;
    but its radial CDF is within ``1 / n`` of the exact ``r^d`` everywhere (independent draws: about
    ``0.87 / sqrt(n)`` in Kolmogorov--Smirnov distance). The points are not independent of each other:
    use it where the radial law is measured (`ksdp.model.generate`'s ``source="stratified"``), not
    where an estimate assumes independent draws.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (points) must be a positive integer, got {n!r}.")
    k_order, k_level, k_dir = jax.random.split(key, 3)
    levels = stratified_levels(k_level, jax.random.permutation(k_order, int(n)), int(n), dtype)
    return uniform_ball_at_levels(k_dir, levels, d)


def uniform_ball_radial_cdf(d: int):
    """The initial law's radial CDF ``r -> P(|X| <= r) = min(max(r, 0), 1)^d``, vectorised (NumPy).

    The law of every time experiment at ``t = 0``, known exactly: `ksdp.metrics.radial_ks` against it
    tests a generator where no IPM sampling error enters the reference.
    """
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"d must be a positive integer (the dimension), got {d!r}.")
    return lambda r: np.clip(np.asarray(r, np.float64), 0.0, 1.0) ** int(d)
