"""Kernels: hand-written gradients against jax.grad, delta -> 0 limit, behaviour at zero separation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ksdp import kernels

# float32 round-off: both sides are O(10) flops from the same inputs, so agreement to a few ulp
# of the result; 2e-5 relative leaves room for the log/sqrt evaluation in the potential.
F32_RTOL = 2e-5


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("kernel", ["exact", "paper", "blob"])
def test_gradient_matches_autodiff(d, kernel):
    z = jax.random.normal(jax.random.key(d), (200, d)) * jnp.logspace(-2, 0.5, 200)[:, None]
    delta = 0.05
    auto = jax.vmap(jax.grad(lambda zz: kernels.potential(zz, delta, kernel)))(z)
    hand = kernels.grad_kernel(z, delta, kernel)
    np.testing.assert_allclose(hand, auto, rtol=F32_RTOL, atol=1e-6 * float(jnp.max(jnp.abs(auto))))


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("kernel", ["paper", "blob"])
def test_regularised_converges_to_exact(d, kernel):
    # Relative error of the regularised gradient against the exact one, derived by hand from the
    # closed forms (r = |z|, e = delta^2 / r^2):
    #   blob 2D: e/(1+e) <= e;  blob 3D: 1 - (1+e)^(-3/2) <= 1.5 e;
    #   paper 2D: <= e + 2 e |ln r|;  paper 3D: (3e + e^2)/(1+e)^2 <= 3e + e^2.
    # All are below B = e (3 + 2|ln r|) + e^2; we check err <= B + 1e-5 (float32 round-off of a
    # ratio of O(1) quantities), pointwise, for delta -> 0, which is the convergence statement.
    z = jax.random.normal(jax.random.key(1), (100, d))
    r = jnp.linspace(0.1, 2.0, 100)
    z = z / jnp.linalg.norm(z, axis=1, keepdims=True) * r[:, None]
    exact = kernels.grad_kernel(z, 1.0, "exact")
    worst = []
    for delta in (1e-1, 1e-2, 1e-3, 1e-4):
        approx = kernels.grad_kernel(z, delta, kernel)
        err = jnp.linalg.norm(approx - exact, axis=1) / jnp.linalg.norm(exact, axis=1)
        e = delta**2 / r**2
        bound = e * (3 + 2 * jnp.abs(jnp.log(r))) + e**2
        assert np.all(np.asarray(err) <= np.asarray(bound) + 1e-5)
        worst.append(float(jnp.max(err)))
    assert worst[-1] < 1e-5  # at delta = 1e-4 it agrees with the exact kernel to round-off


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("kernel", ["exact", "paper", "blob"])
def test_zero_separation_is_zero_and_grad_finite(d, kernel):
    z0 = jnp.zeros((d,))
    assert np.all(kernels.grad_kernel(z0, 0.1, kernel) == 0.0)
    # gradient of a drift-like quantity w.r.t. the positions at zero separation
    f = lambda x, y: jnp.sum(kernels.grad_kernel(x - y, 0.1, kernel) ** 2)
    gx = jax.grad(f)(z0, z0)
    assert np.all(np.isfinite(gx))


def test_kernel_validation():
    with pytest.raises(ValueError, match="kernel"):
        kernels.grad_kernel(jnp.ones((3, 2)), 0.1, "gauss")
    with pytest.raises(ValueError, match="d=4"):
        kernels.grad_kernel(jnp.ones((3, 4)), 0.1, "blob")
