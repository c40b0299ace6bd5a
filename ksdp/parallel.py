r"""Scale-out with `jax.sharding`: parameter sweeps, the all-pairs drift, and training.

ksdp has no runtime of its own: every sharded path is one ``jax.jit`` of a ``jax.shard_map`` over
a `jax.sharding.Mesh`, so the same code runs on the devices of one host and, after
``jax.distributed.initialize()``, on the devices of many (``docs/scaling.md``). Three axes can be
sharded:

* **parameter sets** (`ksdp.sweep` with ``mesh=``): each device runs the ``vmap``-ed IPM of
  its slice of the ``P`` sets; no communication until the result is gathered. Run ``p`` draws
  ``jax.random.split(key, P)[p]`` wherever it runs, so the result equals the unsharded sweep.
* **particles** (`ksdp.simulate` and `ksdp.pair_sum` with ``mesh=``): each device owns
  ``J / n`` particles as targets; the sources travel round the mesh (``method="ring"``, one
  ``ppermute`` per step of the ring, memory ``O(J / n)``) or are all-gathered
  (``method="allgather"``, memory ``O(J)``). Each device draws the same ``[J, d]`` noise as the
  unsharded run and keeps its slice, so a sharded run equals the unsharded one to round-off.
* **training sets** (`ksdp.train` with ``mesh=``): data parallel over the ``R`` parameter
  sets; the network parameters and optimiser state are replicated, each device matches its own
  sets (the permutation sweeps stay local), and the loss is summed over the mesh before the
  gradient, so every device takes the same Adam step as the unsharded loop.

Sizes must divide evenly where an axis is split (``J`` and ``R`` by the number of devices); a
parameter sweep pads ``P`` itself. Without ``mesh=`` nothing changes.

This module holds what every layer's sharded path shares (mesh creation, axis validation, gathering,
divisibility and padding) and imports nothing from ksdp. Each sharded path lives beside its
unsharded twin: the drift, the particle-sharded run and the parameter sweep in `ksdp.ipm`, the
data-parallel mini-batch in `ksdp.training`.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

METHODS = ("ring", "allgather")


# --------------------------------------------------------------------------------------------
# Meshes and gathering
# --------------------------------------------------------------------------------------------
def make_mesh(n_devices: int | None = None, axis: str = "devices") -> Mesh:
    """A one-axis mesh over the first ``n_devices`` devices (default: all, of every host).

    Example:
      >>> import ksdp
      >>> mesh = ksdp.parallel.make_mesh(1)
      >>> mesh.shape["devices"]
      1
    """
    devices = jax.devices()
    n = len(devices) if n_devices is None else n_devices
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(devices):
        raise ValueError(
            f"n_devices must be an integer in [1, {len(devices)}] (the devices JAX sees), got "
            f"{n_devices!r}. On a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N "
            f"(set before importing jax) gives N devices."
        )
    return Mesh(np.asarray(devices[:n]), (axis,))


def mesh_axis(mesh, axis: str | None = None):
    """Validates ``mesh`` and picks its axis; returns ``(axis_name, size)``."""
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh (e.g. ksdp.parallel.make_mesh()), got {type(mesh).__name__}."
        )
    if axis is None:
        if len(mesh.axis_names) != 1:
            raise ValueError(f"the mesh has axes {mesh.axis_names}; name the one to shard with axis=.")
        axis = mesh.axis_names[0]
    if axis not in mesh.axis_names:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh (axes: {mesh.axis_names}).")
    return axis, int(mesh.shape[axis])


def gather(tree):
    """Every leaf of ``tree`` as one host NumPy array (across processes after ``jax.distributed``)."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.sharding.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree_util.tree_map(one, tree)


def check_divisible(n: int, n_dev: int, what: str, fix: str):
    """Raises ``ValueError`` unless ``n`` (named ``what``) splits evenly over ``n_dev`` devices."""
    if n % n_dev:
        lo, hi = n // n_dev * n_dev, -(-n // n_dev) * n_dev
        raise ValueError(
            f"{what}={n} must be a multiple of the {n_dev} devices of the mesh axis to be split "
            f"across them; {fix} (e.g. {lo or hi} or {hi})."
        )


def check_method(method):
    """Validates how sources travel in the particle-sharded drift (`METHODS`)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")


def pad_rows(size: int, n_dev: int):
    """Indices that pad a leading axis of ``size`` to a multiple of ``n_dev`` by repeating the last row.

    Returns ``None`` when no padding is needed; the caller drops the padded rows from the result.
    """
    pad = -size % n_dev
    return None if pad == 0 else np.minimum(np.arange(size + pad), size - 1)
