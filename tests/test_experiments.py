"""Every experiment at smoke scale: outputs exist and are finite; a second run reuses the work."""

import json
import math
import os
import shutil

import jax
import numpy as np
import pytest
from damage import CHECKPOINT_DAMAGE

import ksdp
from ksdp import training as T
from ksdp.experiments import __main__ as cli
from ksdp.experiments import checks, evaluate, ipm_data, report, run
from ksdp.experiments.specs import EXPERIMENTS, FOLD_LIMIT, FOLD_POINTS, PAPER, SCALES

# the whole module runs the experiments CLI end to end at the smoke scale (minutes): the slow tier
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs"))
    assert cli.main(["--scale", "smoke", "--out", out]) == 0
    return os.path.join(out, "smoke"), out


@pytest.mark.parametrize("name", list(PAPER))
def test_outputs_exist_and_are_finite(smoke_run, name):
    folder = os.path.join(smoke_run[0], name)
    for f in ("dataset.npz", "checkpoint.npz", "metrics.json", "projections.png", "second_moment.png", "loss.png"):
        assert os.path.getsize(os.path.join(folder, f)) > 0, f
    with open(os.path.join(folder, "metrics.json")) as f:
        m = json.load(f)
    kinds = {r["kind"] for r in m["rows"]}
    assert kinds == {"train", "held-out", "extrapolated"}
    assert m["complete"] and math.isfinite(m["loss_floor"]) and m["loss_floor"] > 0
    assert m["loss_floor_se"] > 0 and m["final_loss_se"] > 0 and math.isfinite(m["loss_z"])
    for r in m["rows"]:
        for k in ("w2", "w2_se", "w2_floor", "w2_floor_se", "ratio", "m2_ipm", "m2_dp", "m2_ipm_se", "m2_dp_se"):
            assert math.isfinite(r[k]) and r[k] >= 0, (k, r)
        for k in ("energy", "floor_energy", "c2st", "floor_c2st"):
            assert len(r[k]) == 2 and all(math.isfinite(v) for v in r[k]) and r[k][1] > 0, (k, r)
        assert 0 <= r["c2st"][0] <= 1 and isinstance(r["c2st_ok"], bool)
        assert ("ks_dp" in r) == (name == "ks2d-time")  # the radial reference exists for the flow-free case
        if "ks_dp" in r:  # where the KS distance is reached: the reference CDF's level, the signed gap
            assert 0 <= r["ks_dp_level"] <= 1 and abs(r["ks_dp_signed"]) == r["ks_dp"]
            # judged on radially stratified sources; the independent draws' distance reported beside it
            assert r["ks_source"] == "stratified" and r["ks_iid_points"] >= 100_000
            assert 0 <= r["ks_dp_iid_level"] <= 1 and abs(r["ks_dp_iid_signed"]) == r["ks_dp_iid"]
            # the m2 reference runs pooled, as a yardstick of the check (smoke: Scale.reference_runs runs)
            n_more = ipm_data.reference_runs(EXPERIMENTS[name], "smoke") * SCALES["smoke"].n_particles
            assert 0 <= r["ks_ref_runs"] <= 1 and r["ks_ref_runs_points"] == n_more
            assert r["ks_points"] >= 100_000 and r["aniso_runs"] == 3 + ipm_data.reference_runs(
                EXPERIMENTS[name], "smoke"
            )
        # the C2ST yardstick over more pairs of runs (smoke: 4 m2 reference runs, 2 pairs)
        assert r["c2st_pairs"]["pairs"] == 2 and math.isfinite(r["c2st_pairs"]["excess_se"])
        assert abs(r["c2st_pairs"]["dp"] - r["c2st_pairs"]["ipm"] - r["c2st_pairs"]["excess"]) < 1e-9
        # at t = 0 of a time experiment the law is the initial one, known exactly: checked against it
        assert ("init_ks_dp" in r) == (EXPERIMENTS[name].eta == "time" and r["eta"] == 0.0)
        if "init_ks_dp" in r:
            assert r["init_ks_points"] >= 100_000 and 0 <= r["init_ks_ipm"] <= 1
            assert abs(r["init_ks_dp_signed"]) == r["init_ks_dp"] and 0 <= r["init_ks_dp_level"] <= 1
            # every generated point beyond the ball is missing from F_n(1) = 1 - beyond: KS >= beyond
            assert 0 <= r["init_beyond_dp"] <= r["init_ks_dp"] + 1e-12
            assert (r["init_r_max_dp"] > 1) == (r["init_beyond_dp"] > 0)
        assert 0 <= r["folded"][0] <= 1 and 0 < r["folded"][1] <= 0.5 / math.sqrt(FOLD_POINTS) + 1e-12
        # m2's errors come from the spread of single runs: 3 replicas, plus the training runs at training
        # values; elsewhere the replicas' spread pooled with the one interpolated from the training values
        n_ref = ipm_data.reference_runs(EXPERIMENTS[name], "smoke")
        assert r["m2_runs"] == 3 + n_ref + SCALES["smoke"].pool_runs and r["m2_ipm_runs"] == 3 + n_ref
        assert r["m2_ipm_se"] >= r["m2_ipm_particle_se"] and r["m2_train_se"] > 0
    # the network trains on the training pool (Scale.pool_runs more runs of J particles per training
    # value, their own key), not on the training replica
    runs = SCALES["smoke"].pool_runs
    assert m["settings"]["pool_runs"] == runs
    assert not any(f.endswith(".parts") for f in os.listdir(folder))  # parts removed once the whole is saved
    pool = ksdp.load_dataset(os.path.join(folder, "pool.npz"))
    train = ipm_data.particles_by_value(EXPERIMENTS[name], ksdp.load_dataset(os.path.join(folder, "dataset.npz")))[0]
    exp = EXPERIMENTS[name]
    assert pool.particles.shape[2] == SCALES["smoke"].n_particles and len(pool.meta["replicas"]) == runs
    i0 = int(np.flatnonzero(np.isclose(exp.all_values("smoke"), exp.values("smoke")[0][0]))[0])
    first = ipm_data.particles_by_value(exp, pool, replicas=runs)[0, 0]
    assert not np.allclose(first, train[i0])  # its own key: not the training replica's particles
    targets, reused = ipm_data.simulate_pool(exp, "smoke", 0, os.path.join(folder, "pool.npz"), print, runs)
    assert reused and targets.shape == (len(exp.values("smoke")[0]), runs * SCALES["smoke"].n_particles, exp.d)
    np.testing.assert_array_equal(targets[0, : SCALES["smoke"].n_particles], first)  # the runs of a value, pooled
    # the m2 check's further runs (Experiment.reference_runs): their own key, at every value; m2_ipm is the
    # second moment of the replicas and these runs pooled (equal J: the mean of the runs' m2), to round-off
    n_ref = ipm_data.reference_runs(exp, "smoke")
    assert m["settings"]["reference_runs"] == n_ref == SCALES["smoke"].reference_runs > 0
    if n_ref:
        ref, reused = ipm_data.simulate_reference(
            exp, "smoke", 0, os.path.join(folder, "reference-runs.npz"), print, n_ref
        )
        assert reused and ref.shape == (n_ref, len(exp.all_values("smoke")), SCALES["smoke"].n_particles, exp.d)
        assert not np.allclose(ref[0, i0], train[i0]) and not np.allclose(ref[0, i0], first)
        replicas = ipm_data.particles_by_value(exp, ksdp.load_dataset(os.path.join(folder, "dataset.npz")))
        for i, r in enumerate(m["rows"]):
            runs_m2 = [np.mean(np.sum(np.asarray(x, np.float64) ** 2, -1)) for x in [*replicas[:, i], *ref[:, i]]]
            assert abs(r["m2_ipm"] - np.mean(runs_m2)) <= 1e-5 * np.mean(runs_m2)  # float32 sums of ~10^3 terms


def test_report_and_resume(smoke_run):
    folder, out = smoke_run
    text = open(os.path.join(folder, "REPORT.md")).read()
    for name in PAPER:
        assert name in text
    assert text.count("2 more pairs") == sum(len(checks.load_metrics(folder, n)["rows"]) for n in PAPER)
    assert text.count("At t = 0 (the initial law") == sum(
        e.eta == "time" and 0.0 in e.values("smoke")[0] for e in map(EXPERIMENTS.get, PAPER)
    )
    # a second run finds the datasets and finished checkpoints and redoes neither
    stamp = {n: os.path.getmtime(os.path.join(folder, n, "dataset.npz")) for n in PAPER}
    ck = {n: os.path.getmtime(os.path.join(folder, n, "checkpoint.npz")) for n in PAPER}
    assert cli.main(["ks2d-time", "--scale", "smoke", "--out", out]) == 0
    assert os.path.getmtime(os.path.join(folder, "ks2d-time", "dataset.npz")) == stamp["ks2d-time"]
    assert os.path.getmtime(os.path.join(folder, "ks2d-time", "checkpoint.npz")) == ck["ks2d-time"]
    # every stage time names its device; the reused stages keep the earlier run's (the same machine here)
    m = checks.load_metrics(folder, "ks2d-time")
    assert m["timing_device"] == {k: ipm_data.device_name() for k in m["timing_s"]}
    assert report.devices(m) == ipm_data.device_name() and report.devices(m) in report.render_experiment(
        folder, "ks2d-time", "smoke"
    )


def test_generators_are_saved_and_shipped_only_when_they_pass(smoke_run, tmp_path):
    folder, _ = smoke_run
    for name in PAPER:
        g = ksdp.load_generator(os.path.join(folder, name, "generator.npz"))
        meta, m = g.metadata, checks.load_metrics(folder, name)
        assert meta["experiment"] == name and meta["settings"] == m["settings"]
        assert [r["eta"] for r in meta["acceptance"]["rows"]] == [r["eta"] for r in m["rows"]]
        assert meta["manifest"]["ksdp"] == ksdp.__version__ and m["manifest"]["ksdp"] == ksdp.__version__
        # the weights the run evaluated: its checkpoint's (EMA or last iterate, as train returns them)
        held = T.generator_from_checkpoint(os.path.join(folder, name, "checkpoint.npz"))
        assert all(
            np.array_equal(a, b) for a, b in zip(jax.tree.leaves(g.params), jax.tree.leaves(held.params), strict=True)
        )
    # shipping copies a generator that passes at every training and held-out value and the experiment's
    # own checks (the radial KS here), and no other, judged by the rows as load_metrics judges them now:
    # a generator whose metadata recorded a failure under earlier rules ships with its acceptance restamped
    src = ksdp.load_generator(os.path.join(folder, "ks2d-time", "generator.npz"))
    stale = {"train": {"all_ok": True}, "held-out": {"all_ok": False}}
    row = {"kind": "train", "eta": 0.05, "c2st_ok": True, "energy_ok": True, "m2_ok": True, "com_dp": 0.0}
    row.update(c2st_excess=0.0, c2st_checked_excess=0.0, energy_z=0.0, m2_rel_error=0.0, ratio=1.0, ks_ipm=0.01)
    for label, held_ok, ks_dp, why in (
        ("passing", True, 0.004, None),
        ("failing", False, 0.004, "held-out"),
        ("ks", True, 0.02, "radial KS"),
    ):
        os.makedirs(tmp_path / label / "ks2d-time")
        src.with_metadata(acceptance={"rows": [], "summary_by_kind": stale}).save(
            tmp_path / label / "ks2d-time" / "generator.npz"
        )
        rows = [{**row, "ks_dp": ks_dp}, {**row, "kind": "held-out", "eta": 0.06, "c2st_ok": held_ok, "ks_dp": ks_dp}]
        metrics = {"rows": rows, "settings": {"experiment": "ks2d-time"}}
        lines = []
        cli.ship(str(tmp_path / f"shipped-{label}"), str(tmp_path / label), {"ks2d-time": metrics}, lines.append)
        shipped = tmp_path / f"shipped-{label}" / "ks2d-time.npz"
        assert os.path.exists(shipped) == (why is None), lines
        assert why is None or (why in lines[-1] and "not shipped" in lines[-1]), lines
        if why is None:
            assert ksdp.load_generator(shipped).metadata["acceptance"]["summary_by_kind"]["held-out"]["all_ok"]


def test_stage_devices_are_named_per_stage_when_they_differ():
    m = {"timing_s": {"ipm_s": 1.0, "train_s": 2.0, "eval_s": 3.0}}
    assert report.devices(m) == "not recorded"  # a run from before the devices were recorded
    m["timing_device"] = {"ipm_s": "cpu, 2 cores, x86_64", "train_s": "GPU X", "eval_s": "GPU X"}
    assert report.devices(m) == "IPM: cpu, 2 cores, x86_64; training, evaluation: GPU X"
    m["timing_device"]["ipm_s"] = None
    assert report.devices(m) == "IPM: not recorded; training, evaluation: GPU X"


def test_a_pool_of_another_size_does_not_keep_the_earlier_pools_time(tmp_path):
    # the dataset is the same, so its time is kept; a pool or reference runs of another size were
    # simulated again, so the earlier run's time for them is not
    settings = ipm_data.data_settings(EXPERIMENTS["ks2d-time"], "smoke", 0)
    old = {
        "settings": {**settings, "pool_runs": 3, "reference_runs": 4},
        "timing_s": {"ipm_s": 1.0, "pool_s": 2.0, "reference_s": 3.0, "train_s": 4.0},
        "timing_device": {"ipm_s": "cpu", "pool_s": "cpu", "reference_s": "gpu", "train_s": "cpu"},
    }
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(old))
    same = ipm_data.previous_timing(str(path), settings, {"pool_runs": 3, "reference_runs": 4})
    assert same == (old["timing_s"], old["timing_device"])
    timing, devices = ipm_data.previous_timing(str(path), settings, {"pool_runs": 30, "reference_runs": 4})
    assert timing == {"ipm_s": 1.0, "reference_s": 3.0, "train_s": 4.0} and set(devices) == set(timing)
    timing, _ = ipm_data.previous_timing(str(path), settings, {"pool_runs": 3, "reference_runs": 10})
    assert timing == {"ipm_s": 1.0, "pool_s": 2.0, "train_s": 4.0}


def test_other_seed_trains_afresh_and_keeps_the_old_checkpoint(smoke_run, tmp_path):
    # rerunning in the same folder with another seed re-simulates the dataset; the checkpoint, trained
    # on the old one, is moved aside (not resumed, not lost) and the network trained afresh
    folder, _ = smoke_run
    shutil.copytree(os.path.join(folder, "ks2d-time"), tmp_path / "ks2d-time")
    old = open(tmp_path / "ks2d-time" / "checkpoint.npz", "rb").read()
    lines = []
    run.run(EXPERIMENTS["ks2d-time"], "smoke", str(tmp_path), 1, log=lines.append)
    assert open(tmp_path / "ks2d-time" / "checkpoint.stale-1.npz", "rb").read() == old
    assert any("training afresh" in line for line in lines)
    assert len(T.load_checkpoint(str(tmp_path / "ks2d-time" / "checkpoint.npz"))[3]) == SCALES["smoke"].n_steps


@pytest.mark.parametrize("label", list(CHECKPOINT_DAMAGE))
def test_damaged_checkpoint_is_moved_aside_and_retrained(smoke_run, tmp_path, label):
    # every kind of damage the checkpoint loader checks for, through the CLI's training stage
    # (`run.train_network`, what `run.run` calls): the damaged file is kept (renamed, not lost), the
    # log says why, and the network is trained afresh to a whole, valid checkpoint
    folder, _ = smoke_run
    exp = EXPERIMENTS["laminar2d-time"]
    ck = tmp_path / "checkpoint.npz"
    shutil.copy(os.path.join(folder, exp.name, "checkpoint.npz"), ck)
    damage, match = CHECKPOINT_DAMAGE[label]
    damage(str(ck))
    damaged = ck.read_bytes()
    ds = ksdp.load_dataset(os.path.join(folder, exp.name, "dataset.npz"))
    values = [float(v) for v in exp.all_values("smoke")]  # the dataset's order
    train_idx = [values.index(float(v)) for v in exp.values("smoke")[0]]
    targets = ipm_data.particles_by_value(exp, ds)[0, train_idx]
    lines = []
    res, complete, _ = run.train_network(exp, "smoke", 0, targets, str(ck), log=lines.append)
    assert (tmp_path / "checkpoint.stale-1.npz").read_bytes() == damaged
    assert any(match in line and "Moved it to" in line and "training afresh" in line for line in lines), lines
    assert not complete and len(res.history) == SCALES["smoke"].n_steps
    assert int(T.load_checkpoint(str(ck))[0].step) == SCALES["smoke"].n_steps


def test_rows_are_on_disk_before_a_late_failure(smoke_run, monkeypatch):
    # a failure after the evaluation (here: in the figures) keeps every computed row in metrics.json
    folder, out = smoke_run
    path = os.path.join(folder, "laminar2d-time", "metrics.json")
    os.remove(path)

    def broken(*args, **kwargs):
        raise RuntimeError("figures failed")

    monkeypatch.setattr(run, "make_figures", broken)
    with pytest.raises(RuntimeError, match="figures failed"):
        run.run(EXPERIMENTS["laminar2d-time"], "smoke", folder, 0, log=lambda *_: None)
    with open(path) as f:
        m = json.load(f)
    train, held, extra = EXPERIMENTS["laminar2d-time"].values("smoke")
    assert not m["complete"] and len(m["rows"]) == len(train) + len(held) + len(extra)


def test_report_only_computes_nothing(smoke_run):
    folder, out = smoke_run
    stamp = os.path.getmtime(os.path.join(folder, "ks2d-time", "metrics.json"))
    os.remove(os.path.join(folder, "REPORT.md"))
    assert cli.main(["ks2d-time", "--scale", "smoke", "--out", out, "--report-only"]) == 0
    assert "assembled from each run's metrics.json" in open(os.path.join(folder, "REPORT.md")).read()
    assert os.path.getmtime(os.path.join(folder, "ks2d-time", "metrics.json")) == stamp


def test_cli_rejects_unknown_experiment():
    with pytest.raises(SystemExit):
        cli.main(["no-such-experiment", "--scale", "smoke"])


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--seed", str(2**70)], "--seed must be an integer"),
        (["--seed", "-1"], "--seed must be an integer"),
        (["--out", "FILE"], "not a writable folder"),
        (["no-such-experiment"], "unknown experiment"),
        # smoke: N = 64 from a pool of 3 runs: 3 x 42 < 128 <= 3 x 43
        (["--particles", "42"], "--particles must be at least 43"),
        (["--drift", "fast"], "invalid choice: 'fast'"),
    ],
)
def test_cli_checks_arguments_before_any_work(tmp_path, capsys, argv, match):
    (tmp_path / "a-file").write_text("x")
    argv = [str(tmp_path / "a-file") if a == "FILE" else a for a in argv]
    with pytest.raises(SystemExit) as info:
        cli.main(["--scale", "smoke", *argv] + ([] if "--out" in argv else ["--out", str(tmp_path)]))
    assert info.value.code == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "smoke" / "ks2d-time").exists()  # nothing computed


def test_loss_floor_has_a_standard_error_that_covers_another_draw():
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(3, 400, 2)).astype(np.float32)
    a = evaluate.loss_floor(jax.random.key(0), targets, 100, repeats=6)
    b = evaluate.loss_floor(jax.random.key(1), targets, 100, repeats=6)
    assert 0 < a.se < a.value and 0 < b.se < b.value
    # two independent estimates of the same mean: their difference in combined SEs is about N(0, 1)
    # (the SE itself from 18 pairs; 4 SEs allow for its error, a false failure about 1e-4)
    assert abs(a.value - b.value) <= 4 * math.hypot(a.se, b.se)
    with pytest.raises(ValueError, match="repeats"):
        evaluate.loss_floor(jax.random.key(0), targets, 100, repeats=1)
    assert math.isnan(evaluate.loss_floor(jax.random.key(0), targets, 300).value)  # no two disjoint samples


def test_memorisation_z():
    from ksdp.metrics import Estimate

    assert evaluate.memorisation_z(Estimate(0.9, 0.03), Estimate(1.0, 0.04)) == pytest.approx(-2.0)


def test_same_data_rule():
    base = ipm_data.data_settings(EXPERIMENTS["ks2d-time"], "smoke", 0, drift="direct")
    pm = {**base, "drift": "pm", "grid": 512}
    old = {k: v for k, v in base.items() if k not in ("drift", "grid")}  # a dataset from before the mesh
    assert ipm_data.same_data(base, base) and ipm_data.same_data(old, base)
    assert ipm_data.same_data(base, pm) and ipm_data.same_data(old, pm)  # the exact sum serves its approximation
    assert not ipm_data.same_data(pm, base)  # never the other way round
    assert not ipm_data.same_data({**base, "n_particles": 999}, base)
    assert not ipm_data.same_data(None, base)


def test_particles_option_and_a_direct_dataset_reused_for_the_mesh(tmp_path):
    # --particles J replaces the scale's J; a dataset simulated with the direct sum is reused when
    # the particle mesh is asked for (it is the sum the mesh approximates), and the log says which
    exp = EXPERIMENTS["laminar2d-time"]
    path = str(tmp_path / "dataset.npz")
    lines = []
    ds = ipm_data.simulate_dataset(exp, "smoke", 0, path, lines.append, n_particles=200, drift="direct")
    assert ds.particles.shape[2] == 200 and ds.meta["settings"]["drift"] == "direct"
    # simulated one replica at a time, each part saved as it finished, the parts gone with the dataset
    assert sum("dataset part" in line and "saved to" in line for line in lines) == len(ipm_data.REPLICAS)
    assert not os.path.exists(path + ".parts")
    again = ipm_data.simulate_dataset(exp, "smoke", 0, path, lines.append, n_particles=200, drift="pm")
    assert again.meta.get("reused") and "drift: direct" in lines[-1]
    # the loss floor draws two disjoint N-samples (N = 64) from each training set, here a pool of 3 runs:
    # 3 x 21 = 63 particles are too few, the message names the least J that will do (3 x 43 >= 128)
    with pytest.raises(ValueError, match="too small for laminar2d-time at the smoke scale.*at least 43"):
        run.run(exp, "smoke", str(tmp_path), 0, n_particles=21)


def _rewrite_npz(path, change):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _set_nan(a):
    a["particles"] = a["particles"].copy()
    a["particles"][0, 0, 0, 0] = np.nan


DATASET_DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:200]),
    "not a zip": lambda p: p.write_text("not a dataset"),
    "non-finite particle": lambda p: _rewrite_npz(p, _set_nan),
    "times not increasing": lambda p: _rewrite_npz(p, lambda a: a.__setitem__("times", a["times"][::-1].copy())),
    "metadata not JSON": lambda p: _rewrite_npz(p, lambda a: a.__setitem__("meta_json", np.asarray("{"))),
}


@pytest.mark.parametrize("damage", list(DATASET_DAMAGE))
def test_damaged_dataset_is_moved_aside_and_simulated_again(smoke_run, tmp_path, damage):
    # every kind of damage the loader checks for: the CLI keeps the damaged file (renamed, not lost),
    # says so, and simulates the dataset again
    folder, _ = smoke_run
    exp = EXPERIMENTS["laminar2d-time"]
    path = tmp_path / "dataset.npz"
    shutil.copy(os.path.join(folder, exp.name, "dataset.npz"), path)
    DATASET_DAMAGE[damage](path)
    damaged = path.read_bytes()
    lines = []
    ds = ipm_data.simulate_dataset(exp, "smoke", 0, str(path), lines.append)
    assert (tmp_path / "dataset.stale-1.npz").read_bytes() == damaged
    assert any("unreadable" in line and "dataset.stale-1.npz" in line and "simulating again" in line for line in lines)
    assert not ds.meta.get("reused") and np.all(np.isfinite(ds.particles))
    ksdp.load_dataset(str(path))  # a whole, valid dataset again


def test_report_command_names_the_options_that_differ():
    # the command printed in REPORT.md and the pages reruns what was run: --particles, --drift
    # (when not what "auto" picks for that J), --seed and --out appear only when not the defaults
    cmd = report.command("ksdp-runs/quick", ["ks2d-time"], "quick", {"settings": {"n_particles": 2000}})
    assert cmd == "python -m ksdp.experiments ks2d-time --scale quick"
    m = {"settings": {"n_particles": 100_000, "drift": "pm", "seed": 3}}  # auto takes PM at this J in 2D
    cmd = report.command("ksdp-runs/quick", ["ks2d-time"], "quick", m)
    assert cmd == "python -m ksdp.experiments ks2d-time --scale quick --particles 100000 --seed 3"
    m = {"settings": {"n_particles": 2000, "drift": "pm", "seed": 0}}
    cmd = report.command("elsewhere/quick", ["ks2d-time"], "quick", m)
    assert cmd == "python -m ksdp.experiments ks2d-time --scale quick --drift pm --out elsewhere"


def _row(**fields) -> dict:
    """The numbers `checks.judge` reads, for one parameter value: a generator at its floor, unless ``fields``."""
    return {
        "c2st": [0.5, 0.01],
        "floor_c2st": [0.5, 0.01],
        "energy": [0.0, 1e-4],
        "floor_energy": [0.0, 1e-4],
        "m2_ipm": 1.0,
        "m2_ipm_se": 0.01,
        "m2_dp": 1.0,
        "m2_dp_se": 0.01,
        **fields,
    }


def test_a_folded_map_fails_acceptance():
    # the fold check joins C2ST, energy and m2 where the row measured it; rows evaluated before it pass
    # or fail on the other three alone
    good = {"c2st_ok": True, "energy_ok": True, "m2_ok": True}
    assert checks.passes(good)
    assert checks.passes({**good, "folded": [FOLD_LIMIT, 0.0007]})
    assert not checks.passes({**good, "folded": [FOLD_LIMIT + 0.001, 0.0007]})
    row = _row()
    assert "folded_ok" not in checks.judge(row, "quick", 1)
    assert checks.judge({**row, "folded": [0.2, 0.003]}, "quick", 1)["folded_ok"] is False


def test_the_structure_limit_grows_with_the_values_a_run_judges():
    # z = 4.0 over 6 pairs: above the limit of a run judging 5 values (3.36), within that of a run
    # judging 14 (4.38); either way a perfect generator fails the run with probability at most 0.05
    row = _row(
        kind="train",
        eta=1.0,
        structure={"dp": 1.03, "ipm": 0.99, "excess": 0.04, "excess_se": 0.01, "z": 4.0, "pairs": 6},
    )
    assert checks.judge(row, "quick", 5)["structure_ok"] is False
    assert checks.judge(row, "quick", 14)["structure_ok"] is True
    assert checks.judged_values([row, {**row, "kind": "extrapolated"}, {**row, "kind": "held-out"}]) == 2
    text = report.acceptance({"rows": [{**row, **checks.judge(row, "quick", 5)}]})
    assert "z = 4.0 over 6 pairs > 3.36" in text[0]


def test_the_c2st_check_averages_over_every_pair():
    # with k more pairs of IPM runs the check is the mean excess over all 1 + k pairs: a one-pair
    # excess of +0.044 beside 5 pairs at -0.006 averages to +0.0023 (exact: (0.044 - 5 * 0.006) / 6);
    # its SE is one pair's spread (0.008 * sqrt(5), from the pairs) over sqrt(6)
    row = _row(c2st=[0.520, 0.008], floor_c2st=[0.476, 0.008])
    alone = checks.judge(row, "quick", 1)
    assert alone["c2st_checked_pairs"] == 1 and alone["c2st_checked_se"] is None
    assert alone["c2st_ok"] is False and alone["c2st_checked_excess"] == pytest.approx(0.044)
    pairs = {"excess": -0.006, "excess_se": 0.008, "dp": 0.5, "ipm": 0.506, "pairs": 5}
    both = checks.judge({**row, "c2st_pairs": pairs}, "quick", 1)
    assert both["c2st_excess"] == pytest.approx(0.044)  # the table's one-pair number is kept
    assert both["c2st_checked_excess"] == pytest.approx((0.044 - 5 * 0.006) / 6)
    assert both["c2st_checked_se"] == pytest.approx(0.008 * math.sqrt(5) / math.sqrt(6))
    assert both["c2st_ok"] is True and both["c2st_checked_pairs"] == 6
    # a generator the pairs see too fails: +0.044 and +0.04 on 5 more pairs
    bad_row = {**row, "kind": "held-out", "eta": 0.095, "c2st_pairs": {**pairs, "excess": 0.04}}
    worse = checks.judge(bad_row, "quick", 1)
    assert worse["c2st_ok"] is False
    text = report.acceptance({"rows": [{**bad_row, **worse}]})
    assert "excess over 6 pairs +0.041" in text[0]


def test_load_metrics_judges_again_by_the_current_rules(tmp_path):
    # a run's stored verdicts are recomputed from its stored numbers when the report is rebuilt
    folder = tmp_path / "quick" / "ks2d-time"
    folder.mkdir(parents=True)
    row = _row(kind="train", eta=0.1, c2st=[0.52, 0.008], floor_c2st=[0.50, 0.008], energy_ok=True, m2_ok=True)
    row["c2st_ok"] = False  # a verdict written by older rules
    (folder / "metrics.json").write_text(json.dumps({"settings": {"scale": "quick"}, "rows": [row]}))
    m = checks.load_metrics(str(tmp_path / "quick"), "ks2d-time")
    assert m["rows"][0]["c2st_ok"] is True and m["rows"][0]["c2st_checked_pairs"] == 1


def test_an_overshooting_initial_law_fails_acceptance():
    # t = 0 of a time experiment: the generated radial law no farther from the exact initial law than
    # the IPM's initial particles are (sampling alone); a generator whose edge spills out of the ball fails
    row = {
        "kind": "train",
        "eta": 0.0,
        "c2st_ok": True,
        "energy_ok": True,
        "m2_ok": True,
        "init_ks_points": 100_000,
        "init_ks_dp": 0.058,
        "init_ks_dp_signed": -0.058,
        "init_ks_dp_level": 1.0,
        "init_ks_ipm": 0.0075,
        "init_beyond_dp": 0.058,
        "init_r_max_dp": 1.15,
    }
    bad = report.acceptance({"rows": [row]})
    assert len(bad) == 1 and "initial law 0.0580 > the IPM's 0.0075" in bad[0] and "5.80%" in bad[0]
    assert report.acceptance({"rows": [{**row, "init_ks_dp": 0.003}]}) == []
    assert "the largest radius 1.150" in " ".join(report.initial_law([row]))
