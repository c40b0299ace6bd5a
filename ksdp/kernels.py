r"""Interaction kernels of the Keller--Segel particle system.

The chemotactic drift of particle ``j`` is (paper eq. 8)

$$
b_j = -\frac{\chi M}{J} \sum_{i \ne j} \nabla K_\delta(X^j - X^i),
$$

with $K$ the Green's function of the Laplacian (``d=2``: $\ln|z|/2\pi$;
``d=3``: $-1/4\pi|z|$). Every kernel here has a radial gradient
$\nabla K_\delta(z) = z\,\phi(|z|^2)$, so the drift needs only the scalar factor
$\phi$; `radial_factor` returns it, `potential` returns $K_\delta$ itself
(used by the tests to check the hand-written gradients against ``jax.grad``).

Three kernels (``SPEC.md`` section 1):

* ``"exact"``: the unregularised Green's function (``delta`` is ignored).
* ``"paper"``: eq. (7), $K_\delta(z) = K(z)\,|z|^2/(|z|^2+\delta^2)$. Repulsive for
  $|z| \lesssim \delta$ (a short-range core), and it biases the second moment early.
* ``"blob"``: force softening (vortex blob / Plummer), $\nabla K_\delta(z) = z/(2\pi(|z|^2+\delta^2))$
  in 2D and $z/(4\pi(|z|^2+\delta^2)^{3/2})$ in 3D. Attractive everywhere; the experiments use it.

Zero separation (the self term, or two coincident particles) contributes exactly zero: the factor is
masked *before* dividing (jax-md ``safe_mask``), so ``jax.grad`` through it stays finite.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

KERNELS = ("exact", "paper", "blob")
DIMENSIONS = (2, 3)


def check_kernel(kernel: str, d: int) -> None:
    """Raises ``ValueError`` unless ``kernel`` and ``d`` are supported."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is not supported; use one of {KERNELS}.")
    if d not in DIMENSIONS:
        raise ValueError(f"d={d!r} is not supported; the Keller-Segel kernels exist for d in {DIMENSIONS}.")


def _factor(r2, delta2, d: int, kernel: str):
    """phi(r2) for r2 > 0 (no masking)."""
    if d == 2:
        if kernel == "exact":
            return 1.0 / (2 * math.pi * r2)
        if kernel == "blob":
            return 1.0 / (2 * math.pi * (r2 + delta2))
        inv = 1.0 / (r2 + delta2)  # "paper": hand derivative of ln|z| r2 / (2 pi (r2 + delta2))
        return inv * (1.0 + delta2 * jnp.log(r2) * inv) / (2 * math.pi)
    r = jnp.sqrt(r2)
    if kernel == "exact":
        return 1.0 / (4 * math.pi * r * r2)
    if kernel == "blob":
        s = r2 + delta2
        return 1.0 / (4 * math.pi * s * jnp.sqrt(s))
    inv = 1.0 / (r2 + delta2)  # "paper"
    return (r2 - delta2) * inv * inv / (4 * math.pi * r)


def radial_factor(r2, delta, d: int, kernel: str = "blob"):
    r"""Scalar $\phi$ with $\nabla K_\delta(z) = z\,\phi(|z|^2)$, zero at ``r2 == 0``.

    Args:
      r2: squared separations, any shape.
      delta: regularisation length $\delta$ (traced; ignored by ``"exact"``).
      d: space dimension, 2 or 3 (static).
      kernel: ``"exact"``, ``"paper"`` or ``"blob"`` (static).

    Returns:
      Array of the shape of ``r2``.
    """
    ok = r2 > 0
    safe = jnp.where(ok, r2, 1.0)  # mask before dividing: grad stays finite at 0
    return jnp.where(ok, _factor(safe, delta * delta, d, kernel), 0.0)


def grad_kernel(z, delta, kernel: str = "blob"):
    r"""$\nabla K_\delta(z)$ for separations ``z`` of shape ``[..., d]``."""
    z = jnp.asarray(z)
    d = z.shape[-1]
    check_kernel(kernel, d)
    return z * radial_factor(jnp.sum(z * z, axis=-1), delta, d, kernel)[..., None]


def potential(z, delta, kernel: str = "blob"):
    r"""$K_\delta(z)$ for one separation ``z`` of shape ``[d]`` (a scalar), singular at 0.

    Its ``jax.grad`` equals `grad_kernel` away from the origin; the tests check this.
    """
    z = jnp.asarray(z)
    d = z.shape[-1]
    check_kernel(kernel, d)
    r2 = jnp.sum(z * z, axis=-1)
    delta2 = delta * delta
    if kernel == "blob":
        return jnp.log(r2 + delta2) / (4 * math.pi) if d == 2 else -1.0 / (4 * math.pi * jnp.sqrt(r2 + delta2))
    green = jnp.log(r2) / (4 * math.pi) if d == 2 else -1.0 / (4 * math.pi * jnp.sqrt(r2))
    return green if kernel == "exact" else green * r2 / (r2 + delta2)
