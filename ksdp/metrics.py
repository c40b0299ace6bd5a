r"""Sample-based distances between particle clouds, each with a standard error.

A learnt generator is judged against the IPM it learnt from, and the yardstick is the IPM itself:
every distance between generated and reference particles is reported next to its **floor**, the
same distance between two independent IPM runs of the same size. A defect is visible only when it
exceeds the floor by a few standard errors, so every estimate carries one (`Estimate`).

* `energy_distance`: the unbiased U-statistic of the energy distance (MMD with the kernel
  $-|x - y|$),

  $$
  \mathcal{E}(P, Q) = 2\,\mathbb{E}|X - Y| - \mathbb{E}|X - X'| - \mathbb{E}|Y - Y'| \ \ge 0,
  $$

  zero if and only if $P = Q$. The pair sums run in tiles as the IPM drift does (memory
  ``O(tile * n)``). Its standard error is the two-sample jackknife, computed exactly from the row
  sums in ``O(n)`` extra work. Over 300 draws of two 1D unit-Gaussian clouds (n = 500) its
  root-mean-square is 1.23 times the spread of the statistic for equal laws (conservative, as the
  Efron--Stein inequality has it, where the statistic is degenerate) and 1.02--1.04 times for
  shifts of 0.2 and 0.5 sd (``python -m benchmarks.studies
  --only energy``). Power: the statistic grows like the square of a
  defect while its SE grows like the defect over $\sqrt{n}$: at n = 500 a 0.5 sd shift gives 0.142
  against a spread of 0.036 (same command); `tests/test_metrics.py` checks that a 0.5 sd shift and a
  25% widening in 2D are beyond 3 SE at n = 2000.
* `c2st` (`ksdp.classifier`): a classifier two-sample test with sbibm's protocol. Accuracy 0.5 means
  indistinguishable; its standard error is the binomial one of the held-out predictions.
* `moments`: centre of mass and second moment with their standard errors.
* `radial_ks`: the Kolmogorov--Smirnov distance between the radial distribution of a cloud and a
  reference CDF (`ksdp.reference`); `radial_ks_where` also says at which level of the reference
  CDF, and with which sign, it is reached.
* `anisotropy`: how far the inner part of a cloud is from rotation invariance (the ratio of the
  largest to the smallest eigenvalue of its second-moment matrix, less 1), for laws that are
  rotation invariant about the origin; `anisotropy_z` sets a generated cloud against IPM runs.
* `compare`: all of them for one generated cloud against a reference, next to the floor.

* `w2_estimate`: W2 between equal-size clouds (`ksdp.wasserstein.auction`) with the standard error of
  the two-sample central limit theorem, from the auction's dual potentials. On its own W2 is blunt:
  at ``n = 1000`` its floor is larger than the defects that the figures show.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from ksdp import wasserstein as _wasserstein
from ksdp._checks import is_integer as _is_integer
from ksdp.classifier import c2st, c2st_batch
from ksdp.drifts import default_tile
from ksdp.estimate import Estimate, as_cloud


# --------------------------------------------------------------------------------------------
# Energy distance
# --------------------------------------------------------------------------------------------
@partial(jax.jit, static_argnames=("tile",))
def _distance_row_sums(a, b, *, tile: int):
    r""":math:`\sum_j |a_i - b_j|` for every row ``i`` of ``a``, tile by tile (zero distances add 0)."""
    n, d = a.shape
    n_tiles = -(-n // tile)
    pad = n_tiles * tile - n
    cols = [b[:, k] for k in range(d)]
    rows = tuple(jnp.pad(a[:, k], (0, pad)).reshape(n_tiles, tile) for k in range(d))

    def one(_, t):
        r2 = (t[0][:, None] - cols[0][None, :]) ** 2
        for k in range(1, d):
            r2 = r2 + (t[k][:, None] - cols[k][None, :]) ** 2
        return None, jnp.sum(jnp.sqrt(r2), axis=1)

    _, out = jax.lax.scan(one, None, rows)
    return out.reshape(-1)[:n]


def energy_distance(x, y, *, tile: int | None = None) -> Estimate:
    r"""Unbiased energy distance between the laws of two clouds, with its jackknife standard error.

    $$
    \hat{\mathcal{E}} = \frac{2}{nm}\sum_{i,j}|x_i - y_j| - \frac{1}{n(n-1)}\sum_{i\ne i'}|x_i - x_{i'}|
      - \frac{1}{m(m-1)}\sum_{j\ne j'}|y_j - y_{j'}|
    $$

    Its expectation is the energy distance of the two laws, so for two samples of one law it is 0
    on average (it can be negative). Cost: ``(n + m)^2`` distances, in tiles of ``tile`` rows.

    Args:
      x: ``[n, d]`` cloud, ``n >= 3``.
      y: ``[m, d]`` cloud, ``m >= 3``.
      tile: rows per tile (default `ksdp.drifts.default_tile` of the other cloud's size, as for the drift).

    Returns:
      `Estimate` ``(value, se)``.

    Example:
      >>> import numpy as np, ksdp.metrics as km
      >>> rng = np.random.default_rng(0)
      >>> e = km.energy_distance(rng.normal(size=(500, 2)), rng.normal(size=(500, 2)))
      >>> abs(e.value) < 3 * e.se
      True
    """
    x = as_cloud(x, "x")
    y = as_cloud(y, "y", x.shape[1])
    n, m = len(x), len(y)
    if n < 3 or m < 3:
        raise ValueError(f"energy_distance needs at least 3 points per cloud (the jackknife), got {n} and {m}.")
    if tile is not None and (not _is_integer(tile) or tile < 1):
        raise ValueError(f"tile must be a positive integer, got {tile!r}.")
    # The distance is translation invariant and homogeneous of degree 1: both clouds are centred on
    # their pooled mean and scaled to unit RMS radius in float64 before the float32 sums, so a cloud
    # far from the origin keeps its digits and a tiny one does not underflow; the scale comes back at
    # the end.
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    centre = np.concatenate([x64, y64]).mean(axis=0)
    x64, y64 = x64 - centre, y64 - centre
    scale = math.sqrt(np.concatenate([x64, y64]).var(axis=0).sum()) or 1.0
    xj, yj = jnp.asarray(x64 / scale, jnp.float32), jnp.asarray(y64 / scale, jnp.float32)

    def rows(a, b):  # row sums of |.| in float32, every later sum in float64 on the host
        t = min(int(tile or default_tile(len(b))), len(a))
        return np.asarray(_distance_row_sums(a, b, tile=t), np.float64)

    sxx, sxy, syy, syx = rows(xj, xj), rows(xj, yj), rows(yj, yj), rows(yj, xj)
    txx, tyy, txy = sxx.sum(), syy.sum(), sxy.sum()
    value = 2 * txy / (n * m) - txx / (n * (n - 1)) - tyy / (m * (m - 1))
    # leave-one-out values, exactly, from the row sums
    lx = 2 * (txy - sxy) / ((n - 1) * m) - (txx - 2 * sxx) / ((n - 1) * (n - 2)) - tyy / (m * (m - 1))
    ly = 2 * (txy - syx) / (n * (m - 1)) - txx / (n * (n - 1)) - (tyy - 2 * syy) / ((m - 1) * (m - 2))
    var = (n - 1) / n * np.sum((lx - lx.mean()) ** 2) + (m - 1) / m * np.sum((ly - ly.mean()) ** 2)
    return Estimate(float(value * scale), float(math.sqrt(var) * scale))


def _paired(generated, runs):
    """The checks over disjoint pairs of IPM runs (`c2st_pairs`, `structure_pairs`): ``(generated, runs,
    J, pairs)``, validated; a piece of ``J`` generated points per pair, at least 2 pairs."""
    runs = np.asarray(runs)
    if runs.ndim != 3 or runs.shape[0] < 4:
        raise ValueError(f"runs must be [R, J, d] with R >= 4 independent runs (2 pairs), got shape {runs.shape}.")
    g = as_cloud(generated, "generated", runs.shape[2])
    j = runs.shape[1]
    pairs = min(runs.shape[0] // 2, len(g) // j)
    if pairs < 2:
        raise ValueError(f"generated needs at least 2 J = {2 * j} points (a piece of J per pair), got {len(g)}.")
    return g, runs, j, pairs


def c2st_pairs(key, generated, runs, *, steps: int = 3000) -> dict:
    """The C2ST excess over disjoint pairs of independent IPM runs: a floor with less luck in it.

    One C2ST of generated against IPM particles and one of two IPM runs (the floor) at ``n = J`` each
    carry a sampling error of about ``0.5 / sqrt(2 J)`` (0.008 at J = 2000), and a floor of one pair
    of runs, shared by every value of a time experiment (one run gives every time), can sit below 0.5
    by that much at many values at once. Here the runs are paired, ``(runs[2k], runs[2k + 1])``, and
    for each pair a disjoint piece of ``J`` generated points is classified against ``runs[2k]``
    (``a_k``) and ``runs[2k + 1]`` against ``runs[2k]`` (``b_k``); the excess is the mean of
    ``a_k - b_k`` with its standard error from their spread over the pairs.

    Args:
      key: random key.
      generated: ``[n, d]`` generated cloud, ``n >= J`` times the number of pairs used.
      runs: ``[R, J, d]`` independent IPM runs, ``R >= 4`` (two pairs at least, for a spread).
      steps: Adam steps per fold of each C2ST's classifier (`c2st`'s ``steps``).

    Returns:
      dict with ``excess``, ``excess_se``, ``dp`` (mean of ``a_k``), ``ipm`` (mean of ``b_k``) and
      ``pairs``.
    """
    g, runs, j, pairs = _paired(generated, runs)
    keys, tests = [], []
    for k in range(pairs):  # the same keys and clouds as one c2st per test; all trained at once
        ka, kb = jax.random.split(jax.random.fold_in(key, k))
        keys += [ka, kb]
        tests += [(g[k * j : (k + 1) * j], runs[2 * k]), (runs[2 * k + 1], runs[2 * k])]
    acc = [e.value for e in c2st_batch(keys, tests, steps=steps)]
    a, b = acc[0::2], acc[1::2]
    diff = run_spread(np.subtract(a, b))
    return {
        "excess": diff["mean"],
        "excess_se": diff["se"],
        "dp": float(np.mean(a)),
        "ipm": float(np.mean(b)),
        "pairs": pairs,
    }


# --------------------------------------------------------------------------------------------
# Moments and the radial distribution
# --------------------------------------------------------------------------------------------
def moments(x) -> dict:
    r"""Centre of mass and second moment $m_2 = \frac1n\sum|x_i|^2$ of a cloud, with standard errors.

    The standard errors treat the points as independent draws (true of generated particles; the
    IPM's particles are exchangeable with ``O(1/J)`` correlations, which make a run's m2 vary by more:
    see `run_spread`).

    Returns:
      dict with ``com [d]``, ``com_se [d]``, ``com_norm`` (its length), ``m2``, ``m2_se``.
    """
    x = as_cloud(x, "x").astype(np.float64)
    n = len(x)
    sq = np.sum(x * x, axis=1)
    com = x.mean(0)
    return {
        "com": com.tolist(),
        "com_se": (x.std(0, ddof=1) / math.sqrt(n) if n > 1 else 0 * com).tolist(),
        "com_norm": float(np.linalg.norm(com)),
        "m2": float(sq.mean()),
        "m2_se": float(sq.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
    }


def run_spread(values) -> dict:
    """Mean and spread of one statistic over independent runs (one value per run, at least 2).

    A statistic of an IPM run (its m2, say) varies from run to run by more than the standard error
    that treats its J particles as independent (`moments`): their ``O(1/J)`` correlations, summed
    over ``J^2`` pairs, carry the run's initial fluctuation along (in ks2d-time at J = 2000 the m2
    of single runs spreads by 0.010-0.012 at every time, 1.3-1.7 times the 0.007 of independent
    draws). Compare such statistics with this spread.

    Returns:
      dict with ``mean``, ``sd`` (one run's standard deviation, ``ddof = 1``), ``se`` (of the mean)
      and ``runs``.
    """
    v = np.asarray(values, np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be one number per run, a 1D sequence, got shape {v.shape}.")
    if v.size < 2 or not np.all(np.isfinite(v)):
        raise ValueError(f"values must hold at least 2 finite numbers (one per run), got {v.tolist()}.")
    sd = float(v.std(ddof=1))
    return {"mean": float(v.mean()), "sd": sd, "se": sd / math.sqrt(v.size), "runs": int(v.size)}


def anisotropy(x, inner: float = 0.5) -> float:
    """Departure of a cloud's inner part from rotation invariance about the origin.

    The points within the ``inner`` quantile of ``|x|`` (all of them with ``inner = 1``), their
    second-moment matrix ``M = mean(x x^T)`` about the origin, and ``lambda_max(M) / lambda_min(M) - 1``:
    0 for a law invariant under rotations about the origin (up to sampling), ``s^2 - 1`` for such a
    law stretched by ``s`` along one axis (``inner = 1``). A core elongated along one axis, which
    C2ST, the energy distance and the radial profile barely register when it holds little of the
    mass, shows here. Of ``n`` points drawn from an invariant law the value is ``O(1 / sqrt(n))``,
    not 0: compare clouds of one size (`anisotropy_z`).
    """
    x = as_cloud(x, "x").astype(np.float64)
    if isinstance(inner, bool) or not (0.0 < inner <= 1.0):
        raise ValueError(f"inner must be a fraction in (0, 1] of the points (by radius), got {inner!r}.")
    if inner < 1.0:
        r = np.linalg.norm(x, axis=1)
        x = x[r <= np.quantile(r, inner)]
    if len(x) <= x.shape[1]:
        raise ValueError(f"anisotropy needs more than d = {x.shape[1]} points inside the inner fraction, got {len(x)}.")
    w = np.linalg.eigvalsh(x.T @ x / len(x))
    return float(w[-1] / w[0] - 1.0)


def anisotropy_z(generated, runs, inner: float = 0.5) -> dict:
    """The `anisotropy` of a generated cloud against that of independent IPM runs of one size.

    A run of ``J`` particles has an anisotropy of order ``1 / sqrt(J)`` from sampling alone, so the
    generated cloud is cut into ``len(generated) // J`` disjoint pieces of ``J`` points (at least 2)
    and their mean compared with the runs' mean; ``z`` is the difference over the combined standard
    error (each mean's from its own spread), one-sided: ``z > 3`` says the generated law is less
    rotation invariant than the IPM's.

    Args:
      generated: ``[n, d]`` generated cloud, ``n >= 2 J``.
      runs: ``[R, J, d]`` independent IPM runs, ``R >= 2``.

    Returns:
      dict with ``dp``, ``dp_se``, ``ipm``, ``ipm_se``, ``z``, ``pieces`` and ``runs``.
    """
    runs = np.asarray(runs)
    if runs.ndim != 3 or runs.shape[0] < 2:
        raise ValueError(f"runs must be [R, J, d] with R >= 2 independent runs, got shape {runs.shape}.")
    g = as_cloud(generated, "generated", runs.shape[2])
    j = runs.shape[1]
    pieces = len(g) // j
    if pieces < 2:
        raise ValueError(f"generated needs at least 2 J = {2 * j} points (pieces of one run's size), got {len(g)}.")
    dp = run_spread([anisotropy(g[k * j : (k + 1) * j], inner) for k in range(pieces)])
    ipm = run_spread([anisotropy(run, inner) for run in runs])
    se = math.hypot(dp["se"], ipm["se"])
    return {
        "dp": dp["mean"],
        "dp_se": dp["se"],
        "ipm": ipm["mean"],
        "ipm_se": ipm["se"],
        "z": (dp["mean"] - ipm["mean"]) / se if se > 0 else 0.0,  # no spread: pieces and runs all alike
        "pieces": pieces,
        "runs": int(runs.shape[0]),
    }


# --------------------------------------------------------------------------------------------
# Structure: the coordinate-plane projections the figures show
# --------------------------------------------------------------------------------------------
PROJECTION_CLIP = 0.005  # the grid spans the pooled clouds' [0.5%, 99.5%] quantiles per axis
# a run judges `structure_pairs` at each of its values; a generator drawing the IPM's own law fails
# one of them with probability at most this (`structure_limit`)
STRUCTURE_ALPHA = 0.05


def projection_bins(n: int) -> int:
    """Grid cells per axis of `projection_chi2` for clouds of ``n`` points: ``sqrt(n / 10)`` rounded,
    at least 8, so that a cloud filling the grid puts about 10 points in a cell (the chi-square's
    terms stay near their large-count behaviour while a feature a few cells wide is resolved)."""
    return max(8, int(round(math.sqrt(n / 10))))


def projection_chi2(x, y, bins: int | None = None) -> float:
    r"""How far two clouds' coordinate-plane projections differ, in units of sampling noise.

    For each plane ``(i, j)`` of the ``d`` coordinates (one plane in 2D, three in 3D) both clouds are
    binned on one ``bins x bins`` grid spanning the pooled clouds' [0.5%, 99.5%] quantiles per axis
    (points beyond it fall in the edge cells), and the two-sample chi-square

    $$
    X^2 = \sum_c \frac{(\sqrt{m/n}\,a_c - \sqrt{n/m}\,b_c)^2}{a_c + b_c}
    $$

    is taken over the cells either cloud occupies (``a_c``, ``b_c`` the counts of the ``n`` and ``m``
    points). Divided by its degrees of freedom (occupied cells less 1) it is about 1 for independent
    samples of one law whatever the law, and grows with any difference the figures' projections show:
    arms, tilts, holes, a shifted core. The value is the mean over the planes. Its noise and its
    floor depend on the sizes: compare clouds of one size (`structure_pairs`).

    Args:
      x: ``[n, d]`` cloud, ``d >= 2``.
      y: ``[m, d]`` cloud of the same dimension.
      bins: grid cells per axis (default `projection_bins` of the smaller cloud's size).
    """
    x = as_cloud(x, "x")
    y = as_cloud(y, "y", x.shape[1])
    d = x.shape[1]
    if d < 2:
        raise ValueError(f"projection_chi2 compares 2D projections: the clouds need d >= 2, got d = {d}.")
    if bins is None:
        bins = projection_bins(min(len(x), len(y)))
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or not 2 <= bins <= 4096:
        raise ValueError(f"bins must be an integer in [2, 4096] (cells per axis), got {bins!r}.")
    n, m = len(x), len(y)
    pooled = np.concatenate([x, y]).astype(np.float64)
    lo = np.quantile(pooled, PROJECTION_CLIP, axis=0)
    hi = np.quantile(pooled, 1.0 - PROJECTION_CLIP, axis=0)
    width = np.where(hi > lo, hi - lo, 1.0)

    def cells(a):
        c = np.floor((a.astype(np.float64) - lo) / width * bins)
        return np.clip(c, 0, bins - 1).astype(np.int64)

    cx, cy = cells(x), cells(y)
    values = []
    for i in range(d):
        for j in range(i + 1, d):
            a = np.bincount(cx[:, i] * bins + cx[:, j], minlength=bins * bins)
            b = np.bincount(cy[:, i] * bins + cy[:, j], minlength=bins * bins)
            occupied = (a + b) > 0
            a, b = a[occupied].astype(np.float64), b[occupied].astype(np.float64)
            chi2 = np.sum((math.sqrt(m / n) * a - math.sqrt(n / m) * b) ** 2 / (a + b))
            values.append(chi2 / max(int(occupied.sum()) - 1, 1))
    return float(np.mean(values))


def structure_limit(pairs: int, values: int) -> float:
    """The largest `structure_pairs` ``z`` that passes, where a run judges the check at ``values`` values
    over ``pairs`` pairs of IPM runs each.

    ``z`` is the mean of ``pairs`` differences over its standard error from their spread, a Student ratio
    with ``pairs - 1`` degrees of freedom for a generator that draws the IPM's law. The limit is its
    one-sided ``STRUCTURE_ALPHA / values`` quantile (Bonferroni), so that such a generator fails any of
    the run's values with probability at most ``STRUCTURE_ALPHA``, however many values the run has:
    3.36 at 6 pairs and 5 values, 4.38 at 6 pairs and 14 values. A fixed limit would fail a perfect
    generator more often the more values a run judges (``z <= 3`` at 6 pairs: 1.5% per value, 19% over 14).
    """
    for name, n, least in (("pairs", pairs, 2), ("values", values, 1)):
        if not _is_integer(n) or n < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {n!r}.")
    return float(scipy.stats.t.isf(STRUCTURE_ALPHA / values, pairs - 1))


def structure_pairs(generated, runs, bins: int | None = None) -> dict:
    """The structure check: `projection_chi2` of generated against IPM particles, over its floor
    between independent IPM runs, on disjoint pairs of runs (as `c2st_pairs` does).

    The runs are paired, ``(runs[2k], runs[2k + 1])``; for each pair a disjoint piece of ``J`` generated
    points is compared with ``runs[2k]`` (``a_k``) and ``runs[2k + 1]`` with ``runs[2k]`` (``b_k``). The
    excess is the mean of ``a_k - b_k`` with its standard error from their spread over the pairs, and
    ``z`` their ratio. A generator whose projections match the IPM's has ``z`` of order 1; the
    acceptance asks ``z <= structure_limit(pairs, values)`` over a run's judged values.

    Args:
      generated: ``[n, d]`` generated cloud, ``n >= J`` times the number of pairs used (independent
        draws, in any order: the pieces are consecutive).
      runs: ``[R, J, d]`` independent IPM runs, ``R >= 4``.
      bins: grid cells per axis (default `projection_bins` of ``J``).

    Returns:
      dict with ``excess``, ``excess_se``, ``z``, ``dp`` (mean of ``a_k``), ``ipm`` (mean of ``b_k``),
      ``pairs`` and ``bins``.
    """
    g, runs, j, pairs = _paired(generated, runs)
    bins = projection_bins(j) if bins is None else bins
    a = [projection_chi2(g[k * j : (k + 1) * j], runs[2 * k], bins) for k in range(pairs)]
    b = [projection_chi2(runs[2 * k + 1], runs[2 * k], bins) for k in range(pairs)]
    diff = run_spread(np.subtract(a, b))
    return {
        "excess": diff["mean"],
        "excess_se": diff["se"],
        "z": diff["mean"] / diff["se"] if diff["se"] > 0 else 0.0,
        "dp": float(np.mean(a)),
        "ipm": float(np.mean(b)),
        "pairs": pairs,
        "bins": int(bins),
    }


def stratified_mean(draws) -> Estimate:
    """The mean over strata of each stratum's mean, with its standard error from the spread within
    each stratum: ``draws [strata, n]``, ``n >= 2`` independent draws per stratum (a statistic of
    each training set, say, drawn ``n`` times). The strata's own differences do not enter the error.
    """
    a = np.asarray(draws, np.float64)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 2 or not np.all(np.isfinite(a)):
        raise ValueError(f"draws must be [strata, n] finite numbers with n >= 2, got shape {a.shape}.")
    se = math.sqrt(float(np.sum(np.var(a, axis=1, ddof=1) / a.shape[1]))) / a.shape[0]
    return Estimate(float(a.mean()), se)


def radial_ks(x, cdf) -> float:
    """Kolmogorov--Smirnov distance between the law of ``|x|`` and a reference radial CDF.

    Args:
      x: ``[n, d]`` cloud.
      cdf: vectorised function ``r -> P(|X| <= r)`` (e.g. `ksdp.reference.RadialSolution.cdf`).

    Returns:
      :math:`\\sup_r |F_n(r) - F(r)|`, evaluated on both sides of every jump of the empirical CDF.
    """
    return radial_ks_where(x, cdf)[0]


def radial_ks_where(x, cdf) -> tuple[float, float, float]:
    """`radial_ks` and where it is reached: ``(ks, signed, level)``.

    ``signed`` is ``F_n - F`` at the supremum (> 0: the cloud has too little mass beyond that
    radius), ``level`` the reference CDF there (0.99: the outer 1% of the mass, the tail).
    """
    r = np.sort(np.linalg.norm(as_cloud(x, "x").astype(np.float64), axis=1))
    f = np.asarray(cdf(r), np.float64)
    n = len(r)
    upper = np.arange(1, n + 1) / n - f
    lower = f - np.arange(0, n) / n
    iu, il = int(np.argmax(upper)), int(np.argmax(lower))
    if upper[iu] >= lower[il]:
        return float(upper[iu]), float(upper[iu]), float(f[iu])
    return float(lower[il]), -float(lower[il]), float(f[il])


UNCERTIFIED = 10.0  # w2_estimate refuses an auction whose certified gap exceeds this many times its tol


class UncertifiedError(ValueError):
    """`w2_estimate`'s auction did not certify its matching within `UNCERTIFIED` times its ``tol``."""


def w2_estimate(x, y, *, tol: float = 1e-4) -> Estimate:
    r"""W2 between two equal-size clouds ``[n, d]``, with its sampling standard error.

    $W_2^2$ is the auction's matching cost (`ksdp.wasserstein.auction`, certified within ``tol``
    relative). The standard error is that of the two-sample central limit theorem of the empirical
    transport cost (del Barrio, González-Sanz and Loubes, 2021): for two independent n-samples,
    $\mathrm{Var}\,\widehat{W}_2^2 \approx (\mathrm{Var}_P\,\varphi + \mathrm{Var}_Q\,\psi) / n$,
    with $(\varphi, \psi)$ the Kantorovich potentials, here the auction's duals
    ($\psi_j = -p_j$, $\varphi_i = \min_j |x_i - y_j|^2 + p_j$); $W_2$'s is
    $\mathrm{SE}(W_2^2) / (2 W_2)$. It measures the spread of $\widehat{W}_2$ around its mean at
    this ``n``, not the bias of that mean against $W_2(P, Q)$, which is what the floor shows. Where
    $P = Q$ the first-order variance vanishes and the SE is the duals' residual spread, which
    overstates the spread (conservative: 40 draws of two 2D unit Gaussians at n = 400 spread by
    0.70 of their mean SE). ``tests/test_metrics.py`` checks the SE against the spread of 40 draws
    of a shifted pair and of an equal pair
    (``test_w2_standard_error_matches_the_spread_of_repeated_draws``).

    Raises:
      ValueError: the auction did not certify its matching within `UNCERTIFIED` times ``tol`` (it names
        the gap reached).
    """
    x = as_cloud(x, "x")
    y = as_cloud(y, "y", x.shape[1])
    if len(x) != len(y):
        raise ValueError(
            f"x and y must hold the same number of points (W2 between equal-size clouds), got {len(x)} and "
            f"{len(y)}; subsample the larger one."
        )
    if len(x) < 2:
        raise ValueError(f"x and y need at least 2 points each for a standard error, got {len(x)}.")
    # W2 is translation invariant: centred on their pooled mean in float64, clouds far from the origin
    # keep the digits the auction's float32 arithmetic would otherwise spend on the offset
    centre = np.concatenate([x, y]).astype(np.float64).mean(axis=0)
    x, y = (np.asarray(x, np.float64) - centre).astype(x.dtype), (np.asarray(y, np.float64) - centre).astype(y.dtype)
    res = _wasserstein.auction(x, y, tol=tol)
    # never a value the certificate does not back: an auction that stopped within a few times its
    # tolerance (its last rounds' float32 prices) still bounds W2^2 within 1e-3 relative at the default,
    # far below the estimate's standard error; one further off is refused
    if not res.gap <= UNCERTIFIED * tol:
        raise UncertifiedError(
            f"w2_estimate: the auction stopped {res.gap:.2e} (relative) from the optimum after {res.rounds} rounds, "
            f"more than {UNCERTIFIED:g} x tol = {UNCERTIFIED * tol:g}: W2 is not certified. Pass a larger tol, or "
            "compare fewer points."
        )
    phi, psi = _wasserstein.kantorovich_potentials(x, y, res.prices)
    n = len(x)
    var = (np.var(phi, ddof=1) + np.var(psi, ddof=1)) / n
    w2 = math.sqrt(max(res.cost, 0.0))
    return Estimate(w2, math.sqrt(var) / (2 * w2) if w2 > 0 else math.inf)


# --------------------------------------------------------------------------------------------
# Everything at once, next to the floor
# --------------------------------------------------------------------------------------------
def compare(
    key,
    generated,
    reference,
    floor=None,
    *,
    w2_points: int | None = None,
    c2st_points: int | None = None,
    energy_points: int | None = None,
    c2st_steps: int = 3000,
) -> dict:
    """Every metric of ``generated`` against ``reference``, and of ``floor`` against ``reference``.

    ``floor`` is an independent IPM cloud of the reference's size: the distances between it and
    ``reference`` are what a perfect generator would score (up to their standard errors).

    Args:
      key: random key.
      generated: ``[n_g, d]`` generated cloud (may be larger than the reference).
      reference: ``[J, d]`` IPM cloud.
      floor: ``[J, d]`` independent IPM cloud, or None.
      w2_points: points per cloud for W2 (default ``J``; W2 needs equal sizes).
      c2st_points: points per cloud for the C2ST (default ``J``).
      energy_points: generated points for the energy distance (default all).
      c2st_steps: Adam steps per fold of the C2ST's classifier (`c2st`'s ``steps``).

    Returns:
      dict with ``energy``, ``c2st``, ``w2`` (each a ``[value, se]`` pair; W2's from `w2_estimate`),
      ``moments`` of each cloud, and the same keys prefixed ``floor_``.
    """
    generated = as_cloud(generated, "generated")
    reference = as_cloud(reference, "reference", generated.shape[1])
    j = len(reference)
    for name, v in (("w2_points", w2_points), ("c2st_points", c2st_points), ("energy_points", energy_points)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2):
            raise ValueError(f"{name} must be None (all points) or an integer >= 2 (points per cloud), got {v!r}.")
    if floor is not None:
        floor = as_cloud(floor, "floor", generated.shape[1])
    k_w, k_c, k_e, k_wf, k_cf = jax.random.split(key, 5)

    def take(k, a, n):
        return a if n is None or n >= len(a) else a[np.asarray(jax.random.permutation(k, len(a)))[:n]]

    def w2(k, a, b, n):
        n = min(n or j, len(a), len(b))
        a, b = take(k, a, n), take(jax.random.fold_in(k, 1), b, n)
        try:
            return list(w2_estimate(a, b))  # the auction: within 1e-4 of the optimum, certified
        except UncertifiedError:
            # a hard matching can stop short of that (its float32 prices): certified at 1e-3 relative in W2^2
            # it is still far inside W2's standard error (0.008 of 0.047 for two clouds of one law, n = 2000)
            return list(w2_estimate(a, b, tol=1e-3))

    out = {
        "n_generated": len(generated),
        "n_reference": j,
        "energy": list(energy_distance(take(k_e, generated, energy_points), reference)),
        "c2st": list(c2st(k_c, take(k_c, generated, c2st_points or j), reference, steps=c2st_steps)),
        "w2": w2(k_w, generated, reference, w2_points),
        "moments": moments(generated),
        "reference_moments": moments(reference),
    }
    if floor is not None:
        out.update(
            {
                "floor_energy": list(energy_distance(floor, reference)),
                "floor_c2st": list(c2st(k_cf, floor, reference, steps=c2st_steps)),
                "floor_w2": w2(k_wf, floor, reference, w2_points),
                "floor_moments": moments(floor),
            }
        )
    return out
