"""The small-block exact solver (`ksdp.assignment.solve_batch`) against SciPy and optax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from optax import assignment as optax_assignment

from ksdp import assignment as A

SOLVE = jax.jit(A.solve_batch)
SOLVE_VMAP = jax.jit(jax.vmap(A.solve_batch))  # a batch of batches: [G, B, M, M]


def _problems(rng, b, m, kind):
    if kind == "uniform":
        return rng.random((b, m, m))
    if kind == "ties":  # few distinct values: many optimal permutations
        return np.round(rng.random((b, m, m)) * 3)
    if kind == "identity":  # the identity optimal in every other block (the sweeps' common case)
        c = rng.random((b, m, m))
        c[::2] -= 2 * np.eye(m)
        return c
    # squared distances of near-matched points: the identity near-optimal, as in a warm sweep
    x = rng.random((b, m, 2))
    y = x + 0.05 * rng.normal(size=(b, m, 2))
    return ((x[:, :, None] - y[:, None]) ** 2).sum(-1)


def _check(c64, sol):
    sol = np.asarray(sol)
    for k, (c, s) in enumerate(zip(c64, sol, strict=True)):
        assert sorted(s.tolist()) == list(range(c.shape[0])), k
        r, col = scipy.optimize.linear_sum_assignment(c)
        opt = c[r, col].sum()
        # float32: each of the M costs carries a relative round-off ~6e-8 and Dijkstra's reduced
        # costs a few more; 1e-5 of the total (plus 1e-6 absolute) is far below a wrong swap's
        # cost on these problems (~1e-2)
        assert c[np.arange(c.shape[0]), s].sum() <= opt + 1e-5 * abs(opt) + 1e-6, k


@pytest.mark.slow
@pytest.mark.parametrize("m", [1, 2, 3, 16, 33, 64])  # 16 and 33: one and two words of path bits
def test_equals_scipy_under_jit(m):
    rng = np.random.default_rng(m)
    c = np.concatenate([_problems(rng, 12, m, kind) for kind in ("uniform", "ties", "identity", "near")])
    _check(c, SOLVE(jnp.asarray(c, jnp.float32)))


@pytest.mark.slow
@pytest.mark.parametrize("m", [2, 16])
def test_equals_scipy_under_vmap(m):
    rng = np.random.default_rng(100 + m)
    c = np.stack([_problems(rng, 6, m, k) for k in ("uniform", "ties", "identity")])  # [3, 6, m, m]
    sol = SOLVE_VMAP(jnp.asarray(c, jnp.float32))
    _check(c.reshape(-1, m, m), np.asarray(sol).reshape(-1, m))


@pytest.mark.slow
def test_one_matrix_and_gathered_batches():
    rng = np.random.default_rng(7)
    c = _problems(rng, 1, 9, "uniform")[0]
    _check(c[None], A.solve_batch(jnp.asarray(c, jnp.float32))[None])
    # 1 bad block, a few, most: with levels=4 the search gathers the blocks still searching from 64
    # into 16 (no batch under 8 blocks); levels=1 searches the whole batch to the end
    for n_bad in (1, 5, 40):
        cc = _problems(rng, 64, 8, "identity")
        cc[1::2] -= 2 * np.eye(8)  # identity optimal everywhere ...
        cc[:n_bad] = rng.random((n_bad, 8, 8))  # ... but in n_bad blocks
        for levels in (1, 4):
            _check(cc, A.solve_batch(jnp.asarray(cc, jnp.float32), levels=levels))


def test_identity_check_is_exact_in_both_directions():
    rng = np.random.default_rng(8)
    c = _problems(rng, 200, 8, "near")
    shown = np.asarray(A.identity_is_optimal(jnp.asarray(c, jnp.float32)))
    truth = np.array([np.isclose(np.trace(m), m[scipy.optimize.linear_sum_assignment(m)].sum()) for m in c])
    assert not np.any(shown & ~truth)  # never claims a non-optimal identity
    assert shown.sum() >= 0.9 * truth.sum()  # and finds (nearly) all optimal ones: float ties may hide a few


@pytest.mark.slow
def test_early_stop_of_the_identity_check_leaves_blocks_to_the_exact_solver():
    # solve_batch stops the relaxations once at most B // 64 blocks still relax: those are reported
    # "not shown optimal" and solved by augmenting paths, so the optimum must not change
    rng = np.random.default_rng(9)
    c = jnp.asarray(_problems(rng, 256, 16, "near"), jnp.float32)
    full = np.asarray(A.identity_is_optimal(c))
    early = np.asarray(A.identity_is_optimal(c, 16, leave=256 // 64))
    assert not np.any(early & ~full)  # stopping early never claims more than the full check
    assert np.sum(full & ~early) <= 256 // 64  # and leaves at most `leave` optimal blocks to solve
    _check(np.asarray(c, np.float64), SOLVE(c))


@pytest.mark.slow
def test_matches_optax_hungarian():
    # optax's Hungarian algorithm, the solver ksdp used before, as a second reference
    rng = np.random.default_rng(9)
    c = jnp.asarray(_problems(rng, 50, 16, "uniform"), jnp.float32)
    i, j = jax.vmap(optax_assignment.hungarian_algorithm)(c)
    ref = jnp.sum(c[jnp.arange(50)[:, None], i, j], axis=1)
    ours = jnp.sum(jnp.take_along_axis(c, SOLVE(c)[..., None], 2)[..., 0], axis=1)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-6)  # float32 sums of 16 terms


def test_bad_input():
    with pytest.raises(ValueError, match="square"):
        A.solve_batch(jnp.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="square"):
        A.solve_batch(jnp.zeros(4))
    with pytest.raises(TypeError, match="floats"):
        A.solve_batch(jnp.zeros((2, 3, 3), jnp.int32))
    with pytest.raises(ValueError, match="finite"):
        A.solve_batch(jnp.zeros((2, 3, 3)).at[1, 0, 2].set(jnp.nan))
    with pytest.raises(ValueError, match="empty"):
        A.solve_batch(jnp.zeros((0, 3, 3)))
    with pytest.raises(ValueError, match="levels"):
        A.solve_batch(jnp.zeros((2, 3, 3)), levels=0)
    with pytest.raises(ValueError, match="rounds"):
        A.solve_batch(jnp.zeros((2, 3, 3)), rounds=-1)


def test_overflowing_costs_end_with_a_permutation():
    # costs that overflow float32 (the training loop can meet them before its loss check fires):
    # every block still comes back as a permutation, in finite time (under jit, as the training loop
    # calls it, where the check of non-finite costs cannot run)
    c = jnp.asarray(np.random.default_rng(10).random((6, 5, 5)), jnp.float32) * 1e38
    c = c.at[0].multiply(10.0).at[1, 2, 3].set(jnp.inf).at[2, 0, 0].set(jnp.nan)
    sol = np.asarray(jax.jit(A.solve_batch)(c))
    assert all(sorted(s.tolist()) == list(range(5)) for s in sol)
