r"""Block-coordinate optimal assignment between equal-size point clouds: the training loop's matching.

For point clouds $x, y \in \mathbb{R}^{N\times d}$ with uniform weights the optimal plan of
the squared-distance cost is a permutation (Birkhoff--von Neumann), and

$$
W_2^2(x, y) = \min_{\sigma} \frac1N \sum_i |x_i - y_{\sigma(i)}|^2 .
$$

The paper (Sec. 3.3) improves a permutation by re-solving one random $M\times M$ sub-problem
at a time. Here one **sweep** partitions all $N$ rows into $\lfloor N/M\rfloor$ disjoint
random blocks (plus one block holding the remainder rows) and solves every block *exactly* at once
with `ksdp.assignment.solve_batch`, all problems' blocks in one batch. A block keeps its current
sub-assignment unless the exact solution is strictly cheaper, so a sweep never increases the cost:
the current sub-permutation is a feasible point of each block problem.

Conventions: ``perm[i]`` is the column (index into ``y``) matched to row ``i``; costs are the
*mean* squared distance $\frac1N\sum_i |x_i - y_{\sigma(i)}|^2$ (a $W_2^2$ estimate).
Every function takes one problem ``[N, d]`` or a batch ``[R, N, d]`` (one key per batch member is
split from ``key``). A certified distance is `ksdp.wasserstein.w2`'s.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from optax import assignment as _assignment

from ksdp import assignment as _assign
from ksdp._checks import is_concrete as _is_concrete
from ksdp._checks import is_integer as _is_integer
from ksdp._checks import is_permutation

DEFAULT_BLOCK = 16
EXACT_MAX = 256  # `solve` and `ksdp.wasserstein.w2` solve problems up to this size exactly


class AssignmentResult(NamedTuple):
    """Outcome of `solve`.

    Attributes:
      perm: ``[N]`` (or ``[R, N]``) int32 permutation.
      cost: mean squared matched distance of ``perm``.
      n_sweeps: sweeps done.
      converged: whether the relative improvement of the last sweep fell below ``rtol``
        before the sweep budget ran out.
    """

    perm: jax.Array
    cost: jax.Array
    n_sweeps: jax.Array
    converged: jax.Array


def check_clouds(x, y, perm=None, block: int | None = None):
    """Validates a transport problem; returns ``(x, y)`` as arrays of one floating dtype."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim not in (2, 3) or x.shape[-1] < 1:
        raise ValueError(f"x must be [N, d] or [R, N, d], got shape {x.shape}.")
    if y.shape != x.shape:
        what = "numbers of points N" if x.ndim == y.ndim and x.shape[-1] == y.shape[-1] else "shapes"
        raise ValueError(
            f"x and y must have the same shape (equal-size clouds); their {what} differ: "
            f"{x.shape} vs {y.shape}. Subsample the larger cloud to the size of the smaller."
        )
    if x.shape[-2] < 1:
        raise ValueError("the clouds are empty (N = 0).")
    if perm is not None and jnp.shape(perm) != x.shape[:-1]:
        raise ValueError(f"perm must have shape {x.shape[:-1]}, got {jnp.shape(perm)}.")
    if perm is not None and _is_concrete(perm) and not is_permutation(perm):
        raise ValueError(
            "perm (the warm start) must be a permutation of 0..N-1 along its last axis; "
            "pass None to start from the identity."
        )
    if block is not None and (not _is_integer(block) or block < 2):
        raise ValueError(f"block (the sub-problem size M) must be an integer >= 2, got {block!r}.")
    dtype = jnp.result_type(x.dtype, y.dtype, jnp.float32)
    x, y = x.astype(dtype), y.astype(dtype)
    if _is_concrete(x) and _is_concrete(y) and not (bool(jnp.all(jnp.isfinite(x))) and bool(jnp.all(jnp.isfinite(y)))):
        raise ValueError("x or y contains non-finite points (NaN or inf).")
    return x, y


def matched_cost(x, y, perm):
    r"""$\frac1N\sum_i |x_i - y_{\mathrm{perm}[i]}|^2$; ``x, y`` are ``[..., N, d]``, ``perm`` is ``[..., N]``."""
    matched = jnp.take_along_axis(y, perm[..., None], axis=-2)
    return jnp.mean(jnp.sum((x - matched) ** 2, axis=-1), axis=-1)


def identity(x):
    """The identity permutation for clouds ``x`` (``[N]`` or ``[R, N]``)."""
    return jnp.broadcast_to(jnp.arange(x.shape[-2], dtype=jnp.int32), x.shape[:-1])


def _solve_blocks(x, y, perm, rows):
    """Exactly re-solves the disjoint row blocks ``rows [R, B, m]`` of ``R`` problems ``x, y [R, N, d]``.

    All ``R * B`` blocks go to `ksdp.assignment.solve_batch` as one batch.
    """
    cols = jnp.take_along_axis(perm[:, None, :], rows.reshape(rows.shape[0], 1, -1), axis=2).reshape(rows.shape)
    gather = jax.vmap(lambda a, idx: a[idx])
    xb, yb = gather(x, rows), gather(y, cols)  # [R, B, m, d]
    c = jnp.sum((xb[:, :, :, None, :] - yb[:, :, None, :, :]) ** 2, axis=-1)  # [R, B, m, m]
    local = _assign.solve_batch(c.reshape(-1, *c.shape[2:])).reshape(c.shape[:3])
    old = jnp.trace(c, axis1=2, axis2=3)
    new = jnp.sum(jnp.take_along_axis(c, local[..., None], axis=3)[..., 0], axis=2)
    keep = ~(new < old)  # strict improvement only: a sweep can never raise the cost
    new_cols = jnp.where(keep[..., None], cols, jnp.take_along_axis(cols, local, axis=2))
    return jax.vmap(lambda p, r, nc: p.at[r].set(nc))(perm, rows, new_cols)


def _local_order(key, x, m):
    """A row order whose consecutive runs of ``m`` rows are spatially compact in ``x``.

    A randomly rotated ``d``-level grid of equal-count cells: the rows are cut into
    ``b ~ (N/m)^(1/d)`` strips along a random direction, each strip into ``b`` strips along the
    next direction, and so on; the last direction orders the rows inside a cell.
    """
    n, d = x.shape
    k_rot, k_shift = jax.random.split(key)
    q, _ = jnp.linalg.qr(jax.random.normal(k_rot, (d, d), x.dtype))
    proj = x @ q
    b = max(1, int(round((n / m) ** (1.0 / d))))
    shifts = jax.random.uniform(k_shift, (d,))  # random cell offsets: b + 1 cells per level
    group = jnp.zeros(n, jnp.int32)
    for level in range(d - 1):
        n_groups = (b + 1) ** level
        o = jnp.lexsort((proj[:, level], group))
        pos = jnp.zeros(n, jnp.int32).at[o].set(jnp.arange(n, dtype=jnp.int32))
        sizes = jnp.bincount(group, length=n_groups)
        start = jnp.cumsum(sizes) - sizes
        within = (pos - start[group]).astype(x.dtype) / jnp.maximum(sizes[group], 1)  # in [0, 1)
        group = group * (b + 1) + jnp.floor(within * b + shifts[level]).astype(jnp.int32)
    return jnp.lexsort((proj[:, d - 1], group))


def block_rows(key, x, block: int, local):
    """The rows of one sweep: ``(blocks [B, m], extra [1, m] or None)`` with ``m = min(block, N)``.

    ``blocks`` are disjoint; ``extra`` holds the ``N mod m`` remainder rows, completed with rows
    already in ``blocks`` (solved after them), so every row is optimised in every sweep.
    """
    n = x.shape[0]
    m = min(block, n)
    n_blocks, rem = divmod(n, m)
    k1, k2, k3 = jax.random.split(key, 3)
    order = jax.lax.cond(local, lambda: _local_order(k1, x, m), lambda: jax.random.permutation(k2, n))
    # a random cyclic offset so that successive local sweeps cut the runs at different places
    order = jnp.roll(order, jax.random.randint(k3, (), 0, m))
    blocks = order[: n_blocks * m].reshape(n_blocks, m)
    extra = jnp.concatenate([order[n_blocks * m :], order[: m - rem]])[None] if rem else None
    return blocks, extra


def _sweep_many(keys, x, y, perm, block, local):
    """One sweep of each of the problems ``x, y [R, N, d]`` (one key each); their blocks are solved together."""
    if x.shape[1] < 2:
        return perm
    blocks, extra = jax.vmap(lambda k, a: block_rows(k, a, block, local))(keys, x)
    perm = _solve_blocks(x, y, perm, blocks)
    return perm if extra is None else _solve_blocks(x, y, perm, extra)


def _sweep_one(key, x, y, perm, block, local):
    """One sweep; ``local`` (traced bool) picks spatially compact blocks instead of random ones."""
    return _sweep_many(key[None], x[None], y[None], perm[None], block, local)[0]


def _sweep_keys(key, n_local, sets):
    """One key per problem of a batch: ``split(key, R)``, or its rows ``index`` of ``split(key, total)``.

    ``sets = (index, total)`` lets a device that holds the problems ``index`` of a batch of ``total``
    (a shard, `ksdp.parallel`) draw exactly the keys the whole batch would give them.
    """
    if sets is None:
        return jax.random.split(key, n_local)
    index, total = sets
    return jax.random.split(key, total)[index]


def _sweep_any(key, x, y, perm, block, local, sets=None):
    """`_sweep_one` for one problem ``[N, d]``, `_sweep_many` with keys split from ``key`` for ``[R, N, d]``."""
    if x.ndim == 2:
        return _sweep_one(key, x, y, perm, block, local)
    return _sweep_many(_sweep_keys(key, x.shape[0], sets), x, y, perm, block, local)


@partial(jax.jit, static_argnames=("block",))
def block_sweep(key, x, y, perm, local=False, *, block: int = DEFAULT_BLOCK):
    """One sweep of block-coordinate exact assignment (pure; no validation, for use inside ``jit``).

    Args:
      key: random key choosing the partition of the rows into blocks.
      x: ``[N, d]`` or ``[R, N, d]``.
      y: the other cloud, of the shape of ``x``.
      perm: current permutation(s), ``[N]`` or ``[R, N]`` (the warm start).
      local: ``False``: blocks of random rows (global moves); ``True``: blocks of rows whose ``x``
        are spatial neighbours (the local moves that remain near the optimum). A traced bool:
        `refine` and `solve` alternate the two.
      block: block size ``M`` (static).

    Returns:
      The new permutation(s); ``matched_cost`` of it is ``<=`` that of ``perm``.
    """
    return _sweep_any(key, x, y, perm, block, local)


def refine(key, x, y, perm, *, n_sweeps: int, block: int = DEFAULT_BLOCK, sets=None):
    """``n_sweeps`` sweeps under ``lax.scan`` (a fixed budget, as the training loop needs).

    Sweeps alternate random blocks (even sweeps) and spatially local blocks (odd sweeps).

    Args:
      sets: for a shard of a batch, ``(index [R_local], R_total)``: the problems' positions in the
        whole batch, so the shard uses the same keys as an unsharded call (see `ksdp.parallel`).

    Returns:
      ``(perm, costs)`` with ``costs [n_sweeps]`` (or ``[n_sweeps, R]``) after each sweep.
    """

    def body(p, inp):
        k, i = inp
        p = _sweep_any(k, x, y, p, block, i % 2 == 1, sets)
        return p, matched_cost(x, y, p)

    return jax.lax.scan(body, perm, (jax.random.split(key, n_sweeps), jnp.arange(n_sweeps)))


def refine_for(key, x, y, perm, n_sweeps, *, block: int = DEFAULT_BLOCK, sets=None):
    """`refine` with a traced number of sweeps (a ``fori_loop``): the permutation only, no costs.

    One compiled sweep serves any ``n_sweeps``, so a program that refines a matching for different
    budgets (the training step: a fresh mini-batch's ``initial_sweeps``, then ``sweeps`` per renewal)
    holds one copy of the block solver. Sweep ``i`` draws its blocks from ``fold_in(key, i)``, random
    for even ``i``, spatially local for odd ``i``; ``sets`` as in `refine`.
    """

    def body(i, p):
        return _sweep_any(jax.random.fold_in(key, i), x, y, p, block, i % 2 == 1, sets)

    return jax.lax.fori_loop(0, n_sweeps, body, perm)


@partial(jax.jit, static_argnames=("block", "max_sweeps"))
def _solve(key, x, y, perm, rtol, *, block, max_sweeps):
    single = x.ndim == 2
    if single:
        x, y, perm, keys = x[None], y[None], perm[None], key[None]
    else:
        keys = jax.random.split(key, x.shape[0])

    def sweeps(p, k):  # a pair of sweeps, random then local: convergence is judged per pair
        fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
        p = _sweep_many(fold(keys, k), x, y, p, block, False)
        return _sweep_many(fold(keys, k + 1), x, y, p, block, True)

    def active(s):
        _, cost, prev, k = s
        return (k < max_sweeps) & ((k == 0) | ((prev - cost) > rtol * prev))

    def body(s):  # every problem sweeps; one that has converged keeps its permutation and count
        p, cost, prev, k = s
        run = active(s)
        q = sweeps(p, jnp.max(k))
        p = jnp.where(run[:, None], q, p)
        new = matched_cost(x, y, p)
        return p, new, jnp.where(run, cost, prev), jnp.where(run, k + 2, k)

    c0 = matched_cost(x, y, perm)
    init = (perm, c0, c0, jnp.zeros(c0.shape, jnp.int32))
    p, cost, prev, k = jax.lax.while_loop(lambda s: jnp.any(active(s)), body, init)
    res = AssignmentResult(p, cost, k, (prev - cost) <= rtol * prev)
    return jax.tree.map(lambda a: a[0], res) if single else res


def solve(
    key, x, y, perm=None, *, block: int = DEFAULT_BLOCK, max_sweeps: int = 200, rtol: float = 1e-5, exact_max: int = 0
) -> AssignmentResult:
    """Sweeps until a pair of sweeps (one random, one local) improves the cost by less than ``rtol``
    (relative), or ``max_sweeps`` sweeps are done.

    Args:
      key: random key.
      x: ``[N, d]`` or ``[R, N, d]`` equal-size clouds.
      y: the other cloud, of the shape of ``x``.
      perm: warm start (default: the identity).
      block: sub-problem size ``M >= 2``; ``N < M`` solves the whole problem exactly.
      max_sweeps: sweep budget.
      rtol: relative improvement under which a sweep counts as converged.
      exact_max: problems with ``N <= exact_max`` are solved by one full Hungarian solve instead
        (exact, and faster than sweeps at that size). Block descent alone can stop in a local
        optimum whose improving cycles are longer than ``M``: see ``docs/transport.md``.

    Returns:
      `AssignmentResult`.
    """
    x, y = check_clouds(x, y, perm, block)
    if not isinstance(max_sweeps, (int, np.integer)) or isinstance(max_sweeps, bool) or max_sweeps < 1:
        raise ValueError(f"max_sweeps must be an integer >= 1 (the sweep budget), got {max_sweeps!r}.")
    if not isinstance(exact_max, (int, np.integer)) or isinstance(exact_max, bool) or exact_max < 0:
        raise ValueError(f"exact_max must be an integer >= 0 (0: never solve exactly), got {exact_max!r}.")
    if not (isinstance(rtol, (int, float, np.floating)) and math.isfinite(rtol) and rtol >= 0):
        raise ValueError(f"rtol must be a finite number >= 0 (relative improvement per sweep), got {rtol!r}.")
    if x.shape[-2] <= exact_max:
        p = exact_assignment(x, y)
        cost = matched_cost(x, y, p)
        return AssignmentResult(p, cost, jnp.zeros(cost.shape, jnp.int32), jnp.ones(cost.shape, bool))
    perm = identity(x) if perm is None else jnp.asarray(perm, jnp.int32)
    return _solve(key, x, y, perm, jnp.asarray(rtol, x.dtype), block=int(block), max_sweeps=int(max_sweeps))


@jax.jit
def exact_assignment(x, y):
    """The optimal permutation by one full Hungarian solve, ``O(N^3)``: for small ``N`` only."""

    def one(x, y):
        c = jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)
        i, j = _assignment.hungarian_algorithm(c)
        return jnp.zeros(x.shape[0], jnp.int32).at[i].set(j.astype(jnp.int32))

    return one(x, y) if x.ndim == 2 else jax.vmap(one)(x, y)
