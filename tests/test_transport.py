"""Block assignment against SciPy's exact solver, monotonicity, Sinkhorn, jit/vmap, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from ksdp import transport as T
from ksdp import wasserstein as W


def _optimum(x, y):
    c = ((np.asarray(x, np.float64)[:, None] - np.asarray(y, np.float64)[None]) ** 2).sum(-1)
    r, col = scipy.optimize.linear_sum_assignment(c)
    return c[r, col].mean(), c


def _cost64(c, perm):
    return c[np.arange(len(perm)), np.asarray(perm)].mean()


def _clouds(n, d, seed):
    x = jax.random.uniform(jax.random.key(seed), (n, d)) * 2 - 1
    y = jax.random.normal(jax.random.key(seed + 1000), (n, d)) * 0.5 + 0.2
    return x, y


# float32: a matched cost is a mean of N terms computed in float32, relative round-off <~ 1e-6;
# "equal to the optimum" is checked at 1e-5 relative.
OPT_RTOL = 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("n,d", [(1, 2), (2, 3), (5, 2), (17, 3), (33, 2), (64, 3)])
def test_reaches_exact_optimum_small(n, d):
    x, y = _clouds(n, d, seed=n)
    opt, c = _optimum(x, y)
    res = T.solve(jax.random.key(0), x, y, exact_max=T.EXACT_MAX)  # small N: one exact solve
    assert _cost64(c, res.perm) <= opt * (1 + OPT_RTOL) + 1e-12
    # the block solver itself is exact when the block covers the problem (N <= M)
    res = T.solve(jax.random.key(0), x, y, block=64, max_sweeps=2)
    assert _cost64(c, res.perm) <= opt * (1 + OPT_RTOL) + 1e-12
    assert sorted(np.asarray(res.perm).tolist()) == list(range(n))


@pytest.mark.parametrize("n,m", [(37, 8), (300, 16), (5, 16), (2, 2)])
@pytest.mark.parametrize("local", [False, True])
def test_every_row_is_in_a_block(n, m, local):
    x, _ = _clouds(n, 2, seed=3)
    blocks, extra = T.block_rows(jax.random.key(n), x, m, local)
    rows = np.asarray(blocks).ravel()
    assert len(set(rows.tolist())) == len(rows)  # the batched blocks are disjoint
    if extra is not None:
        rows = np.concatenate([rows, np.asarray(extra).ravel()])
    assert set(rows.tolist()) == set(range(n))  # remainder rows are optimised too


@pytest.mark.slow
def test_cost_never_increases():
    # Each block keeps its sub-assignment unless the exact one is strictly cheaper in float32; a
    # misjudged near-tie can move the float64 cost by at most ~M * eps_32 * (block cost), so we
    # allow 1e-6 of the total per sweep, far below the gains of real sweeps (~1e-3 early on).
    n, m = 301, 8
    x, y = _clouds(n, 2, seed=5)
    _, c = _optimum(x, y)
    for seed in range(3):
        perm = T.identity(x)
        prev = _cost64(c, perm)
        for k in range(40):
            perm = T.block_sweep(jax.random.key(100 * seed + k), x, y, perm, k % 2 == 1, block=m)
            cost = _cost64(c, perm)
            assert cost <= prev * (1 + 1e-6), (seed, k, cost, prev)
            prev = cost
        assert sorted(np.asarray(perm).tolist()) == list(range(n))


@pytest.mark.slow
def test_n2000_within_half_percent_in_200_sweeps():
    x, y = _clouds(2000, 2, seed=11)
    opt, c = _optimum(x, y)
    perm, costs = jax.jit(lambda k: T.refine(k, x, y, T.identity(x), n_sweeps=200, block=16))(jax.random.key(0))
    gap = _cost64(c, perm) / opt - 1
    assert 0 <= gap < 0.005, gap
    assert np.all(np.diff(np.asarray(costs)) <= 1e-6 * float(costs[0]))


@pytest.mark.slow
def test_agrees_with_sinkhorn():
    # Entropic bias of the primal cost at epsilon = 3e-3 against W2^2 ~ 0.2 is ~0.1% (measured);
    # the issue asks for agreement within 1%.
    x, y = _clouds(200, 2, seed=7)
    d = W.w2(x, y).w2
    primal, converged = W.sinkhorn_cost(x, y, epsilon=3e-3)
    assert bool(converged)
    assert abs(float(primal) / float(d) ** 2 - 1) < 0.01


@pytest.mark.slow
def test_w2_blocks_is_close():
    x, y = _clouds(400, 3, seed=8)
    opt, c = _optimum(x, y)
    res = W.w2(x, y, exact_max=100, method="blocks")
    # an upper bound (a permutation), within the 2% that block descent reaches in 3D (docs)
    assert opt * (1 - OPT_RTOL) <= float(res.w2) ** 2 <= opt * 1.02, float(res.w2) ** 2 / opt - 1
    # its only certificate is the distance of the means, a true lower bound
    assert float(res.lower) ** 2 <= opt and float(res.gap) >= float(res.w2) ** 2 / opt - 1


# The auction's certificate: the tests check it against SciPy's exact optimum of the float64 costs.
AUCTION_CASES = [(2, 2, 0), (7, 3, 1), (300, 2, 0), (150, 3, 0), (300, 2, 1)]  # one compile per (n, d)


@pytest.mark.slow
@pytest.mark.parametrize("n,d,seed", AUCTION_CASES)
def test_auction_certificate_is_honest(n, d, seed):
    x, y = _clouds(n, d, seed=20 + seed)
    opt, c = _optimum(x, y)
    res = W.auction(x, y, tol=1e-4)
    assert sorted(np.asarray(res.perm).tolist()) == list(range(n))
    assert res.cost == pytest.approx(_cost64(c, res.perm), rel=1e-12)  # the cost is the matching's, in float64
    assert res.lower <= opt  # a true lower bound: never above the optimum
    assert res.cost >= opt * (1 - 1e-12)
    assert (res.cost - opt) / opt <= res.gap  # the reported gap covers the true one
    assert res.converged and res.gap <= 1e-4


def test_dual_bound_is_a_bound_for_any_prices():
    # weak duality holds for every nonnegative price vector, not only the auction's
    x, y = _clouds(300, 2, seed=31)
    opt, _ = _optimum(x, y)
    rng = np.random.default_rng(0)
    for scale in (0.0, 1e-3, 0.1, 10.0):
        p = jnp.asarray(rng.random(300) * scale, jnp.float32)
        assert W.dual_bound(x, y, p) <= opt
    # and the auction's prices make it tight within the auction's gap
    res = W.auction(x, y, tol=1e-4)
    assert opt - W.dual_bound(x, y, res.prices) <= 1e-4 * opt
    with pytest.raises(ValueError, match="prices must be >= 0"):
        W.dual_bound(x, y, -jnp.ones(300))


def test_auction_budget_and_float32_floor_are_reported():
    x, y = _clouds(300, 2, seed=32)
    opt, c = _optimum(x, y)
    # a budget too small to finish: still a permutation, an honest gap, not converged
    res = W.auction(x, y, max_rounds=50)
    assert sorted(np.asarray(res.perm).tolist()) == list(range(300))
    assert not res.converged and res.lower <= opt and (res.cost - opt) / opt <= res.gap
    # a tolerance below what float32 prices resolve: the best certificate, not converged
    res = W.auction(x, y, tol=1e-9)
    assert not res.converged and res.lower <= opt <= res.cost and res.gap < 1e-3


@pytest.mark.slow
def test_w2_default_is_certified():
    x, y = _clouds(600, 2, seed=33)
    opt, c = _optimum(x, y)
    res = W.w2(x, y)
    assert bool(res.converged) and float(res.gap) <= 1e-4
    assert float(res.lower) ** 2 <= opt * (1 + 1e-6) and float(res.w2) ** 2 >= opt * (1 - 1e-6)
    small = W.w2(x[:50], y[:50])  # N <= exact_max: exact, gap 0
    assert float(small.gap) == 0.0 and bool(small.converged)
    batch = W.w2(jnp.stack([x, y]), jnp.stack([y, x]))
    assert batch.w2.shape == (2,) and batch.perm.shape == (2, 600)
    np.testing.assert_allclose(np.asarray(batch.w2), float(res.w2), rtol=1e-4)  # W2 is symmetric


@pytest.mark.slow
def test_jit_and_vmap_over_parameter_sets():
    r, n = 4, 64
    xs = jnp.stack([_clouds(n, 2, seed=s)[0] for s in range(r)])
    ys = jnp.stack([_clouds(n, 2, seed=s)[1] for s in range(r)])
    perm0 = T.identity(xs)
    assert perm0.shape == (r, n)
    batched = jax.jit(lambda k, p: T.block_sweep(k, xs, ys, p, False, block=8))(jax.random.key(1), perm0)
    keys = jax.random.split(jax.random.key(1), r)
    for i in range(r):
        single = T.block_sweep(keys[i], xs[i], ys[i], perm0[i], False, block=8)
        np.testing.assert_array_equal(batched[i], single)
    res = T.solve(jax.random.key(2), xs, ys, block=8, max_sweeps=50)
    assert res.perm.shape == (r, n) and res.cost.shape == (r,)
    vm = jax.vmap(lambda a, b: T.matched_cost(a, b, T.identity(a)))(xs, ys)
    np.testing.assert_allclose(vm, T.matched_cost(xs, ys, perm0), rtol=1e-6)


def test_refine_for_is_its_sweeps_with_a_traced_count():
    # refine_for's sweep i is block_sweep with the key fold_in(key, i), random blocks for even i, local for
    # odd: the same integer sweeps on the same points, so the same permutation exactly; one compiled
    # program serves every count (0 sweeps: the warm start unchanged)
    x, y = _clouds(64, 2, seed=3)
    key, start = jax.random.key(4), T.identity(x)
    run = jax.jit(lambda n: T.refine_for(key, x, y, start, n, block=8))
    perm = start
    for i in range(5):
        perm = T.block_sweep(jax.random.fold_in(key, i), x, y, perm, i % 2 == 1, block=8)
    np.testing.assert_array_equal(run(5), perm)
    np.testing.assert_array_equal(run(0), start)
    assert run._cache_size() == 1


def test_n_equal_one():
    x = jnp.ones((1, 2))
    res = T.solve(jax.random.key(0), x, 2 * x)
    assert res.perm.tolist() == [0] and float(res.cost) == pytest.approx(2.0)


def test_bad_input():
    x = jnp.zeros((10, 2))
    with pytest.raises(ValueError, match="same shape"):
        T.solve(jax.random.key(0), x, jnp.zeros((10, 3)))
    with pytest.raises(ValueError, match="numbers of points N"):
        W.w2(x, jnp.zeros((11, 2)))
    with pytest.raises(ValueError, match="block"):
        T.solve(jax.random.key(0), x, x, block=1)
    with pytest.raises(ValueError, match="non-finite"):
        W.w2(x, x.at[3, 1].set(jnp.inf))
    with pytest.raises(ValueError, match="perm"):
        T.solve(jax.random.key(0), x, x, perm=jnp.arange(9))
    with pytest.raises(ValueError, match=r"\[N, d\]"):
        W.w2(jnp.zeros(5), jnp.zeros(5))
    with pytest.raises(ValueError, match="method"):
        W.w2(x, x, method="hungarian")
    with pytest.raises(ValueError, match="tol"):
        W.auction(x, x, tol=0.0)
    with pytest.raises(ValueError, match="max_rounds"):
        W.auction(x, x, max_rounds=0)
    with pytest.raises(ValueError, match="one problem"):
        W.auction(jnp.zeros((2, 10, 2)), jnp.zeros((2, 10, 2)))


@pytest.mark.parametrize("scale", [1e20, 1e-20])
def test_auction_in_any_unit(scale):
    x, y = _clouds(300, 2, seed=34)
    ref = W.auction(x, y)
    res = W.auction(x * scale, y * scale)
    np.testing.assert_array_equal(np.asarray(res.perm), np.asarray(ref.perm))
    assert res.cost == pytest.approx(ref.cost * scale**2, rel=1e-5)  # float32 round-off of the rescale
    assert res.lower <= res.cost and res.gap == pytest.approx(ref.gap, rel=1e-2, abs=1e-6)


def test_auction_bids_ask_for_full_float32_dots():
    # On recent GPUs a DEFAULT-precision float32 dot may round its inputs to TF32 (a 10-bit
    # mantissa, ~1e-3 relative), far above the 1e-4 gaps the certificate is asked for; a CPU
    # ignores the setting, so this checks that the program asks for HIGHEST.
    jaxpr = jax.make_jaxpr(W.top_two)(jnp.ones((3, 2)), jnp.ones((5, 2)), jnp.ones(5))
    dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert dots
    assert all(e.params["precision"] == (jax.lax.Precision.HIGHEST,) * 2 for e in dots)
