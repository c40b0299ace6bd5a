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

**Screened** (``k``, the chemical's decay rate; SPEC section 5): the Green's function of
$-\Delta + k^2$, $-K_0(k|z|)/2\pi$ in 2D and $-e^{-k|z|}/4\pi|z|$ in 3D (signed as $K$), with
$|z|$ replaced by $r_\delta = \sqrt{|z|^2+\delta^2}$ for the blob: its gradient is
$z\,f(kr_\delta)/(2\pi r_\delta^2)$ in 2D ($f(x) = xK_1(x)$, `x_k1`) and
$z\,(1+kr_\delta)e^{-kr_\delta}/(4\pi r_\delta^3)$ in 3D, the blob kernel itself at $k = 0$. Its
Fourier transform is $f(\delta s)/s^2$ with $s^2 = |\xi|^2 + k^2$ in both dimensions
(`fourier_blob`): at $k = 0$ the blob's mollifier, $\hat\eta_\delta(\xi) = f(\delta|\xi|)$, over $|\xi|^2$.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import jax.scipy.special  # noqa: F401  (i0, i1 for the Bessel functions)

KERNELS = ("exact", "paper", "blob")
SCREENED = ("exact", "blob")  # the kernels with a screened form (k)
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


# Abramowitz and Stegun 9.8.1-9.8.8: polynomial forms of I_1, K_0 and K_1 (relative error below 2.2e-7)
_K1_SMALL = (1.0, 0.15443144, -0.67278579, -0.18156897, -0.01919402, -0.00110404, -0.00004686)
_K1_LARGE = (1.25331414, 0.23498619, -0.03655620, 0.01504268, -0.00780353, 0.00325614, -0.00068245)
_K0_SMALL = (-0.57721566, 0.42278420, 0.23069756, 0.03488590, 0.00262698, 0.00010750, 0.0000074)
_K0_LARGE = (1.25331414, -0.07832358, 0.02189568, -0.01062446, 0.00587872, -0.00251540, 0.00053208)


def _poly(coeffs, t):
    out = coeffs[-1]
    for c in coeffs[-2::-1]:
        out = out * t + c
    return out


def x_k1(x):
    r"""$f(x) = x K_1(x)$ for $x \ge 0$ ($K_1$ the modified Bessel function of the second kind): smooth,
    $f(0) = 1$, decaying like $\sqrt{\pi x / 2}\, e^{-x}$. Relative error below ``2.2e-7`` (A&S 9.8.7-8)."""
    small = jnp.minimum(x, 2.0)
    safe = jnp.where(small > 0, small, 1.0)
    i1 = jax.scipy.special.i1(small)
    lo = jnp.where(small > 0, small * jnp.log(safe / 2) * i1, 0.0) + _poly(_K1_SMALL, (small / 2) ** 2)
    big = jnp.maximum(x, 2.0)
    hi = jnp.sqrt(big) * jnp.exp(-big) * _poly(_K1_LARGE, 2.0 / big)
    return jnp.where(x <= 2.0, lo, hi)


def bessel_k0(x):
    """$K_0(x)$ for $x > 0$ (A&S 9.8.5-6; relative error below ``1.9e-7``): the 2D screened potential."""
    small = jnp.minimum(x, 2.0)
    lo = -jnp.log(small / 2) * jax.scipy.special.i0(small) + _poly(_K0_SMALL, (small / 2) ** 2)
    big = jnp.maximum(x, 2.0)
    hi = jnp.exp(-big) / jnp.sqrt(big) * _poly(_K0_LARGE, 2.0 / big)
    return jnp.where(x <= 2.0, lo, hi)


def fourier_blob(a, delta):
    r"""The screened blob kernel's Fourier transform, $f(\delta s)/s^2$ at $s^2 =$ ``a`` $= |\xi|^2 + k^2$
    (2D and 3D alike; `x_k1`), and 0 at ``a = 0`` (the mean of a field, which exerts no force)."""
    ok = a > 0
    safe = jnp.where(ok, a, 1.0)
    return jnp.where(ok, x_k1(delta * jnp.sqrt(safe)) / safe, 0.0)


def _screened(r2, delta2, d: int, k):
    """phi(r2) of the screened kernel, with r replaced by sqrt(r2 + delta2) (``delta2 = 0``: exact)."""
    s = r2 + delta2
    if d == 2:
        return x_k1(k * jnp.sqrt(s)) / (2 * math.pi * s)
    r = jnp.sqrt(s)
    return (1.0 + k * r) * jnp.exp(-k * r) / (4 * math.pi * s * r)


def radial_factor(r2, delta, d: int, kernel: str = "blob", k=None):
    r"""Scalar $\phi$ with $\nabla K_\delta(z) = z\,\phi(|z|^2)$, zero at ``r2 == 0``.

    Args:
      r2: squared separations, any shape.
      delta: regularisation length $\delta$ (traced; ignored by ``"exact"``).
      d: space dimension, 2 or 3 (static).
      kernel: ``"exact"``, ``"paper"`` or ``"blob"`` (static).
      k: ``None`` (unscreened), or the screening rate ``k >= 0`` (traced; ``"exact"`` and ``"blob"``).

    Returns:
      Array of the shape of ``r2``.
    """
    ok = r2 > 0
    safe = jnp.where(ok, r2, 1.0)  # mask before dividing: grad stays finite at 0
    if k is None:
        return jnp.where(ok, _factor(safe, delta * delta, d, kernel), 0.0)
    delta2 = 0.0 if kernel == "exact" else delta * delta
    return jnp.where(ok, _screened(safe, delta2, d, k), 0.0)


def check_screened(kernel: str) -> None:
    """The screened kernel (``k``) exists for the blob and the exact kernel."""
    if kernel not in SCREENED:
        raise ValueError(
            f"the screened kernel (params.k) is defined for kernel in {SCREENED}, got {kernel!r}; use kernel='blob'."
        )


def grad_kernel(z, delta, kernel: str = "blob", k=None):
    r"""$\nabla K_\delta(z)$ for separations ``z`` of shape ``[..., d]`` (``k``: screened)."""
    z = jnp.asarray(z)
    d = z.shape[-1]
    check_kernel(kernel, d)
    if k is not None:
        check_screened(kernel)
    return z * radial_factor(jnp.sum(z * z, axis=-1), delta, d, kernel, k)[..., None]


def potential(z, delta, kernel: str = "blob", k=None):
    r"""$K_\delta(z)$ for one separation ``z`` of shape ``[d]`` (a scalar), singular at 0.

    With ``k > 0`` the screened kernel, $-K_0(k r_\delta)/2\pi$ or $-e^{-k r_\delta}/4\pi r_\delta$.
    Its ``jax.grad`` equals `grad_kernel` away from the origin; the tests check this.
    """
    z = jnp.asarray(z)
    d = z.shape[-1]
    check_kernel(kernel, d)
    r2 = jnp.sum(z * z, axis=-1)
    delta2 = delta * delta
    if k is not None:
        check_screened(kernel)
        r = jnp.sqrt(r2 + (0.0 if kernel == "exact" else delta2))
        return -bessel_k0(k * r) / (2 * math.pi) if d == 2 else -jnp.exp(-k * r) / (4 * math.pi * r)
    if kernel == "blob":
        return jnp.log(r2 + delta2) / (4 * math.pi) if d == 2 else -1.0 / (4 * math.pi * jnp.sqrt(r2 + delta2))
    green = jnp.log(r2) / (4 * math.pi) if d == 2 else -1.0 / (4 * math.pi * jnp.sqrt(r2))
    return green if kernel == "exact" else green * r2 / (r2 + delta2)
