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


def uniform_ball_radial_cdf(d: int):
    """The initial law's radial CDF ``r -> P(|X| <= r) = min(max(r, 0), 1)^d``, vectorised (NumPy).

    The law of every time experiment at ``t = 0``, known exactly: `ksdp.metrics.radial_ks` against it
    tests a generator where no IPM sampling error enters the reference.
    """
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"d must be a positive integer (the dimension), got {d!r}.")
    return lambda r: np.clip(np.asarray(r, np.float64), 0.0, 1.0) ** int(d)
