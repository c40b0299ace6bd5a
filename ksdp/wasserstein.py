r"""Certified 2-Wasserstein distances between equal-size point clouds: an epsilon-scaling auction.

`w2` returns the distance of a matching together with a lower bound that proves how close it is to
the optimum: `auction` (Bertsekas' forward auction with epsilon-scaling) finds the matching, and
`dual_bound` turns its prices into a feasible dual whose value, computed with a rigorous round-off
bound, is the lower bound. Up to ``EXACT_MAX`` points one exact assignment is solved instead.
`sinkhorn_cost` is an entropic cross-check with ott-jax. The block matching the training loop uses
is `ksdp.transport`'s.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ksdp._checks import is_concrete as _is_concrete
from ksdp.transport import DEFAULT_BLOCK, EXACT_MAX, check_clouds, identity, matched_cost, solve

AUCTION_LEVELS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # bidders per round, the smallest >= the free rows
AUCTION_THETA = 8.0  # epsilon-scaling factor between phases (picked among 5-12 in development timings)
AUCTION_TILE = 512  # rows per tile of the O(N^2) passes


class AuctionResult(NamedTuple):
    """Outcome of `auction`.

    Attributes:
      perm: ``[N]`` int32 matching (row ``i`` -> column ``perm[i]``).
      cost: its mean squared distance (an upper bound of $W_2^2$), float64.
      lower: a lower bound of $W_2^2$ from the prices (feasible duals), float64.
      gap: ``(cost - lower) / lower`` (``0`` where both vanish), the certified relative gap on $W_2^2$.
      converged: ``gap <= tol``.
      rounds: bidding rounds run.
      prices: ``[N]`` nonnegative column prices whose `dual_bound` is ``lower`` (the auction's, after
        one c-transform pair); ``-prices`` are column duals.
    """

    perm: jax.Array
    cost: float
    lower: float
    gap: float
    converged: bool
    rounds: int
    prices: jax.Array


class W2Result(NamedTuple):
    """Outcome of `w2`: ``w2`` and ``perm`` first, so ``w2(x, y)[0]`` is the distance.

    Attributes:
      w2: $W_2$ of the matching ``perm`` (an upper bound of the true $W_2$; not squared).
      perm: the matching permutation.
      lower: a certified lower bound of $W_2$.
      gap: certified relative gap on $W_2^2$: ``(w2**2 - lower**2) / lower**2``.
      converged: ``gap <= tol`` for the auction; the exact solve always; for the block descent
        whether its last pair of sweeps improved by less than ``rtol`` (no certificate: its ``lower``
        is only the distance of the means).
    """

    w2: jax.Array
    perm: jax.Array
    lower: jax.Array
    gap: jax.Array
    converged: jax.Array


def top_two(xa, y, q):
    """For rows ``xa [K, d]``: the best column of ``w_j = q_j - 2 xa . y_j``, its value, the second value.

    Three min-reductions (XLA's CPU argmin is several times slower than a min): the minimum, the
    smallest column attaining it, the minimum over the other columns.
    """
    # HIGHEST: on recent GPUs the default float32 dot rounds its inputs to TF32 (10-bit mantissa), far
    # coarser than the 1e-4 gaps the certificate is asked for (a CPU ignores the setting)
    w = q[None] - 2.0 * jnp.matmul(xa, y.T, precision=jax.lax.Precision.HIGHEST)  # [K, N]
    w1 = jnp.min(w, axis=1)
    iota = jax.lax.broadcasted_iota(jnp.int32, w.shape, 1)
    j1 = jnp.min(jnp.where(w == w1[:, None], iota, y.shape[0]), axis=1)
    w2 = jnp.min(jnp.where(iota == j1[:, None], jnp.inf, w), axis=1)
    return j1, w1, w2


def _tiled_row_min(x, y, p, *, linear):
    """``min_j (f(x_i, y_j) + p_j)`` for every row, in tiles of `AUCTION_TILE` rows: ``[N]``.

    ``linear=False``: ``f = |x_i - y_j|^2``, summed coordinate by coordinate (``d + 1`` nonnegative
    terms when ``p >= 0``: the form `dual_bound`'s round-off bound is derived for);
    ``linear=True``: ``f = -2 x_i . y_j`` (the auction's bids, with ``p`` the shifted prices ``q``).
    The coordinates are unrolled so XLA fuses a tile into one pass instead of materialising
    ``[tile, N, d]`` (an order of magnitude faster on a CPU).
    """
    n, d = x.shape
    tile = min(AUCTION_TILE, n)
    pad = -n % tile
    xt = jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, d))]).reshape(-1, tile, d)

    def one(xa):
        c = jnp.zeros((tile, y.shape[0]), x.dtype)
        for k in range(d):
            c = c + (-2.0 * xa[:, k : k + 1] * y[None, :, k] if linear else (xa[:, k : k + 1] - y[None, :, k]) ** 2)
        return jnp.min(c + p[None], axis=1)

    return jax.lax.map(one, xt).reshape(-1)[:n]


def _improve_prices(x, y, p):
    """One c-transform pair: ``u_i = min_j (C_ij + p_j)``, then ``p'_j = max_i (u_i - C_ij)`` (shifted to >= 0).

    The dual objective can only rise (each step is the best response of one side to the other);
    from the auction's prices it closes about half the certificate's gap (measured).
    """
    u = _tiled_row_min(x, y, p, linear=False)
    pc = -_tiled_row_min(y, x, -u, linear=False)
    return pc - jnp.min(pc)


@partial(jax.jit, static_argnames=("levels", "theta"))
def _auction(x, y, eps0, tol, max_rounds, *, levels=AUCTION_LEVELS, theta=AUCTION_THETA):
    r"""Forward auction with epsilon-scaling (Bertsekas 1988) for the squared-distance assignment.

    Prices are kept as ``q_j = p_j + |y_j|^2``, so a bid needs one ``x_i . y_j`` per column. Each
    round pops the ``k`` oldest free rows from a ring buffer (``k``: the smallest of ``levels`` that
    is at least the number of free rows); they bid at once (Jacobi), every column goes to its
    highest bid (ties: the earlier row), and the losers and the displaced owners go back to the
    buffer. A phase ends when every row is assigned; then the slack of each row,
    ``own_i - min_j w_ij`` (its violation of complementary slackness), is measured. The run stops
    when the matched cost exceeds the dual bound of the prices after one c-transform pair by less
    than ``0.8 tol`` of that bound (float32; `auction` certifies the result in float64), else
    epsilon shrinks by ``theta`` (not below 8 ulp of the largest price, where a bid
    would stop raising prices) and the rows whose slack exceeds it are freed.

    Returns ``(assign [N], q [N], rounds, eps)``.
    """
    n = x.shape[0]
    dt = x.dtype
    kmax = max(levels)
    cap = n + kmax
    yy = jnp.sum(y * y, axis=1)

    def bid_round(k, st):
        q, owner, assign, queue, head, n_free, eps, rounds = st
        take = jnp.minimum(k, n_free)
        slot = jnp.arange(k)
        valid = slot < take
        rows = jnp.where(valid, queue[(head + slot) % cap], 0)
        j1, w1, w2 = top_two(x[rows], y, q)
        bid = jnp.where(valid, q[j1] + (w2 - w1) + eps, -jnp.inf)
        same = (j1[:, None] == j1[None, :]) & valid[None, :]
        beats = (bid[None, :] > bid[:, None]) | ((bid[None, :] == bid[:, None]) & (slot[None, :] < slot[:, None]))
        won = valid & ~jnp.any(same & beats, axis=1)
        prev = owner[j1]
        displaced = won & (prev >= 0)
        obj = jnp.where(won, j1, n)
        q = q.at[obj].set(bid, mode="drop")
        owner = owner.at[obj].set(rows, mode="drop")
        assign = assign.at[jnp.where(displaced, prev, n)].set(-1, mode="drop")
        assign = assign.at[jnp.where(won, rows, n)].set(j1, mode="drop")
        back = jnp.concatenate([jnp.where(valid & ~won, rows, -1), jnp.where(displaced, prev, -1)])
        push = back >= 0
        tail = head + n_free
        queue = queue.at[jnp.where(push, (tail + jnp.cumsum(push) - 1) % cap, cap)].set(back, mode="drop")
        return q, owner, assign, queue, (head + take) % cap, n_free - take + jnp.sum(push), eps, rounds + 1

    def run_phase(q, owner, assign, eps, rounds):
        free = assign < 0
        first = jnp.nonzero(free, size=n, fill_value=0)[0].astype(jnp.int32)
        queue = jnp.concatenate([first, jnp.zeros(kmax, jnp.int32)])
        st = (q, owner, assign, queue, jnp.int32(0), jnp.sum(free).astype(jnp.int32), eps, rounds)

        def body(s):
            level = sum((s[5] > k).astype(jnp.int32) for k in levels[:-1])
            return jax.lax.switch(level, [partial(bid_round, k) for k in levels], s)

        q, owner, assign, _, _, _, _, rounds = jax.lax.while_loop(lambda s: (s[5] > 0) & (s[7] < max_rounds), body, st)
        return q, owner, assign, rounds

    def slack(q, assign):
        best = _tiled_row_min(x, y, q, linear=True)
        own = q[assign] - 2.0 * jnp.sum(x * y[assign], axis=1)
        return jnp.maximum(own - best, 0)

    def eps_floor(q):
        return 8 * jnp.finfo(dt).eps * jnp.maximum(jnp.max(jnp.abs(q)), 1.0)

    def cond(st):
        q, owner, assign, eps, rounds, done = st
        return ~done

    def body(st):
        q, owner, assign, eps, rounds, _ = st
        sl = slack(q, assign)
        # the certificate `auction` will give, in float32: the prices after one c-transform pair
        pc = _improve_prices(x, y, jnp.maximum(q - yy, 0))
        lower = (jnp.sum(_tiled_row_min(x, y, pc, linear=False)) - jnp.sum(pc)) / n
        cost = jnp.mean(jnp.sum((x - y[assign]) ** 2, axis=1))
        good = cost - lower <= 0.8 * tol * jnp.abs(lower)  # float32 estimate; float64 round-off is ~1e-7
        floor = eps_floor(q)
        stop = good | (eps <= floor) | (rounds >= max_rounds)
        eps = jnp.maximum(eps / theta, floor)
        bad = (sl > eps) & ~stop
        owner = owner.at[jnp.where(bad, assign, n)].set(-1, mode="drop")
        assign = jnp.where(bad, -1, assign)
        q, owner, assign, rounds = run_phase(q, owner, assign, eps, rounds)
        return q, owner, assign, eps, rounds, stop

    q0 = jnp.sum(y * y, axis=1)
    none = jnp.full(n, -1, jnp.int32)
    q, owner, assign, rounds = run_phase(q0, none, none, eps0.astype(dt), jnp.int32(0))
    init = (q, owner, assign, eps0.astype(dt), rounds, jnp.asarray(False))
    q, owner, assign, eps, rounds, _ = jax.lax.while_loop(cond, body, init)
    return assign, q, rounds, eps


_row_min_jit = jax.jit(partial(_tiled_row_min, linear=False))
_improve_jit = jax.jit(_improve_prices)


def dual_bound(x, y, prices) -> float:
    r"""The lower bound of $W_2^2$ that nonnegative column prices give.

    $\frac1N\bigl(\sum_i \min_j (C_{ij} + p_j) - \sum_j p_j\bigr)$ with $C_{ij} = |x_i - y_j|^2$:
    every choice of prices gives a feasible dual ($u_i = \min_j (C_{ij} + p_j)$, $v_j = -p_j$, so
    $u_i + v_j \le C_{ij}$), hence a valid bound; the auction's prices make it tight.

    The row minima are taken in the inputs' dtype on the device, in tiles (``O(N^2)`` time, ``O(N)``
    memory beyond a tile). With $p_j \ge 0$, $C_{ij} + p_j$ is a sum of ``d + 1`` nonnegative terms,
    so its computed value exceeds the exact one by at most the factor $1 + \gamma_{d+3}$
    ($\gamma_k = k u / (1 - k u)$, ``u`` the unit round-off); each minimum is divided by it, and the
    sums are taken in float64 on the host. The result is a bound for the exact optimum of the given
    points (float64 costs), not only for the rounded costs.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    p = jnp.asarray(prices, x.dtype)
    if bool(jnp.any(p < 0)):
        raise ValueError("prices must be >= 0 (shift them by their minimum: the bound does not change).")
    k = x.shape[-1] + 3
    u = float(jnp.finfo(x.dtype).eps) / 2
    gamma = k * u / (1 - k * u)
    phi, psi = kantorovich_potentials(x, y, p)
    return (float(np.sum(phi / (1 + gamma))) + float(np.sum(psi))) / x.shape[0]


def kantorovich_potentials(x, y, prices) -> tuple[np.ndarray, np.ndarray]:
    r"""The dual pair that column prices give: ``(phi, psi)``, float64 ``[N]`` each.

    $\psi_j = -p_j$ and $\varphi_i = \min_j |x_i - y_j|^2 + p_j$ (its c-transform, in tiles), a
    feasible pair ($\varphi_i + \psi_j \le |x_i - y_j|^2$) whose means sum to `dual_bound` (without
    its round-off margin). With `auction`'s prices they are the discrete Kantorovich potentials, whose
    spread gives the standard error of the empirical $W_2^2$ (`ksdp.metrics.w2_estimate`).
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    p = jnp.asarray(prices, x.dtype)
    if p.shape != (y.shape[0],):
        raise ValueError(f"prices must have one entry per point of y, shape ({y.shape[0]},); got {p.shape}.")
    phi = np.asarray(_row_min_jit(x, y, p), np.float64)
    return phi, -np.asarray(prices, np.float64)


def auction(x, y, *, tol: float = 1e-4, max_rounds: int | None = None) -> AuctionResult:
    r"""$W_2^2$ between equal-size clouds ``[N, d]`` with a certified gap: an epsilon-scaling auction.

    The matching's cost is an upper bound and `dual_bound` of the final prices a lower bound, both
    evaluated in float64, so ``gap`` is what is known, not an estimate. The auction stops when its
    float32 estimate of the gap is below ``0.8 tol``; ``converged`` reports whether the float64
    certificate confirms ``gap <= tol``. In float32 epsilon cannot go below 8 ulp of the largest
    price, which held the certified gap to 2e-5 to 4.3e-5 on the benchmark's problems; float64 inputs
    (``jax_enable_x64``) go further.

    ``python -m benchmarks.transport`` times it against POT's exact network simplex (``docs/benchmarks.md``).

    Args:
      x: ``[N, d]`` points.
      y: ``[N, d]`` points.
      tol: target relative gap on $W_2^2$.
      max_rounds: bidding-round budget (default ``1000 N``); when it runs out, the result is
        returned with its honest gap and ``converged=False``.
    """
    x, y = check_clouds(x, y)
    if x.ndim != 2:
        raise ValueError(f"auction takes one problem [N, d]; got shape {x.shape}. Loop over a batch.")
    if not (isinstance(tol, (int, float, np.floating)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0 (the target relative gap), got {tol!r}.")
    n = x.shape[0]
    if max_rounds is None:
        max_rounds = 1000 * n
    if not isinstance(max_rounds, (int, np.integer)) or isinstance(max_rounds, bool) or max_rounds < 1:
        raise ValueError(f"max_rounds must be an integer >= 1, got {max_rounds!r}.")
    size = float(jnp.maximum(jnp.max(jnp.abs(x)), jnp.max(jnp.abs(y))))
    if size > 1e15 or 0 < size < 1e-15:  # squared distances would overflow or underflow: solve in units of size
        res = auction(x / size, y / size, tol=tol, max_rounds=max_rounds)
        return res._replace(cost=res.cost * size**2, lower=res.lower * size**2, prices=res.prices * size**2)
    # the starting epsilon: half the mean squared distance of the identity matching (the cost scale)
    eps0 = jnp.maximum(0.5 * matched_cost(x, y, identity(x)), jnp.finfo(x.dtype).tiny)
    levels = tuple(k for k in AUCTION_LEVELS if k <= n)  # no round wider than the problem (less to compile)
    budget = jnp.int32(min(max_rounds, 2**31 - 1))
    assign, q, rounds, _ = _auction(x, y, eps0, jnp.asarray(tol, x.dtype), budget, levels=levels)
    perm = assign
    ok = bool(jnp.all(perm >= 0))
    prices = jnp.maximum(q - jnp.sum(y * y, axis=1), 0)  # q starts at |y|^2 and only rises
    xn, yn = np.asarray(x, np.float64), np.asarray(y, np.float64)
    p = np.asarray(perm).copy()
    if not ok:  # the budget ran out inside a phase: complete the matching with the free columns
        p[p < 0] = np.setdiff1d(np.arange(n), p[p >= 0])
        perm = jnp.asarray(p, jnp.int32)
    cost = float(np.mean(np.sum((xn - yn[p]) ** 2, axis=1)))
    # one c-transform pair gives a tighter dual; keep the auction's prices if round-off made it looser
    improved = _improve_jit(x, y, prices)
    bound, plain = dual_bound(x, y, improved), dual_bound(x, y, prices)
    if bound < plain:
        bound = plain
    else:
        prices = improved
    lower = min(bound, cost)  # never above a feasible cost
    lower -= 1e-12 * abs(lower)  # float64 round-off of the host sums
    gap = (cost - lower) / lower if lower > 0 else (0.0 if cost <= 0 else math.inf)
    return AuctionResult(perm, cost, lower, gap, bool(gap <= tol), int(rounds), prices)


def w2(
    x,
    y,
    *,
    key=None,
    method: str = "auction",
    tol: float = 1e-4,
    exact_max: int = EXACT_MAX,
    block: int = DEFAULT_BLOCK,
    max_sweeps: int = 500,
    rtol: float = 1e-6,
) -> W2Result:
    r"""The 2-Wasserstein distance between two equal-size empirical measures, with a certificate.

    ``N <= exact_max``: one exact assignment (gap 0). Otherwise ``method="auction"`` (default):
    `auction`, a matching within ``tol`` (relative, on $W_2^2$) of the optimum together with the
    lower bound that proves it; ``method="blocks"``: the block descent of `solve` from the identity
    (the paper's scheme; no certificate, 0.37-0.45% above the optimum in ``python -m benchmarks.transport``).

    Args:
      x: ``[N, d]`` or ``[R, N, d]`` (a batch is solved problem by problem).
      y: the other cloud, of the shape of ``x``.
      key: keyword only: the block descent's random key (default ``jax.random.key(0)``). The distance is
        not random (the auction and the exact solver use no key); the key only orders ``method="blocks"``'s
        sweeps, so a result is reproducible without one.
      method: ``"auction"`` or ``"blocks"``.
      tol: the auction's target gap.
      exact_max: problems with ``N <= exact_max`` are solved exactly (see `solve`).
      block: block size of ``method="blocks"`` (see `solve`).
      max_sweeps: sweep budget of ``method="blocks"``.
      rtol: convergence threshold of ``method="blocks"``.

    Returns:
      `W2Result` ``(w2, perm, lower, gap, converged)``.

    Example:
      >>> import jax.numpy as jnp, ksdp
      >>> x = jnp.array([[0.0, 0.0], [1.0, 0.0]]); y = jnp.array([[1.0, 1.0], [0.0, 1.0]])
      >>> res = ksdp.w2(x, y)
      >>> float(res.w2), res.perm.tolist(), float(res.gap)
      (1.0, [1, 0], 0.0)
    """
    if method not in ("auction", "blocks"):
        raise ValueError(f"method must be 'auction' or 'blocks', got {method!r}.")
    key = jax.random.key(0) if key is None else key
    x, y = jnp.asarray(x), jnp.asarray(y)  # validated by solve / auction
    scale = 1.0
    if _is_concrete(x) and _is_concrete(y) and x.size and y.size:
        # squared distances of float32 points beyond ~1e19 overflow (below ~1e-19 they underflow): the
        # matching does not depend on the unit, so solve in units of the largest coordinate
        size = float(jnp.maximum(jnp.max(jnp.abs(x)), jnp.max(jnp.abs(y))))
        if size > 1e15 or 0 < size < 1e-15:
            scale = size
            x, y = x / scale, y / scale
    if x.ndim == 3:
        if x.shape[0] == 0:
            raise ValueError("x holds an empty batch (R = 0).")
        keys = jax.random.split(key, x.shape[0])
        parts = [
            w2(a, b, key=k, method=method, tol=tol, exact_max=exact_max, block=block, max_sweeps=max_sweeps, rtol=rtol)
            for a, b, k in zip(x, y, keys, strict=True)
        ]
        out = W2Result(*(jnp.stack([jnp.asarray(getattr(r, f)) for r in parts]) for f in W2Result._fields))
        return out._replace(w2=out.w2 * scale, lower=out.lower * scale)
    check_clouds(x, y)
    if x.shape[-2] <= exact_max or method == "blocks":
        res = solve(key, x, y, block=block, max_sweeps=max_sweeps, rtol=rtol, exact_max=exact_max)
        if x.shape[-2] <= exact_max:
            lower, converged = res.cost, jnp.asarray(True)
        else:  # no certificate: W2 >= the distance of the means (Jensen)
            lower, converged = jnp.sum((jnp.mean(x, 0) - jnp.mean(y, 0)) ** 2), res.converged
        safe = jnp.where(lower > 0, lower, 1)
        gap = jnp.where(lower > 0, (res.cost - lower) / safe, jnp.where(res.cost > 0, jnp.inf, 0.0))
        return W2Result(scale * jnp.sqrt(res.cost), res.perm, scale * jnp.sqrt(lower), gap, converged)
    res = auction(x, y, tol=tol)
    return W2Result(
        scale * jnp.sqrt(jnp.asarray(res.cost, x.dtype)),
        res.perm,
        scale * jnp.sqrt(jnp.asarray(res.lower, x.dtype)),
        jnp.asarray(res.gap, x.dtype),
        jnp.asarray(res.converged),
    )


def sinkhorn_cost(x, y, epsilon: float = 1e-3, *, threshold: float = 1e-4, max_iterations: int = 20000):
    """Entropic cross-check with ott-jax: Sinkhorn's primal cost ``<P, C>`` (mean squared distance).

    ``epsilon`` is absolute (the squared-distance cost is not rescaled). As ``epsilon -> 0`` the value
    tends to $W_2^2$, the quantity `matched_cost` gives at the optimal permutation.

    Returns:
      ``(primal_cost, converged)``.
    """
    from ott.geometry import pointcloud
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn

    x, y = check_clouds(x, y)
    if x.ndim != 2:
        raise ValueError("sinkhorn_cost takes one problem [N, d]; vmap it for a batch.")
    geom = pointcloud.PointCloud(x, y, epsilon=epsilon)
    solver = sinkhorn.Sinkhorn(threshold=threshold, max_iterations=max_iterations)
    out = jax.jit(lambda g: solver(linear_problem.LinearProblem(g)))(geom)
    return out.primal_cost, out.converged
