import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ksdp
from ksdp import data


@pytest.fixture(scope="module")
def small_dataset():
    params = ksdp.Params(flow=jnp.array([1.0, 10.0]))
    return ksdp.make_dataset(jax.random.key(0), params, (0.0, 0.001), n_particles=40, flow="laminar2d")


def test_roundtrip(tmp_path, small_dataset):
    path = tmp_path / "ds.npz"
    ksdp.save_dataset(path, small_dataset)
    back = ksdp.load_dataset(path)
    np.testing.assert_array_equal(back.particles, small_dataset.particles)
    np.testing.assert_array_equal(back.times, small_dataset.times)
    np.testing.assert_array_equal(back.params["flow"], [1.0, 10.0])
    assert back.meta == small_dataset.meta
    assert back.particles.shape == (2, 2, 40, 2)
    for k in ("n_particles", "d", "dt", "kernel", "flow", "key", "version", "times"):
        assert k in back.meta
    assert back.meta["flow"] == "laminar2d" and back.meta["kernel"] == "blob"
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []  # nothing half-written left
    with np.load(path, allow_pickle=False) as z:  # readable without pickle
        assert "meta_json" in z


def test_load_rejects_bad_files(tmp_path, small_dataset):
    with pytest.raises(FileNotFoundError):
        ksdp.load_dataset(tmp_path / "missing.npz")
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="missing"):
        ksdp.load_dataset(tmp_path / "foreign.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        ksdp.load_dataset(tmp_path / "junk.npz")
    bad = small_dataset._replace(particles=small_dataset.particles.copy())
    bad.particles[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        ksdp.save_dataset(tmp_path / "nan.npz", bad)
    meta = dict(small_dataset.meta)
    del meta["dt"]
    with pytest.raises(ValueError, match="dt"):
        data.validate(small_dataset._replace(meta=meta))
    with pytest.raises(ValueError, match="disagree"):
        data.validate(small_dataset._replace(particles=small_dataset.particles[:, :, :10]))


@pytest.mark.parametrize(
    "label,change,match",
    [
        ("NaN parameter", lambda ds: ds._replace(params={"flow": np.array([np.nan, 1.0])}), "finite real"),
        ("complex particles", lambda ds: ds._replace(particles=ds.particles.astype(np.complex64)), "real floating"),
        ("decreasing times", lambda ds: ds._replace(times=ds.times[::-1].copy()), "times"),
    ],
)
def test_validate_rejects_inconsistent_values(small_dataset, label, change, match):
    bad = change(small_dataset)
    if label == "decreasing times":  # the metadata must agree, or the times check is never reached
        bad = bad._replace(meta={**bad.meta, "times": bad.times.tolist()})
    with pytest.raises(ValueError, match=match):
        data.validate(bad)


def test_load_checks_the_particles_size_before_reading_them(tmp_path, small_dataset):
    # a particles member far larger than the metadata promises is refused from the
    # zip header, before the member is read (a small file cannot make the loader allocate gigabytes)
    import json

    path = tmp_path / "ds.npz"
    ksdp.save_dataset(path, small_dataset)
    with np.load(path, allow_pickle=False) as z:
        arrays = dict(z.items())
    assert json.loads(str(arrays["meta_json"]))["n_particles"] == 40
    arrays["particles"] = np.zeros((2, 2, 40_000, 2), np.float32)  # 1.3 MB against 40 promised particles
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="more than the"):
        ksdp.load_dataset(path)


def test_a_sweep_in_parts_is_the_sweep_and_resumes_from_its_saved_parts(tmp_path, small_dataset, monkeypatch):
    # set p keeps its key split(key, P)[p] whatever the parts, so each part repeats exactly the
    # arithmetic of the whole batch: equal to float32 round-off (a few ulps of the O(1) positions)
    params = ksdp.Params(flow=jnp.array([1.0, 10.0]))
    kw = dict(n_particles=40, flow="laminar2d")
    lines = []
    parts = tmp_path / "parts"
    split = ksdp.make_dataset(jax.random.key(0), params, (0.0, 0.001), chunk=1, parts=parts, log=lines.append, **kw)
    np.testing.assert_allclose(split.particles, small_dataset.particles, rtol=0, atol=1e-6)
    # the same data: the same metadata but for the manifest (its time and command line differ)
    without = lambda m: {k: v for k, v in m.items() if k != "manifest"}  # noqa: E731
    assert without(split.meta) == without(small_dataset.meta) and split.meta["manifest"]["ksdp"] == ksdp.__version__
    assert sorted(os.listdir(parts)) == ["sets-0-1.npz", "sets-1-2.npz"] and len(lines) == 2

    # a rerun reuses both parts without simulating; a part made with other inputs is simulated again
    def no_sweep(*a, **k):
        raise AssertionError("a saved part was simulated again")

    with monkeypatch.context() as m:
        m.setattr(ksdp.ipm, "sweep", no_sweep)
        again = ksdp.make_dataset(jax.random.key(0), params, (0.0, 0.001), chunk=1, parts=parts, log=lines.append, **kw)
    np.testing.assert_array_equal(again.particles, split.particles)
    assert all("reused" in line for line in lines[2:])
    # a part whose particles were altered after it was saved, its input stamp intact, is simulated again
    with np.load(parts / "sets-0-1.npz") as z:
        arrays = dict(z.items())
    arrays["particles"] = arrays["particles"] + np.float32(1.0)
    np.savez(parts / "sets-0-1.npz", **arrays)
    redo = ksdp.make_dataset(jax.random.key(0), params, (0.0, 0.001), chunk=1, parts=parts, log=lines.append, **kw)
    np.testing.assert_array_equal(redo.particles, split.particles)
    assert "reused" not in lines[-2] and "reused" in lines[-1]
    (parts / "sets-1-2.npz").write_bytes(b"truncated")  # a damaged part is simulated again
    other = ksdp.make_dataset(jax.random.key(1), params, (0.0, 0.001), chunk=1, parts=parts, **kw)
    assert not np.allclose(other.particles, split.particles)  # another key: nothing reused
    with pytest.raises(ValueError, match="chunk"):
        ksdp.make_dataset(jax.random.key(0), params, (0.0,), chunk=0, **kw)


def test_sweep_takes_one_key_per_set():
    params = ksdp.Params(flow=jnp.array([1.0, 10.0]))
    keys = jax.random.split(jax.random.key(0), 2)
    kw = dict(n_particles=16, flow="laminar2d")
    whole = ksdp.sweep(jax.random.key(0), params, (0.001,), **kw).particles
    np.testing.assert_array_equal(ksdp.sweep(keys, params, (0.001,), **kw).particles, whole)
    with pytest.raises(ValueError, match="3 keys for 2 parameter sets"):
        ksdp.sweep(jax.random.split(jax.random.key(0), 3), params, (0.001,), **kw)
