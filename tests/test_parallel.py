"""ksdp.parallel: single-device behaviour here; the 4-device checks in a subprocess.

The number of CPU devices is fixed when JAX starts, so tests/multidevice/ runs in a fresh
interpreter with XLA_FLAGS=--xla_force_host_platform_device_count=4.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ksdp
from ksdp import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_four_device_suite():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", KSDP_MULTIDEVICE="1")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/multidevice"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]


@pytest.mark.slow
def test_one_device_mesh_changes_nothing():
    mesh = parallel.make_mesh(1)
    p = ksdp.Params(mu=jnp.array([0.5, 1.0]))
    a = ksdp.sweep(jax.random.key(0), p, times=(0.0005,), n_particles=64)
    b = ksdp.sweep(jax.random.key(0), p, times=(0.0005,), n_particles=64, mesh=mesh)
    # the same program on the same device: identical bits
    np.testing.assert_array_equal(np.asarray(a.particles), np.asarray(b.particles))


def test_mesh_errors():
    with pytest.raises(TypeError, match="jax.sharding.Mesh"):
        ksdp.sweep(jax.random.key(0), ksdp.Params(), times=(0.001,), n_particles=8, mesh="gpu")
    with pytest.raises(ValueError, match="n_devices must be an integer"):
        parallel.make_mesh(0)
    two_axes = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("a", "b"))
    with pytest.raises(ValueError, match="name the one to shard"):
        parallel.mesh_axis(two_axes)
    assert parallel.mesh_axis(two_axes, "b") == ("b", 1)
