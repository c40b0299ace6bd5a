r"""A learnt DeepParticle map as an object users keep: `Generator`, its file format, pretrained maps.

A `Generator` holds a network's `ksdp.model.ModelConfig`, its weights and a metadata dict (what it
was trained on, the manifest of the run that made it, the acceptance it passed). It is a JAX pytree
whose only leaves are the weights, so it passes through ``jax.jit``, ``jax.vmap`` and ``jax.grad``
like any array container:

* ``g(x, eta)`` is the map $f_\theta(x;\eta)$ itself (pure, traceable: it composes with ``jit``,
  ``vmap`` over points or parameters, and ``grad`` with respect to ``x`` or the weights);
* ``g.sample(key, eta, n)`` draws ``n`` particles of the learnt law (a host loop over chunks, like
  `ksdp.model.generate`: call it outside ``jit``);
* ``g.module`` is the flax module that computes the map (`ksdp.model.DeepParticleMap`), for use
  inside a larger flax model with ``g.params`` as its variables;
* ``g.save(path)`` / `load_generator` keep it in a self-describing, versioned ``.npz`` file: the
  weights keyed by their path in the parameter tree, the config and metadata as JSON, no optimiser
  state (a training checkpoint, `ksdp.training.save_checkpoint`, is for resuming training only).

`pretrained` loads the maps that ship inside the package, one per experiment of the paper
(``python -m ksdp.experiments``), each with the acceptance rows it passed in its metadata.
"""

from __future__ import annotations

import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np

from ksdp import model as _model
from ksdp import storage

GENERATOR_FORMAT = "ksdp-generator/1"
# the formats this version reads; an older or newer file is refused with both named
READS = (GENERATOR_FORMAT,)
_META_LIMIT = 1 << 20  # bytes of JSON metadata a generator file may hold
PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")


class GeneratorFileError(ValueError):
    """A generator file is unreadable, truncated, of another format, or holds values no network has."""


def _flat(params) -> dict:
    """``{"params/Dense_0/kernel": array, ...}`` of a flax parameter tree."""
    return flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")


@jax.tree_util.register_pytree_node_class
class Generator:
    r"""A trained DeepParticle map $f_\theta(\cdot;\eta)$: config, weights and metadata.

    Build one with `ksdp.train` (``TrainResult.generator``), `load_generator`, `pretrained`, or
    ``Generator(config, params)`` from weights of `ksdp.model.init`'s structure.

    Attributes:
      config: the network's `ksdp.model.ModelConfig` (architecture and parameter normalisation).
      params: the weights, a flax variable dict (the pytree's leaves).
      metadata: a JSON-serialisable dict: ``"training"`` (the parameter values, J, N, Adam steps),
        ``"manifest"`` (`ksdp.provenance.manifest` of the run that trained it) and, for the
        pretrained maps, ``"experiment"`` and ``"acceptance"``.
    """

    def __init__(self, config: _model.ModelConfig, params, metadata: dict | None = None):
        if not isinstance(config, _model.ModelConfig):
            raise TypeError(f"config must be a ksdp.model.ModelConfig, got {type(config).__name__}.")
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}.")
        want = {
            k: v.shape for k, v in _flat(jax.eval_shape(lambda k: _model.init(k, config), jax.random.key(0))).items()
        }
        try:
            got = {k: np.shape(v) for k, v in _flat(params).items()}
        except (TypeError, AttributeError, ValueError) as e:
            raise TypeError(f"params must be a flax variable dict (as ksdp.model.init returns), got {params!r}.") from e
        if got != want:
            raise ValueError(
                f"params do not fit this config: expected arrays {want}, got {got}; pass the weights "
                "the config was trained with."
            )
        try:
            meta = json.dumps(metadata or {}, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise TypeError(f"metadata must be JSON-serialisable: {e}") from e
        self.config = config
        self.params = params
        self._meta = meta

    # ---- pytree: the weights are the leaves; config and metadata are static
    def tree_flatten(self):
        return (self.params,), (self.config, self._meta)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.config, obj._meta = aux
        obj.params = children[0]
        return obj

    @property
    def metadata(self) -> dict:
        """A fresh copy of the metadata dict (editing it does not change the generator)."""
        return json.loads(self._meta)

    def with_metadata(self, **entries) -> Generator:
        """A copy whose metadata has ``entries`` added (or replaced); the weights are shared."""
        return Generator(self.config, self.params, {**self.metadata, **entries})

    @property
    def module(self) -> _model.DeepParticleMap:
        """The flax module computing this map; ``g.module.apply(g.params, x, eta) == g(x, eta)``."""
        return _model.DeepParticleMap(self.config)

    @property
    def d(self) -> int:
        """Space dimension."""
        return self.config.d

    def __repr__(self) -> str:
        c = self.config
        trained = self.metadata.get("experiment") or self.metadata.get("training", {}).get("eta")
        return (
            f"Generator(d={c.d}, p={c.p}, {c.depth} x {c.width} {c.activation}, "
            f"{_model.n_parameters(self.params)} parameters, trained on {trained!r})"
        )

    def __call__(self, x, eta):
        r"""$f_\theta(x;\eta)$: ``x [..., N, d]`` (or one point ``[d]``), ``eta`` one value per cloud
        (``[..., p]``; a scalar or ``[B]`` when ``p == 1``), raw as in the experiments (the map normalises
        it). Pure: composes with ``jit``, ``vmap`` and ``grad``."""
        x = jnp.asarray(x)
        if x.shape[-1:] != (self.config.d,):
            raise ValueError(f"x must end in the space dimension d = {self.config.d}, got shape {x.shape}.")
        return _model.apply(self.config, self.params, x, _model.check_eta(self.config, eta))

    def sample(self, key, eta, n: int, *, source: str = "iid", chunk: int | None = 65536) -> np.ndarray:
        """``n`` particles of the learnt law at ``eta`` (``[n, d]``; ``[B, n, d]`` for a batch of values).

        Fresh uniform-ball sources pushed through the map, ``chunk`` at a time (any ``n``; memory
        ``O(chunk * width)`` beyond the output). A host loop returning numpy: not for use under ``jit``
        (there, call the generator on ``ksdp.initial.uniform_ball(key, n, d)`` directly). ``source``:
        ``"iid"`` or ``"stratified"`` (`ksdp.model.generate`).
        """
        return _model.generate(key, self.config, self.params, eta, n, chunk=chunk, source=source)

    # ---- files
    def save(self, path) -> None:
        """Writes the generator to ``path`` (``.npz``) atomically: the weights by their tree path, the
        config, metadata and format version as JSON. `load_generator` reads it back bit for bit."""
        arrays = {name: np.asarray(jax.device_get(a)) for name, a in _flat(self.params).items()}
        meta = {
            "format": GENERATOR_FORMAT,
            "model": self.config.to_dict(),
            "arrays": {k: [list(a.shape), a.dtype.str] for k, a in arrays.items()},
            "metadata": self.metadata,
        }
        arrays["meta_json"] = np.asarray(json.dumps(meta, sort_keys=True))
        storage.atomic_write(path, lambda f: np.savez(f, **arrays))


def check_config(cfg: _model.ModelConfig) -> _model.ModelConfig:
    """Raises ``ValueError`` unless ``cfg`` is a config `ksdp.model.make_config` could have made."""
    ints = {"d": cfg.d, "p": cfg.p, "width": cfg.width, "depth": cfg.depth, "fourier": cfg.fourier}
    for name, v in ints.items():
        low = 0 if name == "fourier" else 1
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= (24 if name == "fourier" else 1 << 16):
            raise ValueError(f"{name} = {v!r} is not an integer of plausible size")
    if cfg.activation not in _model.ACTIVATIONS:
        raise ValueError(f"activation {cfg.activation!r} is not one of {tuple(_model.ACTIVATIONS)}")
    for name in ("eta_log", "eta_center", "eta_scale"):
        v = getattr(cfg, name)
        if not isinstance(v, tuple) or len(v) != cfg.p:
            raise ValueError(f"{name} must hold one entry per parameter ({cfg.p}), got {v!r}")
    if not all(isinstance(v, bool) for v in (*cfg.eta_log, cfg.residual, cfg.tail_feature, cfg.proportional)):
        raise ValueError("eta_log, residual, tail_feature and proportional must be booleans")
    numbers = (*cfg.eta_center, *cfg.eta_scale)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in numbers):
        raise ValueError("eta_center and eta_scale must be finite numbers")
    if not all(v > 0 for v in cfg.eta_scale):
        raise ValueError("eta_scale must be positive")
    if cfg.identity_at is not None and not (isinstance(cfg.identity_at, (int, float)) and np.isfinite(cfg.identity_at)):
        raise ValueError(f"identity_at = {cfg.identity_at!r} is neither None nor a finite number")
    if cfg.proportional and (cfg.p != 1 or not cfg.residual or cfg.identity_at is not None):
        raise ValueError("proportional needs one parameter, the residual network and no identity_at")
    return cfg


def load_generator(path) -> Generator:
    """Reads a file written by `Generator.save`.

    Validates before trusting: the metadata's size first, then the format version, the config, each
    array's size against the zip header before allocating it, its shape and dtype against the config's
    network, and finite weights.

    Raises:
      GeneratorFileError: (a ``ValueError``) naming the file and what is wrong with it: unreadable or
        truncated, a training checkpoint or another file, a format this version does not read (both
        versions named), arrays missing, extra, misshapen or not finite.
    """

    def bad(what):
        return GeneratorFileError(f"{path}: {what}.")

    try:
        head = storage.read_npz(path, lambda name: _META_LIMIT if name == "meta_json" else None)
    except ValueError as e:  # names the file
        raise GeneratorFileError(str(e)) from e
    if "meta_json" not in head:
        raise bad("not a ksdp generator file (it has no metadata member 'meta_json')")
    try:
        meta = json.loads(str(head["meta_json"]))
    except (json.JSONDecodeError, ValueError) as e:
        raise bad(f"its metadata is not JSON ({e})") from e
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if isinstance(fmt, str) and fmt.startswith("ksdp-checkpoint/"):
        raise bad(
            f"this is a training checkpoint ({fmt}), not a generator; "
            "ksdp.training.generator_from_checkpoint(path) gives the generator it holds"
        )
    if isinstance(fmt, str) and fmt.startswith("ksdp-generator/") and fmt not in READS:
        raise bad(f"written in format {fmt!r}; this version of ksdp reads {', '.join(READS)}")
    if fmt not in READS:
        raise bad(f"not a ksdp generator file (format {fmt!r}, expected {GENERATOR_FORMAT!r})")
    try:
        cfg = check_config(_model.ModelConfig.from_dict(meta["model"]))
        metadata = meta.get("metadata", {})
        if not isinstance(metadata, dict):
            raise TypeError("metadata is not a dict")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise bad(f"its config or metadata is malformed ({type(e).__name__}: {e})") from e
    template = {
        k: (v.shape, np.dtype(v.dtype))
        for k, v in _flat(jax.eval_shape(lambda k: _model.init(k, cfg), jax.random.key(0))).items()
    }
    seen = []

    def limit(name):
        seen.append(name)
        if name in template:
            shape, dtype = template[name]
            return int(np.prod(shape)) * dtype.itemsize + 4096
        return None

    try:
        files = storage.read_npz(path, limit)
    except ValueError as e:
        raise GeneratorFileError(str(e)) from e
    extra = sorted(set(seen) - set(template) - {"meta_json"})
    if extra:
        raise bad(f"it holds arrays the network does not have: {extra[:3]}")
    missing = sorted(set(template) - set(files))
    if missing:
        raise bad(f"arrays {missing[:3]} are missing")
    flat = {}
    for name, (shape, dtype) in template.items():
        a = files[name]
        if a.shape != shape or a.dtype != dtype:
            raise bad(f"array {name!r} is {a.dtype}{list(a.shape)}, the network expects {dtype}{list(shape)}")
        if not np.all(np.isfinite(a)):
            raise bad(f"array {name!r} holds NaN or inf")
        flat[name] = jnp.asarray(a)
    params = flax.traverse_util.unflatten_dict(flat, sep="/")
    return Generator(cfg, params, metadata)


def pretrained(name: str | None = None):
    """The generators that ship with ksdp, trained by ``python -m ksdp.experiments``.

    ``pretrained()`` lists their names (the experiments'); ``pretrained(name)`` loads one. Each one's
    ``metadata`` holds its experiment, the scale and settings it was trained at, the acceptance rows
    it passed and the manifest of its run.
    """
    files = os.listdir(PRETRAINED_DIR) if os.path.isdir(PRETRAINED_DIR) else []
    names = sorted(f[: -len(".npz")] for f in files if f.endswith(".npz"))
    if name is None:
        return names
    if not isinstance(name, str):
        raise TypeError(f"name must be a string (one of {names}), got {name!r}.")
    if name not in names:
        raise ValueError(f"no pretrained generator named {name!r}; the package ships {names}.")
    return load_generator(os.path.join(PRETRAINED_DIR, name + ".npz"))
