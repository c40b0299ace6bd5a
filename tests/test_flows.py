import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ksdp import flows


@pytest.mark.parametrize("name,d", [("none", 2), ("none", 3), ("laminar2d", 2), ("laminar3d", 3), ("kolmogorov3d", 3)])
def test_builtin_flows_are_divergence_free(name, d):
    v = flows.FLOWS[name]
    x = jax.random.normal(jax.random.key(0), (500, d)) * 2
    amplitude = 100.0
    div = jax.vmap(lambda p: jnp.trace(jax.jacfwd(v)(p, amplitude)))(x)
    # Each flow is divergence-free by construction (component k does not depend on x_k), so the
    # diagonal of the Jacobian is zero exactly: any non-zero value is a bug, not round-off.
    assert np.all(np.asarray(div) == 0.0)
    # and the flow is not trivially zero (except "none")
    speed = jnp.max(jnp.abs(jax.vmap(v, in_axes=(0, None))(x, amplitude)))
    assert (speed == 0) == (name == "none")


def test_flow_values():
    np.testing.assert_allclose(flows.laminar2d(jnp.array([0.3, 0.0]), 2.0), [2.0, 0.0])
    np.testing.assert_allclose(flows.laminar3d(jnp.array([5.0, 1.0, 1.0]), 1.0), [np.exp(-2.0), 0, 0], rtol=1e-6)
    np.testing.assert_allclose(flows.kolmogorov3d(jnp.array([0.25, 0.0, 0.25]), 3.0), [3.0, 3.0, 0.0], atol=1e-6)


def test_resolve_flow_errors():
    with pytest.raises(ValueError, match="flow='swirl'"):
        flows.resolve_flow("swirl", 2)
    with pytest.raises(ValueError, match="laminar3d"):
        flows.resolve_flow("laminar3d", 2)
    with pytest.raises(TypeError, match="flow"):
        flows.resolve_flow(3.0, 2)
