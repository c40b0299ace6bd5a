r"""Scale-out with :mod:`jax.sharding`: parameter sweeps, the all-pairs drift, and training.

ksdp has no runtime of its own: every sharded path is one ``jax.jit`` of a ``jax.shard_map`` over
a :class:`jax.sharding.Mesh`, so the same code runs on the devices of one host and, after
``jax.distributed.initialize()``, on the devices of many (``docs/scaling.md``). Three axes can be
sharded:

* **parameter sets** (:func:`ksdp.sweep` with ``mesh=``): each device runs the ``vmap``-ed IPM of
  its slice of the ``P`` sets; no communication until the result is gathered. Run ``p`` draws
  ``jax.random.split(key, P)[p]`` wherever it runs, so the result equals the unsharded sweep.
* **particles** (:func:`ksdp.simulate` with ``mesh=``, :func:`pair_sum`): each device owns
  ``J / n`` particles as targets; the sources travel round the mesh (``method="ring"``, one
  ``ppermute`` per step of the ring, memory ``O(J / n)``) or are all-gathered
  (``method="allgather"``, memory ``O(J)``). Each device draws the same ``[J, d]`` noise as the
  unsharded run and keeps its slice, so a sharded run equals the unsharded one to round-off.
* **training sets** (:func:`ksdp.train` with ``mesh=``): data parallel over the ``R`` parameter
  sets; the network parameters and optimiser state are replicated, each device matches its own
  sets (the permutation sweeps stay local), and the loss is summed over the mesh before the
  gradient, so every device takes the same Adam step as the unsharded loop.

Sizes must divide evenly where an axis is split (``J`` and ``R`` by the number of devices); a
parameter sweep pads ``P`` itself. Without ``mesh=`` nothing changes.
"""
from __future__ import annotations

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from ksdp import flows as _flows
from ksdp import ipm as _ipm

METHODS = ("ring", "allgather")


# --------------------------------------------------------------------------------------------
# Meshes and gathering
# --------------------------------------------------------------------------------------------
def make_mesh(n_devices: Optional[int] = None, axis: str = "devices") -> Mesh:
    """A one-axis mesh over the first ``n_devices`` devices (default: all, of every host).

    Example:
      >>> import ksdp
      >>> mesh = ksdp.parallel.make_mesh(1)
      >>> mesh.shape["devices"]
      1
    """
    devices = jax.devices()
    n = len(devices) if n_devices is None else n_devices
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= len(devices):
        raise ValueError(f"n_devices must be an integer in [1, {len(devices)}] (the devices JAX sees), got "
                         f"{n_devices!r}. On a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N "
                         f"(set before importing jax) gives N devices.")
    return Mesh(np.asarray(devices[:n]), (axis,))


def mesh_axis(mesh, axis: Optional[str] = None):
    """Validates ``mesh`` and picks its axis; returns ``(axis_name, size)``."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (e.g. ksdp.parallel.make_mesh()), "
                        f"got {type(mesh).__name__}.")
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
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree_util.tree_map(one, tree)


def _check_divisible(n: int, n_dev: int, what: str, fix: str):
    if n % n_dev:
        lo, hi = n // n_dev * n_dev, -(-n // n_dev) * n_dev
        raise ValueError(f"{what}={n} must be a multiple of the {n_dev} devices of the mesh axis to be split "
                         f"across them; {fix} (e.g. {lo or hi} or {hi}).")


# --------------------------------------------------------------------------------------------
# The drift sharded along particles
# --------------------------------------------------------------------------------------------
def _pair_sum_local(targets, sources, delta, *, axis, n_dev, kernel, tile, method):
    """Inside ``shard_map``: this device's targets against the sources of every device."""
    if method == "allgather":
        everything = jax.lax.all_gather(sources, axis, tiled=True)
        return _ipm.pair_sum(targets, everything, delta, kernel=kernel, tile=tile)
    ring = [(j, (j + 1) % n_dev) for j in range(n_dev)]

    def hop(_, carry):
        acc, src = carry
        nxt = jax.lax.ppermute(src, axis, ring)  # issued before the compute, so they can overlap
        return acc + _ipm.pair_sum(targets, src, delta, kernel=kernel, tile=tile), nxt

    acc = jnp.zeros_like(targets)
    if n_dev > 1:  # the loop below leaves the last block's contribution out
        acc, sources = jax.lax.fori_loop(0, n_dev - 1, hop, (acc, sources))
    return acc + _ipm.pair_sum(targets, sources, delta, kernel=kernel, tile=tile)


@partial(jax.jit, static_argnames=("mesh", "axis", "kernel", "tile", "method"))
def _pair_sum_sharded(targets, sources, delta, *, mesh, axis, kernel, tile, method):
    n_dev = mesh.shape[axis]
    fn = partial(_pair_sum_local, axis=axis, n_dev=n_dev, kernel=kernel, tile=tile, method=method)
    return jax.shard_map(fn, mesh=mesh, in_specs=(P(axis), P(axis), P()), out_specs=P(axis))(
        targets, sources, delta)


def _check_method(method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")


def pair_sum(targets, sources, delta, mesh, *, axis: Optional[str] = None, kernel: str = "blob",
             tile: Optional[int] = None, method: str = "ring"):
    r""":func:`ksdp.ipm.pair_sum` with targets and sources split across the devices of ``mesh``.

    Args:
      targets: ``[T, d]``; ``T`` a multiple of the number of devices.
      sources: ``[J, d]``; ``J`` a multiple of the number of devices.
      delta: regularisation length.
      mesh: a :class:`jax.sharding.Mesh`; ``axis`` names the axis to split (default: its only one).
      kernel, tile: as in :func:`ksdp.ipm.pair_sum`.
      method: ``"ring"`` (sources rotate round the mesh; memory ``O(J / n)`` a device) or
        ``"allgather"`` (every device gathers all sources; one collective, memory ``O(J)``).

    Returns:
      ``[T, d]``, sharded along the mesh axis; equal to the unsharded sum to round-off.
    """
    axis, n_dev = mesh_axis(mesh, axis)
    _check_method(method)
    targets = jnp.asarray(targets)
    sources = jnp.asarray(sources, targets.dtype)
    if targets.ndim != 2 or sources.ndim != 2 or sources.shape[1] != targets.shape[1]:
        raise ValueError(f"targets and sources must be [T, d] and [J, d], got {targets.shape} and {sources.shape}.")
    _check_divisible(targets.shape[0], n_dev, "the number of targets", "pad or trim the targets")
    _check_divisible(sources.shape[0], n_dev, "the number of sources", "pad or trim the sources")
    tile = int(min(tile or _ipm.default_tile(), targets.shape[0] // n_dev))
    return _pair_sum_sharded(targets, sources, delta, mesh=mesh, axis=axis, kernel=kernel, tile=tile,
                             method=method)


# --------------------------------------------------------------------------------------------
# Simulation sharded along particles
# --------------------------------------------------------------------------------------------
def _run_particles(key, params, x0, save_at, *, mesh, axis, method, n_particles, d, kernel, flow, dt,
                   n_snapshots, tile):
    """:func:`ksdp.ipm._run` with the particles split across ``mesh[axis]`` (see the module doc)."""
    n_dev = mesh.shape[axis]
    n_local = n_particles // n_dev
    init_key, noise_key = jax.random.split(key)
    x_all = _ipm.uniform_ball(init_key, n_particles, d) if x0 is None else x0
    v = _flows.resolve_flow(flow, d)

    def local(x_all, params):
        start = jax.lax.axis_index(axis) * n_local
        scale = params.chi * params.mass / n_particles

        def drift(x):
            chem = _pair_sum_local(x, x, params.delta, axis=axis, n_dev=n_dev, kernel=kernel, tile=tile,
                                   method=method)
            return -scale * chem + jax.vmap(v, in_axes=(0, None))(x, params.flow).astype(x.dtype)

        def noise(n):  # the unsharded run's [J, d] noise, of which this device keeps its rows: O(J d)
            xi = jax.random.normal(jax.random.fold_in(noise_key, n), (n_particles, d), x_all.dtype)
            return jax.lax.dynamic_slice_in_dim(xi, start, n_local)

        x = jax.lax.dynamic_slice_in_dim(x_all, start, n_local)
        buf, bad = _ipm._integrate(x, save_at, drift, noise, jnp.sqrt(2.0 * params.mu * dt).astype(x.dtype), dt,
                                   n_snapshots)
        never = jnp.iinfo(jnp.int32).max
        first = jax.lax.pmin(jnp.where(bad < 0, never, bad), axis)  # the first step on any device
        return buf, jnp.where(first == never, -1, first)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P()), out_specs=(P(None, axis), P()),
                         check_vma=False)(x_all, params)


_run_particles_jit = jax.jit(_run_particles, static_argnames=("mesh", "axis", "method") + _ipm._STATIC)


def _simulate(key, params, x0, save_at, static: dict, *, mesh, axis=None, method="ring"):
    """Back end of ``ksdp.simulate(..., mesh=)``: ``(snapshots [S, J, d] sharded, nonfinite_step)``; the
    step is gathered, so every process can read it."""
    axis, n_dev = mesh_axis(mesh, axis)
    _check_method(method)
    j = static["n_particles"]
    _check_divisible(j, n_dev, "n_particles (J)", "choose J accordingly")
    static = dict(static, tile=int(min(static["tile"], j // n_dev)))
    buf, bad = _run_particles_jit(key, params, x0, save_at, mesh=mesh, axis=axis, method=method, **static)
    return buf, jnp.asarray(gather(bad))


# --------------------------------------------------------------------------------------------
# Parameter sweeps sharded along the parameter axis
# --------------------------------------------------------------------------------------------
def _run_sets(keys, params, x0, save_at, *, mesh, axis, **static):
    x_spec = P() if x0 is None or x0.ndim == 2 else P(axis)

    def local(keys, params, x0):
        return _ipm._run_batched(keys, params, x0, save_at, **static)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P(axis), x_spec), out_specs=(P(axis), P(axis)),
                         check_vma=False)(keys, params, x0)


_run_sets_jit = jax.jit(_run_sets, static_argnames=("mesh", "axis") + _ipm._STATIC)


def _sweep(keys, params, x0, save_at, static: dict, *, mesh, axis=None):
    """Back end of ``ksdp.sweep(..., mesh=)``: ``P`` is padded to a multiple of the devices (the
    padding repeats the last set and is dropped). Returns ``(snapshots [P, S, J, d] sharded,
    nonfinite [P])``, the latter gathered so every process can read it."""
    axis, n_dev = mesh_axis(mesh, axis)
    size = keys.shape[0]
    pad = -size % n_dev
    if pad:
        take = np.minimum(np.arange(size + pad), size - 1)
        keys, params = keys[take], jax.tree_util.tree_map(lambda a: a[take], params)
        x0 = x0 if x0 is None or x0.ndim == 2 else x0[take]
    buf, bad = _run_sets_jit(keys, params, x0, save_at, mesh=mesh, axis=axis, **static)
    return buf[:size] if pad else buf, jnp.asarray(gather(bad)[:size])


# --------------------------------------------------------------------------------------------
# Training, data parallel over the parameter sets
# --------------------------------------------------------------------------------------------
def _minibatch(mesh, axis: Optional[str], n_sets: int):
    """The jitted, sharded mini-batch of :func:`ksdp.train`: ``fn(state, targets, eta, model_cfg, cfg)``.

    ``targets [R, J, d]``, ``eta [R, p]`` and ``state.perm [R, N]`` are split along ``R = n_sets``
    (checked to be a multiple of the devices); the network and optimiser state are replicated.
    """
    axis, n_dev = mesh_axis(mesh, axis)
    _check_divisible(n_sets, n_dev, "the number of parameter sets R", "train on a multiple of the devices")
    return lambda state, targets, eta, model_cfg, cfg: _minibatch_sharded(state, targets, eta, model_cfg, cfg,
                                                                           mesh, axis)


@partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _minibatch_sharded(state, targets, eta, model_cfg, cfg, mesh, axis):
    from ksdp import training as _training

    state_spec = _training.TrainState(P(), P(), P(axis), P(), P())
    fn = partial(_training._minibatch, model_cfg=model_cfg, cfg=cfg, axis=axis)
    return jax.shard_map(fn, mesh=mesh, in_specs=(state_spec, P(axis), P(axis)), out_specs=(state_spec, P()),
                         check_vma=False)(state, targets, eta)
