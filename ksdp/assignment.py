r"""Exact linear assignment of many small cost matrices at once, under ``jit`` and ``vmap``.

`solve_batch` takes ``c [B, M, M]`` and returns, for every matrix, the permutation ``sigma``
minimising $\sum_i c_{i\sigma(i)}$. It is the sub-problem solver of the block sweeps
(`ksdp.transport.block_sweep`), where most blocks arrive already optimal, so it works in two stages:

1. **Is the identity optimal?** It is if and only if the graph with arc weights
   $D_{ij} = c_{ij} - c_{jj}$ (row ``i`` takes column ``j`` from row ``j``) has no negative cycle,
   since the cost of any permutation minus that of the identity is $\sum_i D_{i\sigma(i)}$.
   Bellman--Ford from a zero potential, for all blocks at once, settles within ``M - 1``
   relaxations exactly when there is none (`identity_is_optimal`). After 30 sweeps of a descent at
   N = 2000 this clears 99.7% of random blocks and 83.5% of spatially local ones
   (``python -m benchmarks.assignment``).
2. **Shortest augmenting paths** (Jonker--Volgenant, in the form of Crouse, IEEE TAES 2016, which
   SciPy's ``linear_sum_assignment`` implements), from a column reduction and the tight arcs it
   leaves, on the remaining blocks only. One loop runs a Dijkstra step in every block at once,
   and each block works through its own free rows: a block whose search reached a free column
   updates its duals, flips its path and starts on its next free row in the same step, so the
   loop lasts as long as the busiest block, not the sum over free rows of the slowest search.
   Whenever at most a quarter of the blocks are still searching (at once, where the identity
   check cleared most of them) they are gathered into a batch of ``B / 4`` (then ``B / 16``), so
   a step costs what the blocks still searching cost. Only one loop per batch size is compiled,
   which keeps the program quick to compile (``python -m benchmarks.assignment`` reports it, as
   every program that matches, training's step first, holds the solver). The batch is the minor
   axis of every array
   (``[M, B]``: XLA's CPU loops vectorise over it, unlike ``[B, M]`` with its short minor axis),
   the row of the cost matrix is one gather of a contiguous row per block, the augmenting
   path is flipped in one step from a bit set of its columns kept during the search (no
   sequential walk back), and nothing is sorted: a block's next free row is the smallest one
   above its last, and the blocks to gather are put first by a cumulative sum (on a CPU, XLA's sorts
   cost about a tenth of a sweep).
   Indices and the path bit sets use the narrowest integer types that hold them (``int8`` and
   ``uint16`` at M = 16), since every step is a few dozen passes over ``[M, B]`` arrays and narrower
   types move less memory (about 15% of a step against ``int32`` at M = 16, ``benchmarks/assignment.py``).

Exact in the arithmetic of ``c``'s dtype: ``tests/test_assignment.py`` checks the optimum against
SciPy on random problems of sizes 1 to 64, with ties. optax's Hungarian algorithm
(``optax.assignment.hungarian_algorithm``) stays in the tests as a second reference.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ksdp._checks import is_concrete as _is_concrete

_FEWEST = 8  # the search gathers into no batch under 8 blocks: a step over fewer costs about the loop's overhead


def _true_first(flag):
    """The stable permutation that puts the ``True`` entries of ``flag [B]`` first (no sort: a cumsum and a scatter)."""
    f = flag.astype(jnp.int32)
    pos = jnp.where(flag, jnp.cumsum(f) - 1, jnp.sum(f) + jnp.cumsum(1 - f) - 1)
    return jnp.zeros(flag.shape, jnp.int32).at[pos].set(jnp.arange(flag.shape[0], dtype=jnp.int32), unique_indices=True)


def identity_is_optimal(c, rounds: int | None = None, *, leave: int = 0):
    r"""Whether the identity solves each assignment problem ``c [B, M, M]``: ``[B]`` bool.

    Bellman--Ford on the arc weights $D_{ij} = c_{ij} - c_{jj}$ from a zero potential, all blocks
    at once, stopping as soon as no potential changes: ``True`` where they settled within
    ``rounds`` relaxations (default ``M``; no negative cycle, so the identity is optimal). ``False``
    means "not shown optimal" (a negative cycle, or a float tie that rounding makes one). Blocks
    with a negative 2-cycle ($D_{ij} + D_{ji} < 0$: swapping two rows pays) are ``False`` at once
    and do not hold the relaxations back, as they do not when a fresh matching is solved.

    ``leave``: stop once at most this many blocks are still relaxing (those are reported ``False``,
    "not shown optimal"); `solve_batch` leaves ``B // 64`` to its exact solver, which runs anyway.
    """
    return _identity_check(c, c.shape[1] if rounds is None else rounds, leave=leave)


def _identity_check(c, rounds: int, leave: int):
    """`identity_is_optimal`, stopping once at most ``leave`` blocks are still relaxing (reported ``False``)."""
    b_, m = c.shape[0], c.shape[1]
    d = jnp.transpose(c - jnp.diagonal(c, axis1=1, axis2=2)[:, None, :], (1, 2, 0))  # [i, j, B]
    swap_pays = jnp.any(d + jnp.transpose(d, (1, 0, 2)) < 0, axis=(0, 1))  # [B]

    def body(s):
        pot, _, r = s
        new = jnp.minimum(pot, jnp.min(pot[:, None, :] + d, axis=0))
        return new, jnp.any(new < pot, axis=0), r + 1

    init = (jnp.zeros((m, b_), c.dtype), ~swap_pays, jnp.int32(0))
    unsettled = jax.lax.while_loop(lambda s: (jnp.sum(s[1] & ~swap_pays) > leave) & (s[2] < rounds), body, init)[1]
    return ~unsettled & ~swap_pays


class _Search(NamedTuple):
    """The state of `_sap`, batch axis last: duals, matching, and each block's current Dijkstra search."""

    u: jax.Array  # [M, B] row duals
    v: jax.Array  # [M, B] column duals
    row4col: jax.Array  # [M, B] row matched to each column, -1 if none
    start: jax.Array  # [B] the free row being augmented
    spc: jax.Array  # [M, B] shortest path cost to each column
    path: jax.Array  # [M, B] predecessor row of each column
    pmask: jax.Array  # [W, M, B] bit set of the columns on the path to each column
    scanned_row: jax.Array  # [M, B]
    rowdist: jax.Array  # [M, B] distance at which each scanned row was reached
    sc: jax.Array  # [M, B] scanned columns
    i: jax.Array  # [B] row the search continues from
    pm_i: jax.Array  # [W, B] path bit set of that row's column
    minval: jax.Array  # [B] distance of that row
    act: jax.Array  # [B] still searching


class _Types(NamedTuple):
    """The constants of a batch of ``M x M`` searches: index and bit-set types, row indices, own bits."""

    m: int
    dt: Any  # cost dtype
    it: Any  # index dtype
    wt: Any  # bit-set word dtype
    ar: Any  # [M, 1] row indices (it)
    ar32: Any  # the same in int32
    own_bit: Any  # [W, M, 1]: each column's bit in its word


def _types(m: int, dt) -> _Types:
    # the narrowest types that hold an index and a bit set of M columns: fewer bytes per [M, B] pass
    it = jnp.int8 if m < 128 else jnp.int16 if m < 2**15 else jnp.int32
    wt, bits = (jnp.uint8, 8) if m <= 8 else (jnp.uint16, 16) if m <= 16 else (jnp.uint32, 32)
    n_words = (m + bits - 1) // bits
    ar = jnp.arange(m, dtype=it)[:, None]  # [M, 1]
    ar32 = ar.astype(jnp.int32)
    word_of = jnp.arange(n_words, dtype=jnp.int32)[:, None, None] == (ar32 // bits)[None]  # [W, M, 1]
    own_bit = jnp.where(word_of, jnp.left_shift(wt(1), (ar32 % bits).astype(wt))[None], wt(0))
    return _Types(m, dt, it, wt, ar, ar32, own_bit)


def _initial_search(c, t: _Types):
    """Tight arcs from the column reduction, the free rows and every block's first search: ``(state, free)``."""
    b_, m = c.shape[0], t.m
    it, ar = t.it, t.ar
    inf = jnp.array(jnp.inf, t.dt)
    ct = jnp.transpose(c, (1, 2, 0))  # [M(i), M(j), B]
    v = jnp.min(ct, axis=0)  # column reduction: u = 0, v_j = min_i c_ij is feasible
    arg = jnp.argmin(ct, axis=0).astype(it)  # [M(j), B]: the row of each column's minimum
    # start from tight arcs: column j takes its minimum's row unless a smaller column already did
    earlier = (arg[:, None, :] == arg[None, :, :]) & (ar[None, :, :] < ar[:, None, :])  # [j, j', B]
    row4col = jnp.where(jnp.any(earlier, axis=1), it(-1), arg)  # [M(j), B]
    assigned = jnp.any(row4col[None, :, :] == ar[:, :, None], axis=1)  # [M(i), B]
    free = ~assigned  # [M(i), B]: the rows to augment, in increasing order (a sort along M is slow on CPU)
    first = jnp.min(jnp.where(free, ar, it(m)), axis=0)  # [B], M where none
    live = first < m
    n_words = t.own_bit.shape[0]
    state = _Search(
        u=jnp.zeros((m, b_), t.dt),
        v=v,
        row4col=row4col,
        start=first,
        spc=jnp.full((m, b_), inf, t.dt),
        path=jnp.zeros((m, b_), it),
        pmask=jnp.zeros((n_words, m, b_), t.wt),
        scanned_row=(ar == first[None]) & live[None],
        rowdist=jnp.zeros((m, b_), t.dt),
        sc=jnp.zeros((m, b_), bool),
        i=first,
        pm_i=jnp.zeros((n_words, b_), t.wt),
        minval=jnp.zeros((b_,), t.dt),
        act=live,
    )
    return state, free


def _search_step(c, free, t: _Types):
    """One Dijkstra step of every searching block of ``c [B, M, M]``, as a ``while_loop`` body."""
    m, it, wt, ar, ar32, own_bit = t.m, t.it, t.wt, t.ar, t.ar32, t.own_bit
    inf = jnp.array(jnp.inf, t.dt)
    nb = c.shape[0]
    flat = c.reshape(-1)  # c[b, i, j] at (b * M + i) * M + j: a block's row is contiguous
    bidx = jnp.arange(nb, dtype=jnp.int32)[None]

    def step(s: _Search) -> _Search:
        # one Dijkstra step from row i (reached with distance minval) in every searching block
        act = s.act
        ci = jnp.take(flat, (bidx * m + s.i[None].astype(jnp.int32)) * m + ar32, mode="clip")  # c[b, i_b, :]
        u_i = jnp.max(jnp.where(ar == s.i[None], s.u, -inf), axis=0)  # a max: cheaper than a sum here
        r = (s.minval - u_i)[None] + ci - s.v
        better = act[None] & ~s.sc & (r < s.spc)
        path = jnp.where(better, s.i[None], s.path)
        spc = jnp.where(better, r, s.spc)
        pmask = jnp.where(better[None], s.pm_i[:, None, :] | own_bit, s.pmask)
        cand = jnp.where(s.sc, inf, spc)
        low = jnp.min(cand, axis=0)
        j = jnp.argmin(cand, axis=0).astype(it)
        at_j = ar == j[None]
        sc = s.sc | (act[None] & at_j)
        owner = jnp.max(jnp.where(at_j, s.row4col, it(-1)), axis=0)  # one column is j: its row
        pm_j = jnp.max(jnp.where(at_j[None], pmask, wt(0)), axis=1)  # [W, B]
        # column j is taken: continue from its row. An infinite or NaN distance (overflowed or
        # non-finite costs) ends the search unmatched: the block is returned as the identity
        go = act & (owner >= 0) & (low < inf)
        hit = go[None] & (ar == owner[None])
        scanned_row = s.scanned_row | hit
        rowdist = jnp.where(hit, low[None], s.rowdist)
        minval = jnp.where(act, low, s.minval)
        # a search that reached a free column: dual update and path flip, then the next free row
        fin = act & ~go
        found = fin & (low < inf)
        u = jnp.where(scanned_row & found[None], s.u + (minval[None] - rowdist), s.u)
        v = jnp.where(sc & found[None], s.v - (minval[None] - spc), s.v)
        on_path = jnp.any((pm_j[:, None, :] & own_bit) != 0, axis=0)  # [M(j), B]
        row4col = jnp.where(on_path & found[None], path, s.row4col)
        cur = jnp.min(jnp.where(free & (ar > s.start[None]), ar, it(m)), axis=0)  # the next free row
        nxt = fin & (cur < m)
        return _Search(
            u=u,
            v=v,
            row4col=row4col,
            start=jnp.where(fin, cur, s.start),
            spc=jnp.where(fin[None], inf, spc),
            path=path,  # every column's entry is rewritten by the next search's first step
            pmask=pmask,
            scanned_row=jnp.where(fin[None], (ar == cur[None]) & nxt[None], scanned_row),
            rowdist=jnp.where(fin[None], jnp.zeros((), t.dt), rowdist),
            sc=sc & ~fin[None],
            i=jnp.where(fin, cur, jnp.where(go, owner, s.i)),
            pm_i=jnp.where(fin[None], wt(0), jnp.where(act[None], pm_j, s.pm_i)),
            minval=jnp.where(fin, jnp.zeros((), t.dt), minval),
            act=go | nxt,
        )

    return step


def _sap(c, todo, levels: int):
    """Shortest augmenting paths on the blocks ``todo [B]`` of ``c [B, M, M]``; returns ``[B, M]`` int32.

    Batch-minor inside. One loop in which every block works through its own free rows: a block whose
    search ends updates its duals, flips its path and starts on its next free row in the same step.
    When at most a quarter of the blocks are still searching they are gathered into a batch of
    ``B / 4`` (then ``B / 16``, ...; ``levels`` sizes), since every step costs the same for every
    block of a batch. The other blocks (``~todo``) keep the identity.
    """
    b_, m, _ = c.shape
    t = _types(m, c.dtype)
    state, free = _initial_search(c, t)
    state = state._replace(act=state.act & todo)
    sizes = sorted({b_ // 4**k for k in range(max(1, levels)) if b_ // 4**k >= min(b_, _FEWEST)}, reverse=True)

    def run(state, c, free, sizes):
        # search until at most the next size's blocks are left, then gather those and go on
        nxt = sizes[1] if len(sizes) > 1 else 0
        state = jax.lax.while_loop(lambda s: jnp.sum(s.act) > nxt, _search_step(c, free, t), state)
        if len(sizes) == 1:
            return state.row4col
        idx = _true_first(state.act)[:nxt]  # the searching blocks first (distinct indices)
        sub = jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=-1), state)
        done = run(sub, c[idx], free[:, idx], sizes[1:])
        return state.row4col.at[:, idx].set(done)

    row4col = run(state, c, free, sizes)
    ar = t.ar
    col4row = jnp.max(jnp.where(row4col[None, :, :] == ar[:, :, None], ar[None, :, :], t.it(-1)), axis=1)  # [M(i), B]
    # the identity where the block was not searched, or where its search met a non-finite cost
    complete = jnp.all(col4row >= 0, axis=0) & todo
    return jnp.where(complete[None], col4row, ar).T.astype(jnp.int32)


def solve_batch(c, *, rounds: int | None = None, levels: int = 3):
    """Optimal assignments of ``c [B, M, M]`` (or one ``[M, M]``): ``sigma [B, M]`` int32, row ``i`` -> column.

    Blocks that the identity check clears keep the identity (the check of `identity_is_optimal`,
    stopped once at most ``B // 64`` blocks still relax: those are solved with the rest); the others
    are solved by shortest augmenting paths, whose loop gathers its still-searching blocks into a
    batch of ``B/4``, then ``B/16``, ... as the others finish (never fewer than 8 blocks). Ties
    may be broken differently from SciPy; the cost is the same. Measured against optax's Hungarian
    and SciPy in ``python -m benchmarks.assignment`` (``docs/benchmarks.md``).

    Args:
      c: ``[B, M, M]`` cost matrices (or one ``[M, M]``), any float dtype.
      rounds: Bellman--Ford relaxations of the identity check (default ``M``, enough to settle
        every block whose identity is optimal; ``0`` skips the check).
      levels: how many batch sizes the search loop is compiled for (``1``: always the whole
        batch). Each size is one more compiled loop.
    """
    c = jnp.asarray(c)
    if c.ndim not in (2, 3) or c.shape[-1] != c.shape[-2]:
        raise ValueError(f"c must be square cost matrices [M, M] or [B, M, M], got shape {c.shape}.")
    if not jnp.issubdtype(c.dtype, jnp.floating):
        raise TypeError(f"c must hold floats (got {c.dtype}); cast integer costs with c.astype(float).")
    if c.size == 0:
        raise ValueError(f"c is empty (shape {c.shape}).")
    if _is_concrete(c) and not bool(jnp.all(jnp.isfinite(c))):
        raise ValueError("c contains NaN or inf: every cost must be finite.")
    for name, v, low in (("rounds", rounds, 0), ("levels", levels, 1)):
        if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low):
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}.")
    return _solve_batch(c, rounds=rounds, levels=int(levels))


@partial(jax.jit, static_argnames=("rounds", "levels"))
def _solve_batch(c, *, rounds, levels):
    single = c.ndim == 2
    c = c[None] if single else c
    b_, m = c.shape[0], c.shape[1]
    if m == 1:
        out = jnp.zeros((b_, 1), jnp.int32)
        return out[0] if single else out
    rounds = m if rounds is None else int(rounds)
    # the last few blocks still relaxing go to the augmenting paths, which run for the others anyway
    # (early in a descent, a handful of blocks without a profitable swap would otherwise hold every
    # block through all M rounds, about a tenth of a sweep)
    bad = ~_identity_check(c, rounds, leave=b_ // 64) if rounds > 0 else jnp.ones((b_,), bool)
    out = _sap(c, bad, levels)
    return out[0] if single else out
