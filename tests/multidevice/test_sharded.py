"""Sharded paths on 4 forced CPU devices; run by tests/test_parallel.py in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=4 (the device count is fixed when JAX starts).

Round-off bounds used below (float32, unit round-off u = 2^-24, eps = 2u):
* a sum of n terms in any order is within gamma_n * sum|terms|, gamma_n = n u / (1 - n u), of the
  exact sum, so two orders differ by at most 2 gamma_n * sum|terms|.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ksdp
from ksdp import kernels, parallel

pytestmark = pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 devices (run via tests/test_parallel.py)")
U = 2.0**-24


def gamma(n):
    return n * U / (1 - n * U)


@pytest.fixture(scope="module")
def mesh():
    return parallel.make_mesh(4)


def abs_pair_sum(x, delta, d):
    """sum_i |z_k phi| per target and component: the scale of the round-off of the drift sum."""
    z = x[:, None, :] - x[None, :, :]
    phi = kernels.radial_factor(jnp.sum(z * z, -1), delta, d, "blob")
    return jnp.sum(jnp.abs(z * phi[..., None]), axis=1)


@pytest.mark.parametrize("method", parallel.METHODS)
@pytest.mark.parametrize("d", [2, 3])
def test_sharded_drift_equals_unsharded(mesh, method, d):
    x = ksdp.uniform_ball(jax.random.key(d), 512, d)
    delta = 0.03
    a = ksdp.pair_sum(x, x, delta, mesh=mesh, method=method, tile=32)
    b = ksdp.pair_sum(x, x, delta, tile=32)
    assert a.shape == b.shape and a.sharding.spec == jax.sharding.PartitionSpec("devices")
    bound = 2 * gamma(512) * abs_pair_sum(x, delta, d)  # two summation orders, see module doc
    assert bool(jnp.all(jnp.abs(a - b) <= bound))
    assert float(jnp.max(jnp.abs(a - b))) < float(jnp.max(jnp.abs(b))) * 1e-5  # and it is round-off indeed


@pytest.mark.parametrize("method", parallel.METHODS)
def test_sharded_simulation_equals_unsharded(mesh, method):
    times, j = (0.0, 0.0005, 0.001), 512
    t1 = ksdp.simulate(jax.random.key(2), ksdp.Params(), times=times, n_particles=j)
    t2 = ksdp.simulate(jax.random.key(2), ksdp.Params(), times=times, n_particles=j, mesh=mesh, method=method)
    assert t2.particles.shape == t1.particles.shape and int(t2.nonfinite_step) == -1
    # Per Euler step the drift differs by at most dt chi M / J * 2 gamma_J sum|terms| (module doc) and
    # the update's own rounding by 1 ulp of |x|; over 10 steps (dt * Lipschitz << 1) these add up.
    x0 = t1.particles[0]
    drift = 1e-4 * 16 * np.pi / j * 2 * gamma(j) * float(jnp.max(abs_pair_sum(x0, ksdp.ipm.DEFAULT_DELTA, 2)))
    tol = 10 * 2 * (drift + 2 * U * float(jnp.max(jnp.abs(t1.particles))))  # x2: the cloud contracts
    assert float(jnp.max(jnp.abs(t1.particles - t2.particles))) <= tol
    # health: the maximum over every device's particles of dt |drift| / delta, whose drifts differ by
    # the summation-order bound above (relative 2 gamma_J of the largest)
    assert int(t2.unstable_step) == int(t1.unstable_step) == -1
    np.testing.assert_allclose(float(t2.health), float(t1.health), rtol=10 * 2 * gamma(j))
    # the step's bias: per step dt <(x' - dt b) . (c' - c)> over every device's particles; each drift c is
    # off by the bound above (drift / dt), so each step's term by at most dt max|x| 2 drift / dt, over 10 steps
    bias_tol = 10 * float(jnp.max(jnp.abs(t1.particles))) * 2 * drift
    np.testing.assert_allclose(np.asarray(t2.step_bias), np.asarray(t1.step_bias), rtol=0, atol=bias_tol)
    assert float(t1.step_bias[-1]) != 0 and float(t2.flow_health) == float(t1.flow_health) == 0  # no flow


def test_sharded_simulation_reports_the_same_nonfinite_step(mesh):
    flow = lambda x, a: a * x * x  # blows up in finite time (tests/test_ipm.py)
    x0 = jnp.concatenate([jnp.zeros((7, 2)), jnp.ones((1, 2))])  # only the last device's particle blows up
    p = ksdp.Params(flow=1e3, chi=0.0, mu=0.0)
    a = ksdp.simulate(jax.random.key(0), p, times=(0.05,), x0=x0, flow=flow, check=False)
    b = ksdp.simulate(jax.random.key(0), p, times=(0.05,), x0=x0, flow=flow, check=False, mesh=mesh)
    assert int(a.nonfinite_step) > 0 and int(b.nonfinite_step) == int(a.nonfinite_step)
    with pytest.raises(ksdp.NonFiniteError):
        ksdp.simulate(jax.random.key(0), p, times=(0.05,), x0=x0, flow=flow, mesh=mesh)


@pytest.mark.parametrize("n_sets", [4, 5])  # 5: padded to 8 and trimmed
def test_sharded_sweep_equals_unsharded(mesh, n_sets):
    p = ksdp.Params(flow=jnp.linspace(1.0, 40.0, n_sets))
    kw = dict(times=(0.0, 0.001), n_particles=128, flow="laminar2d")
    a = ksdp.sweep(jax.random.key(1), p, **kw)
    b = ksdp.sweep(jax.random.key(1), p, mesh=mesh, **kw)
    assert b.particles.shape == a.particles.shape == (n_sets, 2, 128, 2)
    # the same operations per run (only the batch the compiler vectorises over changes): at most
    # 1 ulp of |x| a step over the 10 steps
    assert float(jnp.max(jnp.abs(a.particles - b.particles))) <= 10 * 2 * U * float(jnp.max(jnp.abs(a.particles)))
    np.testing.assert_array_equal(np.asarray(a.nonfinite_step), np.asarray(b.nonfinite_step))
    np.testing.assert_array_equal(np.asarray(a.unstable_step), np.asarray(b.unstable_step))
    assert np.asarray(b.health).shape == (n_sets,)
    np.testing.assert_allclose(np.asarray(b.health), np.asarray(a.health), rtol=10 * 2 * U)
    # the flow's step divides differences of positions about 1e-3 of |x| apart along a step, which agree to
    # 20 ulp of |x|: 20 U / 1e-3 = 1e-3 relative at most
    np.testing.assert_allclose(np.asarray(b.flow_health), np.asarray(a.flow_health), rtol=1e-3)
    assert np.all(np.asarray(a.flow_health) > 0)


def test_sharded_dataset_equals_unsharded(mesh):
    p = ksdp.Params(flow=jnp.array([1.0, 10.0, 20.0, 30.0]))
    kw = dict(n_particles=64, flow="laminar2d")
    a = ksdp.make_dataset(jax.random.key(3), p, (0.001,), **kw)
    b = ksdp.make_dataset(jax.random.key(3), p, (0.001,), mesh=mesh, **kw)
    assert isinstance(b.particles, np.ndarray) and b.particles.shape == a.particles.shape
    # the same metadata but for the manifest (its time differs)
    same = lambda m: {k: v for k, v in m.items() if k != "manifest"}  # noqa: E731
    assert same(b.meta) == same(a.meta) and all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    np.testing.assert_allclose(b.particles, a.particles, rtol=0, atol=10 * 2 * U * np.abs(a.particles).max())


@pytest.mark.parametrize("debias", [False, True])
def test_sharded_training_equals_unsharded(mesh, debias):
    etas = jnp.arange(4.0)
    targets = jax.random.normal(jax.random.key(3), (4, 128, 2)) * (1 + etas)[:, None, None]
    cfg = ksdp.make_config(2, etas)
    tc = ksdp.TrainConfig.paper(
        n_samples=64, resample_every=20, renew_every=10, sweeps=2, initial_sweeps=3, debias=debias
    )
    terms = 2 if debias else 1  # the debiased loss adds a second matched sum of R N terms
    a = ksdp.train(jax.random.key(4), targets, etas, cfg, tc, n_steps=40, progress=False)
    b = ksdp.train(jax.random.key(4), targets, etas, cfg, tc, n_steps=40, progress=False, mesh=mesh)
    # the loss is a mean of R N = 256 positive terms: the two summation orders differ by 2 gamma_256
    np.testing.assert_allclose(b.history, a.history, rtol=2 * gamma(256 * terms) * 10)  # x10: params drift below
    np.testing.assert_array_equal(np.asarray(a.state.perm), np.asarray(b.state.perm))  # matchings local, same keys
    # Adam moves a weight by lr m/sqrt(v): a relative gradient change rho moves it by <= 2 lr rho;
    # rho <= 2 gamma_{R N d terms} (a sum of R N d terms, twice with debias), over 40 steps.
    tol = 40 * 2 * tc.learning_rate * 2 * gamma(4 * 64 * 2 * terms)
    for u, v in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params), strict=True):
        assert float(jnp.max(jnp.abs(u - v))) <= tol


def test_bad_meshes(mesh):
    with pytest.raises(ValueError, match="multiple of the 4 devices"):
        ksdp.simulate(jax.random.key(0), ksdp.Params(), times=(0.001,), n_particles=130, mesh=mesh)
    with pytest.raises(ValueError, match="number of parameter sets R"):
        ksdp.train(
            jax.random.key(0),
            jnp.zeros((3, 64, 2)),
            jnp.arange(3.0),
            ksdp.make_config(2, jnp.arange(3.0)),
            ksdp.TrainConfig.paper(n_samples=32, resample_every=10, renew_every=10),
            n_steps=10,
            mesh=mesh,
        )
    with pytest.raises(ValueError, match="method must be one of"):
        ksdp.pair_sum(jnp.zeros((8, 2)), jnp.zeros((8, 2)), 0.1, mesh=mesh, method="tree")
    with pytest.raises(ValueError, match="not an axis of the mesh"):
        ksdp.sweep(
            jax.random.key(0), ksdp.Params(mu=jnp.ones(4)), times=(0.001,), n_particles=8, mesh=mesh, axis="batch"
        )
    with pytest.raises(ValueError, match="n_devices must be an integer in"):
        parallel.make_mesh(5)
