"""Every experiment's grids make sense at every scale, checked without running anything."""

import numpy as np
import pytest
import scipy.optimize

import ksdp
from ksdp import model as M
from ksdp import training as T
from ksdp.experiments import ipm_data, run
from ksdp.experiments.specs import EXPERIMENTS, PAPER, SCALES

CASES = [(e, s) for e in EXPERIMENTS for s in SCALES]


@pytest.mark.parametrize("name,scale", CASES)
def test_grids(name, scale):
    exp = EXPERIMENTS[name]
    train, held, extra = exp.values(scale)
    assert len(train) >= 2 and len(held) >= 1 and len(extra) >= 1
    assert np.all(np.diff(train) > 0), "training values must increase"
    ts = np.sort(train)
    for v in held:
        # strictly between two neighbouring training values (so it is interpolation, and not a training value)
        k = np.searchsorted(ts, v)
        assert 0 < k < len(ts) and ts[k - 1] < v < ts[k] and not np.isclose(v, ts).any(), (v, ts)
    for v in extra:
        assert v < ts[0] or v > ts[-1], (v, ts)
    if exp.eta == "time":
        # snapshot times on the dt grid
        everything = np.concatenate([train, held, extra])
        assert np.allclose(np.rint(everything / ipm_data.DT) * ipm_data.DT, everything, atol=1e-9)
        assert np.all(everything >= 0)
    else:
        assert np.all(np.concatenate([train, held, extra]) > 0)  # log10 A


@pytest.mark.parametrize("name,scale", CASES)
def test_every_kind_is_present_in_the_values(name, scale):
    # the evaluation walks Experiment.all_values; each kind must survive the de-duplication
    exp = EXPERIMENTS[name]
    train, held, extra = exp.values(scale)
    values = exp.all_values(scale)
    assert len(values) == len(train) + len(held) + len(extra)


@pytest.mark.parametrize("name,scale", CASES)
def test_training_pool(name, scale):
    # an experiment's own pool size overrides its scale's, for scales that exist; 1 run is no pool
    exp = EXPERIMENTS[name]
    assert set(exp.pool_runs) <= set(SCALES)
    runs = exp.pool_runs.get(scale, SCALES[scale].pool_runs)
    assert isinstance(runs, int) and runs >= 1
    assert ipm_data.pool_runs(exp, scale) == (runs if runs > 1 else None)
    # ks2d-time's radial KS check at the paper scale needs more training particles than the 3 x 10^4
    # pooled replicas it is compared with (specs.py)
    if (name, scale) == ("ks2d-time", "paper"):
        assert runs * SCALES[scale].n_particles > 3 * SCALES[scale].n_particles


@pytest.mark.parametrize("name,scale", CASES)
def test_tail_coordinate(name, scale):
    # the network sees the tail coordinate where the experiment asks for it, and only there; laminar2d-time
    # uses it with the identity at t = 0 (its disc there is the source itself, which the coordinate alone
    # overshot), so the map stays the identity there whatever the coordinate does
    mc, _ = run.configs(EXPERIMENTS[name], scale)
    assert mc.tail_feature == EXPERIMENTS[name].tail_feature
    if name in ("ks2d-time", "laminar2d-time", "laminar2d-amplitude", "laminar3d-amplitude"):
        assert mc.tail_feature
    if name == "laminar2d-time":
        assert mc.identity_at == 0.0


@pytest.mark.parametrize("name,scale", CASES)
def test_proportional_head(name, scale):
    # the laminar flows displace the particles linearly in their amplitude: those maps have the head scaled
    # by A / A_max, which follows the displacement past the training range; the others are the plain network
    mc, _ = run.configs(EXPERIMENTS[name], scale)
    assert mc.proportional == (name in ("laminar2d-amplitude", "laminar3d-amplitude"))
    if mc.proportional:
        assert M.eta_max(mc) == pytest.approx(max(EXPERIMENTS[name].values(scale)[0]), rel=1e-5)


@pytest.mark.parametrize("name,scale", CASES)
def test_radial_term(name, scale):
    # the radial term where the experiment asks for it, and only there: ks2d-time's (and ks2d-eps's) law has
    # the diffusive tail the sources' matching cuts (every scale); kolmogorov3d-amplitude at the quick scale
    # (N = 2000 there too), where the network trained without it came out 2.5-4.8% narrower than its
    # training pool at A = 1
    exp = EXPERIMENTS[name]
    if isinstance(exp.radial_weight, dict):
        assert set(exp.radial_weight) <= set(SCALES)
    _, tc = run.configs(exp, scale)
    assert tc.radial_weight == exp.radial_weight_at(scale)
    radial_laws = ("ks2d-time", "ks2d-eps")  # no flow: the diffusive tail of a radial law
    assert (tc.radial_weight > 0) == (name in radial_laws or (name, scale) == ("kolmogorov3d-amplitude", "quick"))
    # the term ranks 2N generated points per set in int32 (training.radial_objective): within its limit
    assert not tc.radial_weight or 2 * tc.n_samples <= T.RADIAL_MAX_POINTS


@pytest.mark.parametrize("name,scale", CASES)
def test_mini_batch_size(name, scale):
    # an experiment's own N overrides its scale's, for scales that exist; the training set (the pool's runs
    # together, else the training replica) holds the two disjoint N-samples of the loss floor
    exp = EXPERIMENTS[name]
    assert set(exp.n_samples) <= set(SCALES)
    sc = ipm_data.scale_of(exp, scale)
    _, tc = run.configs(exp, scale)
    assert tc.n_samples == sc.train.n_samples == exp.n_samples.get(scale, SCALES[scale].train.n_samples)
    assert (ipm_data.pool_runs(exp, scale) or 1) * sc.n_particles >= 2 * sc.train.n_samples
    # its own Adam steps likewise (the run length the recipe's decay and moving average follow)
    assert set(exp.n_steps) <= set(SCALES)
    assert sc.n_steps == exp.n_steps.get(scale, SCALES[scale].n_steps)
    # the rest of the scale as it is, and the recipe is the scale's with the experiment's changes only
    assert sc.train._replace(n_samples=0) == SCALES[scale].train._replace(n_samples=0)
    assert {k: v for k, v in vars(sc).items() if k not in ("train", "n_steps")} == {
        k: v for k, v in vars(SCALES[scale]).items() if k not in ("train", "n_steps")
    }
    assert tc == sc.train.for_steps(sc.n_steps)._replace(radial_weight=exp.radial_weight_at(scale))


@pytest.mark.parametrize("name,scale", CASES)
def test_identity_at_the_initial_law(name, scale):
    # laminar2d-time trains at t = 0, where the law is the source itself: its map is the identity there
    # by construction, linear in t, at every scale; the other experiments' maps are free
    mc, _ = run.configs(EXPERIMENTS[name], scale)
    if name == "laminar2d-time":
        assert mc.identity_at == 0.0 == min(EXPERIMENTS[name].values(scale)[0])
    else:
        assert mc.identity_at is None


@pytest.mark.parametrize("name,scale", CASES)
def test_reference_runs(name, scale):
    # the m2 check's further runs: an experiment's own count overrides its scale's, for scales that exist
    exp = EXPERIMENTS[name]
    assert set(exp.reference_runs) <= set(SCALES)
    n = exp.reference_runs.get(scale, SCALES[scale].reference_runs)
    assert isinstance(n, int) and n >= 0 and ipm_data.reference_runs(exp, scale) == n


def test_importing_the_experiments_leaves_the_plotting_backend_alone():
    # a notebook's backend must survive `import ksdp.experiments.run` (its figures need no pyplot)
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); import ksdp.plot, ksdp.experiments.run; "
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()"
    )
    run_ = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run_.returncode == 0, run_.stderr[-2000:]


def test_the_default_run_is_the_papers_five():
    # python -m ksdp.experiments runs the paper's experiments; ks2d-eps (SPEC section 5) runs by name
    assert set(EXPERIMENTS) - set(PAPER) == {"ks2d-eps"} and len(PAPER) == 5


@pytest.mark.parametrize("scale", list(SCALES))
def test_eps_experiment_is_posed_before_its_blowup_and_on_its_field_grid(scale):
    exp = EXPERIMENTS["ks2d-eps"]
    train, held, extra = exp.values(scale)
    values = np.concatenate([train, held, extra])
    assert exp.log_eta and exp.flow == "none" and np.all(values > 0)
    # the smallest eps blows up first (SPEC section 5: 0.097 at eps = 0.01); its time is well before
    assert exp.fixed < 0.75 * 0.097 and min(values) >= 0.01
    # every value's field grid holds the chemical's reach in cells the checked run accepts
    cells = [ksdp.chemical.cell_ratio(1.0, float(e), 1.0, ipm_data.DELTA, exp.fixed, 512, 2) for e in values]
    assert max(cells) <= ksdp.chemical.SPACING_LIMIT


@pytest.mark.parametrize("name,scale", CASES)
def test_fourier_features_and_sets_between_values(name, scale):
    # kolmogorov3d-amplitude's network sees Fourier features of x and trains between its values too (its
    # cross, which the grid alone blurred at the held-out 25.1), at the scales it names; no other does
    exp = EXPERIMENTS[name]
    mc, _ = run.configs(exp, scale)
    k3d = name == "kolmogorov3d-amplitude"
    assert mc.fourier == exp.fourier_at(scale) == (4 if k3d else 0)
    assert set(exp.between) <= set(SCALES)
    assert bool(exp.between.get(scale)) == (k3d and scale in ("smoke", "quick"))
    for s in exp.between.get(scale, ()):
        assert 0 < s < 1
    if exp.between.get(scale):
        assert ipm_data.pool_runs(exp, scale), "sets between values are made from the training pool"


def test_displacement_sets_move_each_run_to_its_optimal_partner():
    # two values, two runs of 12 points each: s = 0 is the lower pool itself, s = 1 its partners (each
    # upper run reordered by its optimal matching: the same points), and s = 1/2 halfway, at the
    # log-midpoint of the values
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(2, 2, 12, 3)).astype(np.float32)
    pool[1] *= 3.0
    sets, where = run.displacement_sets(pool, np.array([1.0, 100.0]), (0.0, 0.5, 1.0), log=True)
    assert sets.shape == (3, 24, 3) and sets.dtype == np.float32
    np.testing.assert_allclose(where, [1.0, 10.0, 100.0], rtol=1e-12)
    np.testing.assert_array_equal(sets[0], pool[0].reshape(-1, 3))
    for k in range(2):  # each run's partners are a permutation of the upper run's points
        got = sets[2][12 * k : 12 * (k + 1)]
        np.testing.assert_array_equal(np.sort(got, axis=0), np.sort(pool[1, k], axis=0))
        # and an optimal one: no cheaper matching of the run (12 points: SciPy's exact assignment)
        cost = ((pool[0, k][:, None] - pool[1, k][None]) ** 2).sum(-1)
        rows, cols = scipy.optimize.linear_sum_assignment(cost)
        best = cost[rows, cols].sum()
        ours = ((pool[0, k] - got) ** 2).sum()
        # float32 points, float64 costs: the two sums of 12 terms agree to float32 round-off of each term
        assert ours <= best * (1 + 12 * 2.0**-23)
    np.testing.assert_allclose(sets[1], 0.5 * (sets[0] + sets[2]), rtol=0, atol=4 * 2.0**-23 * np.abs(pool).max())
    _, lin = run.displacement_sets(pool, np.array([0.0, 0.1]), (0.25,), log=False)
    np.testing.assert_allclose(lin, [0.025])


def test_training_sets_add_the_sets_between_values_after_the_pool():
    exp = EXPERIMENTS["kolmogorov3d-amplitude"]
    train = exp.values("smoke")[0]
    runs, j = 2, 8
    targets = np.random.default_rng(1).normal(size=(len(train), runs * j, 3)).astype(np.float32)
    sets, eta = run.training_sets(exp, "smoke", targets, runs)
    n_extra = (len(train) - 1) * len(exp.between["smoke"])
    assert sets.shape == (len(train) + n_extra, runs * j, 3)
    np.testing.assert_array_equal(sets[: len(train)], targets)
    np.testing.assert_array_equal(eta[: len(train)], train)
    assert np.all((eta[len(train) :] > train[0]) & (eta[len(train) :] < train[-1]))
    same, eta2 = run.training_sets(EXPERIMENTS["ks2d-time"], "smoke", targets, runs)  # no sets between
    assert same is targets and np.array_equal(eta2, EXPERIMENTS["ks2d-time"].values("smoke")[0])
    with pytest.raises(ValueError, match="no training pool"):
        run.training_sets(exp, "smoke", targets, None)
