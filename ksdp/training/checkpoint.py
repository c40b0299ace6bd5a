"""Checkpoints of a training run: what it depends on (`fingerprint`), atomic saves, validated loads."""

from __future__ import annotations

import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np

from ksdp import model as _model
from ksdp import parallel as _parallel
from ksdp import provenance, storage
from ksdp._checks import is_permutation
from ksdp.generator import Generator
from ksdp.generator import check_config as check_model_config
from ksdp.training.config import TrainConfig, TrainState, check_config, check_inputs, init_state

CHECKPOINT_FORMAT = "ksdp-checkpoint/3"  # /2: the state carries the moving average; /3: configs without shims


class CheckpointMismatch(ValueError):
    """A checkpoint was written for other training data, key, configs or loss than those given."""


def fingerprint(key, targets, eta, model_cfg: _model.ModelConfig, cfg: TrainConfig) -> str:
    """SHA-256 of what a training run depends on: targets, eta, key and both configs.

    Stored in every checkpoint; `train` resumes only from a checkpoint with the same fingerprint.
    """
    return _fingerprint(key, *check_inputs(model_cfg, cfg, targets, eta), model_cfg, cfg)


def _fingerprint(key, targets, eta, model_cfg, cfg) -> str:
    """`fingerprint` of inputs `check_inputs` has already validated."""
    h = hashlib.sha256()
    if jax.dtypes.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    for a in (targets, eta, key):
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    h.update(json.dumps([model_cfg.to_dict(), cfg._asdict()], sort_keys=True).encode())
    return h.hexdigest()


def save_checkpoint(path, state: TrainState, model_cfg, cfg: TrainConfig, history, extra: dict | None = None):
    """Writes the state, configs, normalisation and loss history to one ``.npz`` atomically.

    Sharded arrays are gathered first, across processes too (`ksdp.parallel.gather`), so
    every process must call this; only process 0 writes (with several hosts, ``path`` belongs on a
    disk they share, so that each can resume from it).
    """
    host = _parallel.gather(state._replace(key=jax.random.key_data(state.key)))
    arrays = {f"leaf_{i:04d}": leaf for i, leaf in enumerate(jax.tree_util.tree_leaves(host))}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model": model_cfg.to_dict(),
        "train": cfg._asdict(),
        "step": int(host.step),
        "n_sets": int(state.perm.shape[0]),
        "extra": extra or {},
    }
    arrays["meta_json"] = np.asarray(json.dumps(meta))
    arrays["history"] = np.asarray(history, np.float32)
    if jax.process_index() == 0:
        storage.atomic_write(path, lambda f: np.savez(f, **arrays))


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, truncated, or holds values no training run writes."""


MAX_STEPS = 10**9  # a plausible bound on the Adam steps a checkpoint holds


def load_checkpoint(path):
    """Reads a checkpoint: ``(state, model_cfg, train_cfg, history, extra)``.

    Validates before trusting: each member's size against the zip header (so a small file cannot
    make the loader allocate gigabytes), shapes and dtypes against the model, finite parameters and
    optimiser state, a permutation per set and a plausible step matching the loss history.

    Raises:
      CheckpointError: (a `ValueError`) naming the file and what is wrong with it.
    """

    def bad(what):
        return CheckpointError(f"{path}: {what}; delete it (or move it aside) and train afresh.")

    def unreadable(e):
        return CheckpointError(f"{e} Delete it (or move it aside) and train afresh.")

    try:
        meta_only = storage.read_npz(path, lambda name: 1 << 20 if name == "meta_json" else None)
        meta = json.loads(str(meta_only["meta_json"]))
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if isinstance(fmt, str) and fmt.startswith("ksdp-checkpoint/") and fmt != CHECKPOINT_FORMAT:
            raise bad(f"written in format {fmt!r}; this version of ksdp reads {CHECKPOINT_FORMAT!r}")
        if fmt != CHECKPOINT_FORMAT:
            raise bad(f"not a ksdp checkpoint (format {fmt!r})")
        try:
            model_cfg = check_model_config(_model.ModelConfig.from_dict(meta["model"]))
            cfg = check_config(TrainConfig(**meta["train"]))
        except ValueError as e:  # a value no training run writes
            raise bad(f"its configs hold a value no training run writes ({e})") from e
        step, n_sets = meta["step"], meta["n_sets"]
        if not (isinstance(step, int) and 0 <= step <= MAX_STEPS and step % cfg.resample_every == 0):
            raise bad(f"its step {step!r} is not a whole number of mini-batches of {cfg.resample_every} in [0, 1e9]")
        if not (isinstance(n_sets, int) and 1 <= n_sets <= 10**7):
            raise bad(f"its number of parameter sets {n_sets!r} is implausible")
        template = init_state(jax.random.key(0), model_cfg, cfg, n_sets)
    except CheckpointError:
        raise
    except ValueError as e:  # from storage.read_npz, naming the file
        raise unreadable(e) from e
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        raise bad(f"its metadata is incomplete or malformed ({type(e).__name__}: {e})") from e
    template = template._replace(key=jax.random.key_data(template.key))
    leaves, tree = jax.tree_util.tree_flatten(template)
    sizes = {f"leaf_{i:04d}": np.asarray(leaf).nbytes + 4096 for i, leaf in enumerate(leaves)}
    sizes["history"] = 4 * step + 4096
    try:
        files = storage.read_npz(path, lambda name: sizes.get(name))
    except ValueError as e:
        raise unreadable(e) from e
    missing = sorted(set(sizes) - set(files))
    if missing:
        raise bad(f"arrays {missing[:3]} are missing")
    stored = []
    for i, leaf in enumerate(leaves):
        a, want = files[f"leaf_{i:04d}"], np.asarray(leaf)
        if a.shape != want.shape:
            raise bad(f"a stored array has shape {a.shape}, the model expects {want.shape}")
        if a.dtype != want.dtype:
            raise bad(f"a stored array has dtype {a.dtype}, the model expects {want.dtype}")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise bad("its parameters or optimiser state contain NaN or inf")
        stored.append(a)
    state = jax.tree_util.tree_unflatten(tree, [jnp.asarray(a) for a in stored])
    if int(state.step) != step:
        raise bad(f"its state holds step {int(state.step)} but its metadata step {step}")
    if not is_permutation(state.perm):
        raise bad("its matchings are not permutations")
    history = files["history"]
    if history.dtype != np.float32 or history.shape != (step,) or not np.all(np.isfinite(history)):
        raise bad(f"its loss history ({history.dtype}, shape {history.shape}) is not {step} finite float32 losses")
    state = state._replace(key=jax.random.wrap_key_data(state.key))
    return state, model_cfg, cfg, history.tolist(), meta.get("extra", {})


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


def training_metadata(targets, eta, cfg: TrainConfig, steps: int) -> dict:
    """A generator's ``"training"`` and ``"manifest"`` metadata: what it was trained on and where."""
    eta = np.asarray(eta, np.float64)
    return {
        "training": {
            "eta": eta.tolist(),
            "particles": int(np.shape(targets)[1]),
            "samples": int(cfg.n_samples),
            "steps": int(steps),
            "config": cfg._asdict(),
        },
        "manifest": provenance.manifest(),
    }


def generator_from_checkpoint(path) -> Generator:
    """The learnt map a training checkpoint holds, as `train` would have returned it: the moving
    average of the weights when the run used one (``TrainConfig.ema_decay > 0``), else the last
    iterate. Its metadata names the checkpoint's step and settings (not its training data, which a
    checkpoint does not keep)."""
    state, model_cfg, cfg, history, extra = load_checkpoint(path)
    weights = state.ema if cfg.ema_decay else state.params
    meta = {
        "training": {"steps": len(history), "sets": int(state.perm.shape[0]), "config": cfg._asdict()},
        "checkpoint": {"fingerprint": extra.get("fingerprint")},
        "manifest": provenance.manifest(),
    }
    return Generator(model_cfg, weights, meta)
