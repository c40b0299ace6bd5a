r"""The DeepParticle network $f_\theta(x;\eta)$ (paper Sec. 3.2) and generation.

Input ``(x, eta)`` concatenated ("padding"), ``depth`` hidden layers of ``width`` units with
``activation``, a linear output in $\mathbb{R}^d$. The paper's defaults (5 x 30, tanh) give
3902 parameters for ``d = 2, p = 1`` (the paper quotes 4966, which does not follow from its widths).

Deviation from the paper (``residual=True``, the default): the output is ``x + MLP(x, eta)``. The
loss (a minimum over permutations) does not identify the map: any map pushing the source to the
target scores the same, and the unit-ball source is rotation invariant, so independently fitted
parameter sets can settle on maps that differ by a rotation, and the network then interpolates
between incompatible maps. Starting near the identity makes the first matchings close to optimal
transport plans, which vary continuously with ``eta``, and the learnt map follows them
(``tests/test_training.py`` checks interpolation at a held-out ``eta``; ``python -m
benchmarks.studies --only residual`` compares the two networks). ``residual=False`` is the
paper's network.

With ``tail_feature=True`` the network also gets the source point's tail coordinate
$\psi(x) = -\log(1 - |x|^d)$ (exponentially distributed under the uniform-ball source: $|x|^d$ is
uniform). The laws the experiments learn have Gaussian-like tails beyond the ball (diffusion), so the
map must stretch the ball's outer shell over a long range of radii; in ``x`` alone that is a steep
profile a smooth network flattens (it cuts the tail), in ``psi`` a gentle one. Measured on the quick
scale (docs/training.md, "The radial term"), it lowers ks2d-time's radial KS distances by 40-45% and
brings its m2 nearer its training data's; the experiments that use it say why
(`ksdp.experiments.specs.Experiment.tail_feature`).

The physical parameter is normalised before it enters the network: optionally ``log10`` (for
amplitudes spanning decades), then an affine map sending the training range to ``[-1, 1]``. The
transform lives in `ModelConfig` and is saved with every checkpoint.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ksdp._checks import is_concrete
from ksdp.initial import stratified_levels, uniform_ball, uniform_ball_at_levels

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu}


class ModelConfig(NamedTuple):
    """Static description of the network and of the input normalisation (hashable).

    Attributes:
      d: space dimension of ``x`` and of the output.
      p: number of physical parameters in ``eta``.
      width, depth, activation: the hidden layers.
      residual: output ``x + MLP(x, eta)`` (default) instead of the paper's plain ``MLP(x, eta)``.
      eta_log: per parameter, whether ``log10`` is taken first.
      eta_center, eta_scale: ``eta_n = (T(eta) - center) / scale``.
      tail_feature: also feed the network the tail coordinate ``-log(1 - |x|^d)`` (`tail_coordinate`).
      fourier: octaves of Fourier features of ``x`` fed to the network besides ``x`` itself:
        ``sin(pi 2^k x), cos(pi 2^k x)`` per coordinate for ``k < fourier`` (0: none). Fixed frequencies
        on the source ball's scale, so a map with structure finer than the ball (arms, filaments) need
        not build it from smooth ``tanh`` units alone.
      identity_at: a parameter value ``a`` at which the learnt law is the source itself (a time
        experiment whose initial law is the uniform ball, at ``t = 0``), or ``None``: the output is then
        ``x + (|eta - a| / scale) MLP(x, eta)`` (one parameter, residual, no log10), the identity at
        ``a`` exactly, and linear in ``eta`` near it, as a flow's displacement grows like ``t``. (A
        square-root factor, for diffusion's ``O(sqrt(t))``, made laminar2d-time's t = 0 disc exact but
        missed its held-out t = 0.005: docs/training.md, "The radial term".)
      proportional: a second output head multiplied by the parameter itself over its largest training
        value (one positive parameter, residual): ``x + MLP_0(x, eta) + (eta / eta_max) MLP_1(x, eta)``.
        A flow of amplitude ``A`` displaces the particles by about ``A t v(x)``, linearly in ``A``; a
        ``tanh`` network in ``log10 A`` flattens beyond its training range, the factor keeps the growth
        (the amplitude experiments' extrapolated values: docs/training.md, "Beyond the range").
    """

    d: int
    p: int
    width: int = 30
    depth: int = 5
    activation: str = "tanh"
    residual: bool = True
    eta_log: tuple[bool, ...] = (False,)
    eta_center: tuple[float, ...] = (0.0,)
    eta_scale: tuple[float, ...] = (1.0,)
    tail_feature: bool = False
    identity_at: float | None = None
    fourier: int = 0
    proportional: bool = False

    def to_dict(self) -> dict:
        """The config as JSON-ready values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._asdict().items()}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def make_config(
    d: int,
    eta_train,
    *,
    width: int = 30,
    depth: int = 5,
    activation: str = "tanh",
    residual: bool = True,
    eta_log=False,
    tail_feature: bool = False,
    identity_at: float | None = None,
    fourier: int = 0,
    proportional: bool = False,
) -> ModelConfig:
    """A `ModelConfig` whose normalisation maps the training ``eta`` range to ``[-1, 1]``.

    Args:
      d: space dimension.
      eta_train: ``[R]`` or ``[R, p]`` training parameter values.
      eta_log: bool or per-parameter bools: take ``log10`` first (values must be positive).
      tail_feature: feed the network the source point's tail coordinate as well (`tail_coordinate`).
      identity_at: the parameter value at which the map is the identity (`ModelConfig.identity_at`).
      fourier: octaves of Fourier features of ``x`` (`ModelConfig.fourier`; 0: none).
      proportional: add the head proportional to the parameter (`ModelConfig.proportional`).
    """
    for name, v, low in (("d", d, 1), ("width", width, 1), ("depth", depth, 1), ("fourier", fourier, 0)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"{name} must be an integer, got {v!r}.")
        if v < low:
            raise ValueError(f"{name} must be >= {low}, got {v}.")
    eta = np.asarray(eta_train, np.float64)
    eta = eta[:, None] if eta.ndim == 1 else eta
    if eta.ndim != 2 or eta.shape[0] < 1:
        raise ValueError(f"eta_train must be [R] or [R, p], got shape {np.shape(eta_train)}.")
    if not np.all(np.isfinite(eta)):
        raise ValueError("eta_train contains NaN or infinite values; pass the finite training parameters.")
    p = eta.shape[1]
    logs = tuple(bool(v) for v in np.broadcast_to(np.asarray(eta_log, bool), (p,)))
    if not isinstance(tail_feature, (bool, np.bool_)):
        raise TypeError(f"tail_feature must be True or False, got {tail_feature!r}.")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is unknown; use one of {tuple(ACTIVATIONS)}.")
    if identity_at is not None:
        if isinstance(identity_at, bool) or not isinstance(identity_at, (int, float, np.integer, np.floating)):
            raise TypeError(f"identity_at must be a number (a parameter value) or None, got {identity_at!r}.")
        if not np.isfinite(identity_at):
            raise ValueError(f"identity_at must be finite, got {identity_at!r}.")
        if p != 1 or any(logs) or not residual:
            raise ValueError(
                "identity_at needs one physical parameter, not taken in log10, and the residual network; "
                f"got p = {p}, eta_log = {logs}, residual = {residual}."
            )
        identity_at = float(identity_at)
    if not isinstance(proportional, (bool, np.bool_)):
        raise TypeError(f"proportional must be True or False, got {proportional!r}.")
    if proportional and (p != 1 or not residual or identity_at is not None or np.any(eta <= 0)):
        raise ValueError(
            "proportional needs one positive physical parameter, the residual network and no identity_at; "
            f"got p = {p}, residual = {residual}, identity_at = {identity_at}, smallest value {eta.min():g}."
        )
    t = eta.copy()
    for k, lg in enumerate(logs):
        if lg:
            if np.any(t[:, k] <= 0):
                raise ValueError(f"eta_log is set for parameter {k} but its values are not all positive.")
            t[:, k] = np.log10(t[:, k])
    lo, hi = t.min(0), t.max(0)
    center = (lo + hi) / 2
    scale = np.where(hi > lo, (hi - lo) / 2, 1.0)
    return ModelConfig(
        d,
        p,
        width,
        depth,
        activation,
        bool(residual),
        logs,
        tuple(map(float, center)),
        tuple(map(float, scale)),
        bool(tail_feature),
        identity_at,
        int(fourier),
        bool(proportional),
    )


def normalise_eta(cfg: ModelConfig, eta):
    """``[..., p]`` physical parameters -> network input (log10 where configured, then affine)."""
    eta = jnp.asarray(eta, jnp.float32)
    logs = jnp.asarray(cfg.eta_log)
    t = jnp.where(logs, jnp.log10(jnp.where(logs, eta, 1.0)), eta)
    return (t - jnp.asarray(cfg.eta_center, jnp.float32)) / jnp.asarray(cfg.eta_scale, jnp.float32)


def check_eta(cfg: ModelConfig, eta):
    """Returns ``eta`` as ``[..., p]``; a scalar or ``[B]`` is accepted when ``p == 1``."""
    eta = jnp.asarray(eta, jnp.float32)
    if cfg.p == 1 and (eta.ndim == 0 or eta.shape[-1] != 1):
        eta = eta[..., None]
    if eta.shape[-1] != cfg.p:
        raise ValueError(f"eta must end in the {cfg.p} physical parameter(s) of this model, got shape {eta.shape}.")
    if is_concrete(eta):
        if not bool(jnp.all(jnp.isfinite(eta))):
            raise ValueError("eta contains NaN or infinite values; pass finite physical parameters.")
        logs = np.asarray(cfg.eta_log)
        if logs.any() and not bool(jnp.all(eta[..., logs] > 0)):
            raise ValueError("eta must be positive for the parameters this model takes in log10 (eta_log).")
        if not bool(jnp.all(jnp.isfinite(normalise_eta(cfg, eta)))):
            raise ValueError("eta overflows float32 once normalised to the training range; pass a smaller value.")
    return eta


class DeepParticleMap(nn.Module):
    r"""The map $f_\theta(x;\eta)$ as a flax module: everything `apply` computes, in one module.

    The parameter normalisation (`normalise_eta`), the tail feature, the ``depth`` hidden layers of
    ``width`` units, the identity factor and the residual all live inside, so the module *is* the
    learnt map and can sit inside a larger flax model (its variables are a `Generator`'s ``params``).

    Call it on ``x [..., N, d]`` (points) and ``eta [..., p]`` (one parameter value per cloud, raw: the
    module normalises it); ``x [d]`` alone is one point.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, x, eta):
        cfg = self.config
        point = x.ndim == 1
        x = x[None] if point else x
        e = normalise_eta(cfg, eta)
        e = jnp.broadcast_to(e[..., None, :], x.shape[:-1] + (cfg.p,))
        inputs = [x, tail_coordinate(x)] if cfg.tail_feature else [x]
        if cfg.fourier:
            scaled = jnp.concatenate([jnp.pi * 2.0**k * x for k in range(cfg.fourier)], axis=-1)
            inputs += [jnp.sin(scaled), jnp.cos(scaled)]
        h = jnp.concatenate([*inputs, e.astype(x.dtype)], axis=-1)
        act = ACTIVATIONS[cfg.activation]
        for _ in range(cfg.depth):
            h = act(nn.Dense(cfg.width)(h))
        out = nn.Dense(2 * cfg.d if cfg.proportional else cfg.d)(h)
        raw = jnp.asarray(eta, jnp.float32)[..., None, :1]  # the (first) parameter per cloud, unnormalised
        if cfg.proportional:  # x + MLP_0 + (eta / eta_max) MLP_1 (ModelConfig.proportional)
            out = (out[..., : cfg.d] + (raw / eta_max(cfg)) * out[..., cfg.d :]).astype(x.dtype)
        if cfg.identity_at is not None:  # the identity at eta = identity_at (ModelConfig.identity_at)
            out = out * (jnp.abs(raw - cfg.identity_at) / cfg.eta_scale[0])
            out = out.astype(x.dtype)
        y = x + out if cfg.residual else out
        return y[0] if point else y


def eta_max(cfg: ModelConfig) -> float:
    """The largest training value of the (first) parameter, from the config's normalisation."""
    top = cfg.eta_center[0] + cfg.eta_scale[0]
    return float(10.0**top if cfg.eta_log[0] else top)


def init(key, cfg: ModelConfig):
    """Random initial parameters (flax default initialisers)."""
    return DeepParticleMap(cfg).init(key, jnp.zeros((1, cfg.d), jnp.float32), jnp.zeros((cfg.p,), jnp.float32))


# 1 - |x|^d is floored at the float32 spacing below 1, so the tail coordinate is at most ~16.6
_TAIL_FLOOR = 2.0**-24


def tail_coordinate(x):
    r"""$\psi(x) = -\log(1 - |x|^d)$ of points ``x [..., d]`` of the unit ball: ``[..., 1]``.

    Under the uniform-ball source $|x|^d$ is uniform, so $\psi$ is exponentially distributed (mean 1):
    the level of the source's radial CDF on a log scale. Smooth inside the ball ($\approx |x|^d$
    near the centre); the tail of a target law beyond the ball is a gentle function of it.
    """
    d = x.shape[-1]
    u = jnp.sum(x * x, axis=-1, keepdims=True) ** (d / 2)
    return -jnp.log1p(-jnp.minimum(u, 1.0 - _TAIL_FLOOR))  # log1p: exact for small |x|


def apply(cfg: ModelConfig, params, x, eta):
    r"""$f_\theta(x;\eta)$ for ``x [..., N, d]`` and ``eta [..., p]`` (one per cloud): `DeepParticleMap`."""
    return DeepParticleMap(cfg).apply(params, x, eta)


def _one_eta(cfg: ModelConfig, eta):
    eta = check_eta(cfg, eta)
    if eta.shape != (cfg.p,):
        raise ValueError(f"eta must be one parameter value ({cfg.p} number(s)), got shape {jnp.shape(eta)}.")
    return eta


def jacobian_determinant(cfg: ModelConfig, params, x, eta):
    r"""$\det \partial_x f_\theta(x;\eta)$ at each point of ``x [N, d]`` for one ``eta [p]`` (or a scalar).

    Positive where the map preserves orientation; where it is not positive the map folds the source
    over itself, and the generated density has caustics (lines or sheets of infinite density)
    along the fold, which no smooth law has.
    """
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 2 or x.shape[1] != cfg.d:
        raise ValueError(f"x must be [N, {cfg.d}] (d = {cfg.d}), got shape {x.shape}.")
    eta = _one_eta(cfg, eta)

    def f(point):
        return apply(cfg, params, point[None], eta)[0]

    return jax.vmap(lambda point: jnp.linalg.det(jax.jacfwd(f)(point)))(x)


_jacobian_determinant_jit = jax.jit(jacobian_determinant, static_argnums=0)


def folded_fraction(key, cfg: ModelConfig, params, eta, n: int = 20000) -> tuple[float, float]:
    r"""The fraction of the source (the uniform ball) on which $f_\theta(\cdot;\eta)$ folds
    (`jacobian_determinant` <= 0), from ``n`` uniform samples, with its binomial standard error.

    0 for a map without folds (an optimal transport map from the ball to a law with a density never
    folds: it is the gradient of a convex function). A map can fold and still match the law's low
    moments; the caustics along its folds are what the projections of a folded generator show.

    Returns:
      ``(fraction, standard_error)``; the standard error is at least ``1 / n`` (a fraction of 0 says
      fewer than about one point in ``n``).
    """
    eta = _one_eta(cfg, eta)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}.")
    det = np.asarray(_jacobian_determinant_jit(cfg, params, uniform_ball(key, int(n), cfg.d), eta))
    frac = float(np.mean(det <= 0))
    return frac, float(np.sqrt(max(frac * (1 - frac), 1.0 / n) / n))


def n_parameters(params) -> int:
    """Number of trainable scalars."""
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def _generate_chunk(cfg, params, eta, key, chunk):
    x = uniform_ball(key, chunk, cfg.d)
    return apply(cfg, params, x, eta)


_generate_chunk_jit = jax.jit(_generate_chunk, static_argnums=(0, 4))


def _generate_chunk_stratified(cfg, params, eta, key, index, n):
    k_level, k_dir = jax.random.split(key)
    x = uniform_ball_at_levels(k_dir, stratified_levels(k_level, index, n), cfg.d)
    return apply(cfg, params, x, eta)


_generate_chunk_stratified_jit = jax.jit(_generate_chunk_stratified, static_argnums=0)

SOURCES = ("iid", "stratified")
# stratified levels (index + U) / n are computed in float32: exact indices up to 2^24
_STRATIFIED_MAX = 2**24


def generate(key, cfg: ModelConfig, params, eta, n: int, *, chunk: int | None = 65536, source: str = "iid"):
    r"""``n`` particles of the learnt law at ``eta``: fresh uniform-ball samples pushed through $f_\theta$.

    Works for any ``eta``, including values outside the training range (extrapolation). Memory is
    ``O(chunk * width)`` beyond the ``[n, d]`` output: 10^6 particles need ~10 MiB of output.

    Args:
      cfg: the model's `ModelConfig`.
      params: trained parameters.
      eta: one parameter value (scalar or ``[p]``) or a batch ``[B, p]`` (``[B]`` when ``p == 1``).
      key: random key; chunk ``k`` uses ``fold_in(key, k)``.
      n: number of particles per ``eta``.
      chunk: particles per compiled call.
      source: ``"iid"`` (default): independent sources, so independent particles of the learnt law.
        ``"stratified"``: the sources' radial levels ``|x|^d`` stratified, one in each of the ``n``
        strata ``[k / n, (k + 1) / n)`` (`ksdp.initial.uniform_ball_stratified`), in random order.
        The particles' empirical law is still unbiased for the learnt law, but the particles are not
        independent: for a map that carries radii to radii in order, the radial CDF of the cloud is
        within ``1 / n`` of the learnt law's instead of about ``0.87 / sqrt(n)``; a map that depends a
        little on the direction adds to that (ks2d-time's paper network: a few 1e-4 at n = 10^5,
        `python -m benchmarks.studies --only sources`). Its radial check measures the learnt law
        this way. At most 2^24 particles.

    Returns:
      ``[n, d]`` numpy array, or ``[B, n, d]`` for a batch of ``eta``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (particles to generate) must be a positive integer, got {n!r}.")
    if chunk is not None and (not isinstance(chunk, (int, np.integer)) or isinstance(chunk, bool) or chunk < 1):
        raise ValueError(f"chunk must be a positive integer (particles per compiled call) or None, got {chunk!r}.")
    if not isinstance(source, str) or source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES} (the sources' design), got {source!r}.")
    if source == "stratified" and n > _STRATIFIED_MAX:
        raise ValueError(
            f"source='stratified' stratifies at most 2^24 = {_STRATIFIED_MAX} levels, got n = {n}: "
            "generate in several calls or use source='iid'."
        )
    eta = check_eta(cfg, eta)
    if eta.ndim > 2:
        raise ValueError(f"eta must be one value [p] or a batch [B, p], got shape {eta.shape}.")
    if eta.ndim == 2:
        return np.stack(
            [
                generate(jax.random.fold_in(key, b), cfg, params, e, n, chunk=chunk, source=source)
                for b, e in enumerate(eta)
            ]
        )
    chunk = int(min(chunk or n, n))
    out = np.empty((n, cfg.d), np.float32)
    if source == "stratified":  # the strata in random order: a chunk covers levels all over [0, 1)
        k_order, key = jax.random.split(key)
        order = np.asarray(jax.random.permutation(k_order, int(n)), np.int32)
        order = np.concatenate([order, np.zeros(-n % chunk, np.int32)])  # the last chunk padded
    for k, start in enumerate(range(0, n, chunk)):
        if source == "stratified":
            index = jnp.asarray(order[start : start + chunk])
            y = _generate_chunk_stratified_jit(cfg, params, eta, jax.random.fold_in(key, k), index, jnp.float32(n))
        else:
            y = _generate_chunk_jit(cfg, params, eta, jax.random.fold_in(key, k), chunk)
        stop = min(start + chunk, n)
        out[start:stop] = np.asarray(y)[: stop - start]
    return out
