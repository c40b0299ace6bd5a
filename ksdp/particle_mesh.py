r"""Particle-mesh drifts (PM and P3M): the all-pairs sum of `ksdp.drifts.pair_sum` without its $O(J^2)$.

The direct sum $\sum_i \nabla K_\delta(y_j - x_i)$ costs $O(J^2)$; for the blob kernel, which is
smooth on the scale $\delta$, a mesh of spacing $h \lesssim \delta$ carries it (Hockney and Eastwood,
*Computer Simulation Using Particles*, ch. 5-8, free-space convolution):

1. **Box.** Per axis the cloud (targets and sources) spans ``[lo, hi]``; ``G - 2 * MARGIN`` cells
   of size $h_k = (hi_k - lo_k) / (G - 2\,\mathrm{MARGIN})$ cover it (floored at $\delta/16$ so a
   collapsed cloud keeps a finite grid). The grid has a fixed size $G^d$ (static) and its extent
   follows the cloud, so one compiled program serves every step; the cells may differ per axis,
   which fits a sheared cloud.
2. **Assign.** Triangular-shaped-cloud (TSC, quadratic B-spline) weights put each source on its
   $3^d$ nearest nodes: the density of counts $\rho$.
3. **Convolve.** $\rho$ is zero-padded to $(2G)^d$, so the circular convolution of the FFT is the
   free-space one, and convolved with each component of $\nabla K_\delta$ sampled at the grid
   offsets ($|m_k| < G$). The kernel's transform is divided by the square of the TSC transform per
   axis, $\mathrm{sinc}^6(f_k)$ (the "prefilter"): assignment and interpolation each smooth by that
   transform, and dividing it out removes their $O(h^2)$ smoothing.
4. **Interpolate.** The same TSC weights read the field at the targets. With the same assignment
   and interpolation and an odd kernel, a particle exerts exactly no force on itself (the self term
   of the direct sum is zero too) and the pair forces are antisymmetric on average.

PM's accuracy is governed by the largest cell in units of $\delta$, $s = \max_k h_k/\delta$ (the
relative L2 error of the drift grows like $s^2$ in 2D and faster in 3D; ``benchmarks/particle_mesh.py``
measures it on the paper's states). Near $s \approx 1$ it also falls with the number of particles,
like $J^{-1/2}$: what the grid cannot carry is the field's content on the scale $\delta$, mostly
the particles' noise (laminar3d: 4.7e-3 at $J = 10^4$, 7.9e-4 at $10^6$ on $G = 128$; docs/drifts.md).
`ksdp.simulate` records $s$ over a run
(`ksdp.Trajectory.grid_spacing`) and refuses a PM run whose grid was coarser than `SPACING_LIMIT`.

**P3M** (particle-particle particle-mesh; Hockney and Eastwood ch. 8) removes that dependence: the
kernel is split as $\nabla K_\delta = \nabla K_\delta S + \nabla K_\delta (1 - S)$ with a smooth
switch $S$ (`switch`) that is 1 at the origin and vanishes with its derivative at $r_c$ =
``cutoff`` cells. The far part, smooth on the scale $r_c$ whatever $\delta$, goes on the mesh as
above; the near part, zero beyond $r_c$, is summed directly over the pairs closer than $r_c$, found
by sorting both clouds into cells of side $r_c$ (`near_sum`). Its error falls with the cutoff
whatever $h / \delta$ (measured on a 3D ball of 3000: 2.4e-3, 1.0e-3, 5.4e-4 at 2.5, 5 and 8 cells;
2.7e-4 to 8.3e-4 on the paper's 3D states at 5), so a coarse grid serves a wide or sparse cloud; its cost
is the mesh plus the pairs within $r_c$, which grows like $J^2$ at a fixed grid where the cloud is
dense.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from ksdp import kernels as _kernels
from ksdp._checks import check_concrete_inputs, is_concrete

MARGIN = 2  # cells between the cloud and the grid's edge: the TSC stencil reaches one node past its nearest
# nodes per axis (the accuracy table of `python -m benchmarks.particle_mesh`); in 3D, 192 keeps laminar3d's
# cloud at J = 10^6 in cells of 0.74 delta (128: 1.07, past SPACING_LIMIT)
DEFAULT_GRID = {2: 512, 3: 192}
MIN_GRID = 8
SPACING_LIMIT = 1.0  # largest cell / delta that a checked simulation accepts
_FLOOR = 1.0 / 16  # smallest cell / delta: a cloud narrower than the grid keeps cells of delta / 16
KERNELS = ("blob",)
# nodes per axis with the near field, by d and from which J (benchmarks/particle_mesh.py): a finer grid
# costs FFT time and saves near-field pairs, which grow like J^2 at a fixed grid
DEFAULT_P3M_GRID = {2: ((0, 256),), 3: ((0, 96), (100_000, 128))}
DEFAULT_CUTOFF = 5.0  # P3M near-field radius in cells of the grid (its error: module docstring)
NEAR_BLOCK = 64  # targets per near-field block
NEAR_CHUNK = 128  # sources per near-field chunk


def check_grid(grid, d: int, p3m: bool = False, n_particles: int = 0) -> int:
    """The grid size per axis: ``grid``, or the default for ``d`` (and, for P3M, ``n_particles``)."""
    if grid is None:
        if not p3m:
            return DEFAULT_GRID[d]
        return [g for from_j, g in DEFAULT_P3M_GRID[d] if n_particles >= from_j][-1]
    if not isinstance(grid, (int, np.integer)) or isinstance(grid, bool) or grid < MIN_GRID:
        raise ValueError(f"grid (particle-mesh nodes per axis) must be an integer >= {MIN_GRID}, got {grid!r}.")
    return int(grid)


def check_cutoff(cutoff):
    """The P3M near-field radius in cells: None (PM) or a finite number >= 1."""
    if cutoff is None:
        return None
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float, np.integer, np.floating)):
        raise TypeError(f"cutoff (P3M near-field radius in grid cells) must be a number, got {cutoff!r}.")
    if not (np.isfinite(cutoff) and cutoff >= 1):
        raise ValueError(f"cutoff (P3M near-field radius in grid cells) must be finite and >= 1, got {cutoff!r}.")
    return float(cutoff)


def check_kernel(kernel: str) -> None:
    """The particle mesh needs a kernel that is smooth on the grid's scale: the blob kernel."""
    if kernel not in KERNELS:
        raise ValueError(
            f"the particle-mesh drift supports kernel in {KERNELS} (smooth on the scale delta), got {kernel!r}; "
            f"use drift='direct' for it."
        )


def box(points, delta, grid: int):
    r"""The grid that covers ``points``: ``(origin [d], h [d])``, node ``n`` at ``origin + n * h``.

    Args:
      points: ``[N, d]``.
      delta: regularisation length (cells are at least ``delta / 16``).
      grid: nodes per axis ``G`` (static).
    """
    h = _tight_cells(points, delta, grid)
    return jnp.min(points, axis=0) - MARGIN * h, h


def _tsc(u, grid: int):
    """TSC stencil of grid coordinates ``u [N]``: first node ``[N]`` (int32) and weights ``[N, 3]``."""
    nearest = jnp.round(u)
    f = u - nearest  # in [-1/2, 1/2]
    w = jnp.stack([0.5 * (0.5 - f) ** 2, 0.75 - f * f, 0.5 * (0.5 + f) ** 2], axis=-1)
    # inside the box the first node lies in [MARGIN - 1, G - MARGIN - 1]; the clip only keeps a
    # non-finite position (caught by the caller's finiteness check) from indexing out of bounds
    first = jnp.clip(jnp.nan_to_num(nearest) - 1, 0, grid - 3).astype(jnp.int32)
    return first, w


def stencils(points, origin, h, grid: int):
    """First nodes ``[N, d]`` and weights ``[N, 3, ..., 3]`` (outer product over the axes)."""
    n, d = points.shape
    firsts, weights = zip(*(_tsc((points[:, k] - origin[k]) / h[k], grid) for k in range(d)), strict=True)
    w = weights[0]
    for k in range(1, d):
        w = w[..., None] * weights[k].reshape((n,) + (1,) * k + (3,))
    return jnp.stack(firsts, axis=1), w


def deposit(points, origin, h, grid: int):
    """TSC counts of ``points`` on the ``G^d`` nodes ``origin + n * h``: ``(counts, first, weights)``,
    the last two the stencils `interpolate` reads a field back with. Points must lie inside the grid
    by one node (their stencils are clipped, not wrapped)."""
    first, w = stencils(points, origin, h, grid)
    d = points.shape[1]
    counts = lax.scatter_add(
        jnp.zeros((grid,) * d, points.dtype), first, w, _SCATTER[d], mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS
    )
    return counts, first, w


_SCATTER = {
    d: lax.ScatterDimensionNumbers(
        update_window_dims=tuple(range(1, d + 1)), inserted_window_dims=(), scatter_dims_to_operand_dims=tuple(range(d))
    )
    for d in (2, 3)
}
_GATHER = {  # one scalar window of 3^d nodes per target
    d: lax.GatherDimensionNumbers(
        offset_dims=tuple(range(1, d + 1)), collapsed_slice_dims=(), start_index_map=tuple(range(d))
    )
    for d in (2, 3)
}


def interpolate(components, first, w):
    """TSC read of the field ``components`` (``d`` arrays ``[G, ..., G]``) at the stencils: ``[T, d]``.

    Components go in pairs as the real and imaginary parts of one complex field: XLA's CPU gather
    costs about as much per window of complex numbers as of reals, and far more per window of
    ``3^d x d`` reals (one gather of every component), which was the slowest piece of a 2D step at
    J = 10^6 (docs/drifts.md).
    """
    d = len(components)

    def read(f):
        win = lax.gather(f, first, _GATHER[d], slice_sizes=(3,) * d, mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)
        return jnp.sum(win * w, axis=tuple(range(1, d + 1)))

    out = []
    for k in range(0, d, 2):
        if k + 1 < d:
            z = read(lax.complex(components[k], components[k + 1]))
            out += [jnp.real(z), jnp.imag(z)]
        else:
            out.append(read(components[k]))
    return jnp.stack(out, axis=-1)


def switch(r2, cutoff2):
    r"""The near-field share of the kernel, $S(r) = (1 - r^2/r_c^2)^2$ for $r < r_c$, else 0.

    A smooth function of $r^2$ (so the far part $\nabla K_\delta (1 - S)$ is smooth at the origin)
    that vanishes with its derivative at the cut-off (so the far part is smooth there too).
    """
    u2 = jnp.minimum(r2 / cutoff2, 1.0)
    return (1.0 - u2) ** 2


def _kernel_transforms(delta, h, grid: int, d: int, dtype, cutoff=None, k=None):
    """FFTs of the prefiltered kernel gradient on the padded grid: ``d`` arrays of the rfft shape.

    With ``cutoff`` (a length), the far part only: the kernel times ``1 - switch``.
    """
    size = 2 * grid
    m = np.fft.fftfreq(size, 1.0 / size)
    m = np.where(np.abs(m) >= grid, 0.0, m)  # offsets of |m| >= G never occur between two nodes
    axes = jnp.meshgrid(*(jnp.asarray(m, dtype) * h[i] for i in range(d)), indexing="ij")
    r2 = sum(z * z for z in axes)
    phi = _kernels.radial_factor(r2, delta, d, "blob", k)  # k: the screening rate (None: unscreened)
    if cutoff is not None:
        phi = phi * (1.0 - switch(r2, cutoff * cutoff))
    prefilter = 1.0
    for axis in range(d):
        f = np.fft.rfftfreq(size) if axis == d - 1 else np.fft.fftfreq(size)
        shape = [1] * d
        shape[axis] = -1
        prefilter = prefilter * (np.sinc(f) ** 6).reshape(shape)  # TSC transform squared (assign + read)
    prefilter = jnp.asarray(prefilter, dtype)
    return [jnp.fft.rfftn(z * phi) / prefilter for z in axes]


# A run's mesh takes its cells from the ladder delta * CELL_RATIO^k, so the kernel's transforms (the
# kernel sampled on the padded grid and d of PM's 2d + 1 FFTs) are computed again only when a cell
# moves to another rung (`plan`); a cell is at most CELL_RATIO^2 (9%) larger than the tight box needs.
CELL_RATIO = 2.0 ** (1 / 16)


class Plan(NamedTuple):
    """Cells ``h [d]`` of a run's mesh and the kernel's transforms for them (`plan`)."""

    h: Any
    k_hats: Any  # d arrays of the padded grid's rfft shape


def _tight_cells(points, delta, grid: int):
    lo, hi = jnp.min(points, axis=0), jnp.max(points, axis=0)
    return jnp.maximum((hi - lo) / (grid - 2 * MARGIN), _FLOOR * delta)


def plan(points, delta, grid: int, cutoff: float | None = None, previous: Plan | None = None, k=None) -> Plan:
    r"""The mesh of one step of a run: cells on the ladder $\delta\,r^k$ ($r$ = `CELL_RATIO`) and the
    kernel's transforms for them.

    ``previous`` (the last step's plan) is kept while every axis's cell lies between the cloud's
    tight cell and $r^2$ times it; otherwise each axis takes the smallest rung at or above its tight
    cell, and the transforms are computed for it. Keeping a plan skips the kernel's sampling and its
    ``d`` forward FFTs; the band of two rungs keeps a cloud whose extent hovers around a rung from
    switching at every step. Under ``vmap`` both branches run (the result is the same).
    """
    d = points.shape[1]
    tight = _tight_cells(points, delta, grid)

    def fresh(_):
        rung = jnp.ceil(jnp.log(tight / delta) / np.log(CELL_RATIO))
        h = (delta * CELL_RATIO**rung).astype(points.dtype)
        r_cut = None if cutoff is None else cutoff * jnp.max(h)
        return Plan(h, tuple(_kernel_transforms(delta, h, grid, d, points.dtype, r_cut, k)))

    if previous is None:
        return fresh(None)
    # (a rung rounded an ulp below its tight cell, as at the floor delta / 16, still counts as holding it)
    keep = jnp.all(previous.h >= tight * (1 - 1e-6)) & jnp.all(previous.h <= tight * CELL_RATIO**2)
    return lax.cond(keep, lambda _: previous, fresh, None)


def mesh_sum(targets, sources, delta, grid: int, cutoff: float | None = None, mesh_plan: Plan | None = None, k=None):
    """`pair_sum` without its checks, and the grid's cells ``h [d]``: the core the IPM's mesh drifts run.

    With ``cutoff`` (in cells, static) the P3M split. With ``mesh_plan`` (`plan` of these points), its
    cells and kernel transforms; otherwise the cloud's tight box. Nothing is validated here (it runs
    inside the IPM's scan): the cells ``h`` it returns are what to compare with ``delta``, since PM's
    error grows like ``(h / delta)^2`` (`SPACING_LIMIT`).

    Returns:
      ``(sums [T, d], h [d])``.
    """
    t, d = targets.shape
    same = targets is sources
    cloud = targets if same else jnp.concatenate([targets, sources], axis=0)
    if mesh_plan is None:
        origin, h = box(cloud, delta, grid)
    else:
        h = mesh_plan.h
        origin = jnp.min(cloud, axis=0) - MARGIN * h
    r_cut = None if cutoff is None else cutoff * jnp.max(h)
    size = (2 * grid,) * d
    first, w = stencils(sources, origin, h, grid)
    rho = lax.scatter_add(
        jnp.zeros((grid,) * d, sources.dtype),
        first,
        w,
        _SCATTER[d],
        mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS,  # _tsc clips every stencil inside the grid
    )
    rho_hat = jnp.fft.rfftn(rho, s=size)
    inside = (slice(0, grid),) * d
    k_hats = _kernel_transforms(delta, h, grid, d, rho.dtype, r_cut, k) if mesh_plan is None else mesh_plan.k_hats
    field = [jnp.fft.irfftn(rho_hat * k_hat, s=size)[inside].astype(targets.dtype) for k_hat in k_hats]
    if not same:
        first, w = stencils(targets, origin, h, grid)
    out = interpolate(field, first, w.astype(targets.dtype))
    if cutoff is not None:
        n_cells = int(np.ceil(grid / cutoff)) + 1  # cells of side r_cut span the grid's G h_k <= G r_cut / cutoff
        out = out + near_sum(targets, sources, delta, origin, r_cut, n_cells, same, k)
    return out, h


def _cells(points, origin, size, n_cells: int):
    """Cell of each point (side ``size``, ``n_cells`` per axis, last axis fastest): sorted order and ids."""
    d = points.shape[1]
    c = jnp.clip(jnp.floor((points - origin) / size), 0, n_cells - 1).astype(jnp.int32)
    ids = c[:, 0]
    for k in range(1, d):
        ids = ids * n_cells + c[:, k]
    order = jnp.argsort(ids)
    return order, ids[order]


def near_sum(targets, sources, delta, origin, r_cut, n_cells: int, same: bool, k=None):
    r"""$\sum_{|y_j - x_i| < r_c} \nabla K_\delta(y_j - x_i)\,S(|y_j - x_i|)$, by cells of side $r_c$.

    Sources and targets are sorted by cell (last axis fastest), so a *column* of cells (all axes
    but the last fixed) holds consecutive particles. Targets go in blocks of `NEAR_BLOCK` consecutive
    particles of one column; a block's partners lie in the ``3^(d-1)`` neighbouring columns between
    its first cell - 1 and its last cell + 1 along the last axis: one contiguous range of sorted
    sources per neighbouring column, read in chunks of `NEAR_CHUNK` (a ``while`` loop: the work
    follows the data, with no capacity to overflow). Every pair within $r_c$ is visited exactly once.
    A cloud on itself (``same``) visits each unordered pair once instead (`_near_symmetric`): 20-25%
    less time on the paper's 3D states at J = 10^5 (not half: its sums cost a second pass).
    """
    t, d = targets.shape
    b_size, s_size = NEAR_BLOCK, NEAR_CHUNK
    order_s, ids_s = _cells(sources, origin, r_cut, n_cells)
    order_t, ids_t = (order_s, ids_s) if same else _cells(targets, origin, r_cut, n_cells)
    # padded: chunks (and, on the symmetric path, blocks of targets) stay in bounds
    src = jnp.concatenate([sources[order_s], jnp.zeros((max(b_size, s_size), d), sources.dtype)])
    tgt = jnp.concatenate([targets[order_t], jnp.zeros((b_size, d), targets.dtype)])
    total = n_cells**d
    cell_start = jnp.searchsorted(ids_s, jnp.arange(total + 1), side="left").astype(jnp.int32)
    # target blocks: up to b_size consecutive targets of one column
    col_start_t = jnp.searchsorted(ids_t, jnp.arange(0, total + 1, n_cells), side="left").astype(jnp.int32)
    col_t = ids_t // n_cells
    rank = jnp.arange(t, dtype=jnp.int32) - col_start_t[col_t]
    per_col = (col_start_t[1:] - col_start_t[:-1] + b_size - 1) // b_size
    offset = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(per_col).astype(jnp.int32)])
    n_blocks = -(-t // b_size) + n_cells ** (d - 1)  # static bound: every column may end in a partial block
    block = jnp.where(rank % b_size == 0, offset[col_t] + rank // b_size, n_blocks)
    starts = jnp.zeros(n_blocks, jnp.int32).at[block].set(jnp.arange(t, dtype=jnp.int32), mode="drop")
    cols = jnp.zeros(n_blocks, jnp.int32).at[block].set(col_t, mode="drop")
    ends = jnp.where(jnp.arange(n_blocks) < offset[-1], jnp.minimum(starts + b_size, col_start_t[cols + 1]), starts)
    ids_t_pad = jnp.concatenate([ids_t, jnp.zeros(b_size, jnp.int32)])
    offsets = [  # id offsets of the neighbouring columns
        sum(o * n_cells ** (d - 1 - k) for k, o in enumerate(col))
        for col in itertools.product((-1, 0, 1), repeat=d - 1)
    ]
    neighbours = jnp.array(offsets, jnp.int32)
    cut2 = r_cut * r_cut
    lanes = jnp.arange(s_size)

    def one_block(b):
        start, end = starts[b], ends[b]
        y = lax.dynamic_slice_in_dim(tgt, start, b_size)
        first, last = ids_t_pad[start], ids_t_pad[jnp.maximum(end - 1, start)]
        lo = cell_start[jnp.clip(first + neighbours - 1, 0, total)]  # one source range per neighbouring column
        hi = jnp.where(end > start, cell_start[jnp.clip(last + neighbours + 2, 0, total)], lo)
        acc = jnp.zeros((b_size, d), targets.dtype)
        for r in range(len(offsets)):  # a loop per range: no chunk is read past its range's end

            def chunk(j, acc, lo=lo[r], hi=hi[r]):
                s0 = lo + j * s_size
                x = lax.dynamic_slice_in_dim(src, s0, s_size)
                dz = [y[:, None, i] - x[None, :, i] for i in range(d)]
                r2 = dz[0] * dz[0]
                for z in dz[1:]:
                    r2 = r2 + z * z
                f = _kernels.radial_factor(r2, delta, d, "blob", k) * switch(r2, cut2)
                f = jnp.where((s0 + lanes < hi)[None, :], f, 0.0)
                return acc + jnp.stack([jnp.sum(z * f, axis=1) for z in dz], axis=1)

            acc = lax.fori_loop(0, (hi[r] - lo[r] + s_size - 1) // s_size, chunk, acc)
        return acc

    if same:  # each pair once (`_near_symmetric`): half the pairs of the one-sided sum below
        out = _near_symmetric(src, ids_t_pad, cell_start, starts, ends, offsets, delta, cut2, total, b_size, s_size, k)
        return jnp.zeros_like(targets).at[order_t].set(out[:t])
    res = lax.map(one_block, jnp.arange(n_blocks))  # [n_blocks, b_size, d]
    slots = starts[:, None] + jnp.arange(b_size)[None, :]
    slots = jnp.where(slots < ends[:, None], slots, t)  # padding lanes land in a dropped row
    out_sorted = jnp.zeros((t + 1, d), targets.dtype).at[slots].add(res)[:t]
    return jnp.zeros_like(targets).at[order_t].set(out_sorted)


def _near_symmetric(pts, ids_pad, cell_start, starts, ends, offsets, delta, cut2, total, b_size, s_size, k=None):
    r"""`near_sum` of a cloud on itself with each pair visited once: the sums, sorted order, ``pts``' shape.

    The pair force is odd, so a pair's term is added to its target and subtracted from its source.
    A block of the sorted points ``pts`` reads the sources of its own column from its first point on
    (within the block, the pairs ``j > i`` only) and of the neighbouring columns whose offset is
    positive in lexicographic order: half of the ``3^(d-1)`` columns of the one-sided sum, and each
    pair once. Every (block, range, chunk) is one step of a single loop that adds into the targets'
    and the sources' rows of one array. A tile's two sums are two small matrix products: summed over
    the tile's major axis instead, the sources' sums cost as much time as the pairs saved.
    """
    d = pts.shape[1]
    dt = pts.dtype
    half = [o for o in offsets if o > 0]  # the column offsets positive in lexicographic order
    n_ranges = 1 + len(half)
    first, last = ids_pad[starts], ids_pad[jnp.maximum(ends - 1, starts)]
    has = ends > starts
    lo = [starts]  # own column: from the block's first point to the end of cell last + 1
    hi = [jnp.where(has, cell_start[jnp.clip(last + 2, 0, total)], starts)]
    for o in half:
        lo_o = cell_start[jnp.clip(first + o - 1, 0, total)]
        lo.append(lo_o)
        hi.append(jnp.where(has, cell_start[jnp.clip(last + o + 2, 0, total)], lo_o))
    lo, hi = jnp.stack(lo, axis=1).reshape(-1), jnp.stack(hi, axis=1).reshape(-1)  # [blocks * ranges]
    n_chunks = (hi - lo + s_size - 1) // s_size
    cum = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(n_chunks).astype(jnp.int32)])
    lanes = jnp.arange(s_size)
    rows = jnp.arange(b_size)

    def step(w, out):
        q = jnp.searchsorted(cum, w, side="right").astype(jnp.int32) - 1  # the (block, range) of chunk w
        b, own = q // n_ranges, q % n_ranges == 0
        start, end = starts[b], ends[b]
        s0 = lo[q] + (w - cum[q]) * s_size
        y = lax.dynamic_slice_in_dim(pts, start, b_size)
        x = lax.dynamic_slice_in_dim(pts, s0, s_size) - y[:1]
        y = y - y[:1]  # centred on the block: the sums below cancel no large coordinates
        dz = [y[:, None, i] - x[None, :, i] for i in range(d)]
        r2 = dz[0] * dz[0]
        for z in dz[1:]:
            r2 = r2 + z * z
        f = _kernels.radial_factor(r2, delta, d, "blob", k) * switch(r2, cut2)
        ok = (s0 + lanes < hi[q])[None, :] & ((start + rows) < end)[:, None]  # real sources and targets
        ok = ok & (~own | ((s0 + lanes)[None, :] > (start + rows)[:, None]))  # own column: later points only
        f = jnp.where(ok, f, 0.0)
        # sum_j (y_i - x_j) f_ij = y_i sum_j f_ij - (f x)_i, and the same over i for the sources: two small
        # matrix products (a reduction over the tile's major axis is slow on XLA:CPU)
        hp = lax.Precision.HIGHEST
        h = jnp.matmul(f, jnp.concatenate([x, jnp.ones((s_size, 1), dt)], axis=1), precision=hp)  # [b_size, d + 1]
        g = jnp.matmul(f.T, jnp.concatenate([y, jnp.ones((b_size, 1), dt)], axis=1), precision=hp)  # [s_size, d + 1]
        push = y * h[:, d:] - h[:, :d]  # on the targets
        pull = g[:, :d] - x * g[:, d:]  # off the sources
        out = lax.dynamic_update_slice_in_dim(out, lax.dynamic_slice_in_dim(out, start, b_size) + push, start, 0)
        return lax.dynamic_update_slice_in_dim(out, lax.dynamic_slice_in_dim(out, s0, s_size) - pull, s0, 0)

    return lax.fori_loop(0, cum[-1], step, jnp.zeros(pts.shape, dt))


def pair_sum(
    targets,
    sources,
    delta,
    *,
    grid: int | None = None,
    kernel: str = "blob",
    cutoff: float | None = None,
    check: bool = True,
    k=None,
):
    r"""$\sum_i \nabla K_\delta(y_j - x_i)$ for every target ``y_j`` on a particle mesh.

    The particle-mesh counterpart of `ksdp.drifts.pair_sum`: its cost is $O(T + J + G^d \log G)$
    instead of $O(TJ)$, its error set by the largest cell ``h / delta`` (module docstring). With
    ``cutoff`` it is P3M: the pairs closer than ``cutoff`` cells are summed directly, and the error
    no longer depends on ``h / delta``. Works under ``jit`` and ``vmap``; ``grad`` too for PM.

    Args:
      targets: ``[T, d]`` positions $y_j$.
      sources: ``[J, d]`` positions $x_i$.
      delta: regularisation length (traced).
      grid: nodes per axis ``G`` (static; default `DEFAULT_GRID`, or `DEFAULT_P3M_GRID` by ``J`` with
        ``cutoff``).
      kernel: ``"blob"`` (the only kernel smooth enough for a mesh).
      cutoff: None (PM), or the near-field radius in cells (static, >= 1; `DEFAULT_CUTOFF` = 5).
      check: at a concrete call (not under a transformation), refuse NaN or infinite positions, a
        ``delta`` that is not finite and positive, and, for PM, a grid whose largest cell exceeds
        `SPACING_LIMIT` times ``delta`` (a cloud too spread for the grid: the sum's error grows with the
        cell, past 100% for far-apart clusters); ``False`` returns the sum anyway.
      k: ``None``, or the screening rate of the screened kernel (traced; `ksdp.kernels`).

    Returns:
      ``[T, d]``.

    Raises:
      ValueError: with ``check``, as above; the message gives the cell reached and what to change.

    Example:
      >>> import jax, ksdp
      >>> x = ksdp.uniform_ball(jax.random.key(0), 1000, 2)
      >>> fast = ksdp.particle_mesh.pair_sum(x, x, 0.03, grid=128)
      >>> exact = ksdp.pair_sum(x, x, 0.03)
      >>> bool(jax.numpy.linalg.norm(fast - exact) < 1e-3 * jax.numpy.linalg.norm(exact))
      True
    """
    targets = jnp.asarray(targets)
    if not jnp.issubdtype(targets.dtype, jnp.floating):
        targets = targets.astype(jnp.float32)
    sources = jnp.asarray(sources, targets.dtype)
    if targets.ndim != 2 or sources.ndim != 2 or sources.shape[1] != targets.shape[1]:
        raise ValueError(f"targets and sources must be [T, d] and [J, d], got {targets.shape} and {sources.shape}.")
    d = targets.shape[1]
    _kernels.check_kernel(kernel, d)
    check_kernel(kernel)
    cutoff = check_cutoff(cutoff)
    if targets.shape[0] == 0 or sources.shape[0] == 0:
        return jnp.zeros_like(targets)
    grid = check_grid(grid, d, p3m=cutoff is not None, n_particles=sources.shape[0])
    if check:
        check_concrete_inputs({"targets": targets, "sources": sources}, delta)
    total, h = mesh_sum(targets, sources, delta, grid, cutoff, k=k)
    if check and cutoff is None:
        refuse_coarse(jnp.max(h) / delta, "cutoff= (P3M) or the direct ksdp.pair_sum")
    return total


def refuse_coarse(spacing, alternatives: str) -> None:
    """At a concrete call: a ``ValueError`` where the mesh's largest cell ``spacing`` (in units of delta)
    exceeds `SPACING_LIMIT`, naming the ``alternatives`` (under a transformation nothing is checked)."""
    if is_concrete(spacing) and float(jnp.max(spacing)) > SPACING_LIMIT:
        raise ValueError(
            f"the particle mesh's largest cell is {float(jnp.max(spacing)):.3g} delta, above the {SPACING_LIMIT:g} "
            f"at which its error stays small: pass a finer grid, {alternatives} (whose error does not depend "
            "on the cell), or check=False to take the result anyway."
        )
