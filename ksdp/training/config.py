"""Training configuration and state: `TrainConfig` with its validation, `TrainState`, the optimiser."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ksdp import model as _model
from ksdp._checks import is_integer as _is_integer
from ksdp.training.losses import RADIAL_MAX_POINTS

# the default moving average's longest horizon in Adam steps (TrainConfig.ema_decay = None): 0.999, the
# experiments' average, from 6000 steps on (the quick scale's run; the horizon is a sixth of a shorter run)
EMA_HORIZON = 1000.0


class TrainConfig(NamedTuple):
    """Static training settings. The defaults are the recommended recipe, the one every experiment
    trains with (docs/training.md measures each of its choices against the paper's); `TrainConfig.paper`
    gives the paper's schedule and loss.

    The recipe: ``N = 1000`` samples per set, a fresh mini-batch at every renewal (``K = L = 50``), the
    sources matched to the targets (``match_sources``), the debiased loss, a moving average of the
    weights over the run's last sixth, at most 1000 steps (``ema_decay = 0.999`` from 6000 steps on)
    and a cosine decay of the learning rate (3e-3) over the run. The
    paper's ``K = 1000, L = 200`` min--min lets the network memorise its mini-batch and fold the
    source; its plain loss shrinks the law (docs/training.md).

    Attributes:
      n_samples: ``N``, samples per parameter set in a mini-batch.
      resample_every: ``K``, Adam steps per mini-batch.
      renew_every: ``L``, Adam steps between permutation renewals (divides ``K``).
      sweeps: block sweeps per renewal.
      initial_sweeps: block sweeps matching a fresh mini-batch.
      block: assignment block size ``M``.
      learning_rate: Adam step size.
      ema_decay: decay of an exponential moving average of the parameters, used for generation
        (`TrainResult.params`); ``0`` keeps none (the paper). ``None`` (default): an average over
        ``h = min(1000, n_steps / 6)`` steps, ``1 - 1 / h`` (`train` sets it, `for_steps`; no average
        below 6 steps). A fixed 0.999 averages a short run's weights from where its rate is still
        high: 3000 steps of the tutorial's swirl came out with m2 9-12% above its training runs'
        at the neighbouring values, 0.998 within about 2%.
      decay_steps: cosine decay of the learning rate to 1% of ``learning_rate`` over this many Adam
        steps (then constant); ``None`` (default): over the whole run (`train` sets it to ``n_steps``,
        `for_steps`); ``0`` keeps it constant (the paper).
      debias: subtract half the matched cost between two independent generated batches, capped
        (see `debiased_objective`), which removes the shrinkage of the min--min loss; ``False`` is
        the paper's loss.
      local_cap: with ``debias``, also cap each self pair at this many times the median self-pair
        cost of its set (`debiased_objective`), so that a stray generated point pays for its
        distance beyond a few particle spacings; ``0`` (default) keeps only the extent's cap.
      match_sources: match the mini-batch's sources ``x``, not the generated points ``f(x)``, to its
        targets: the network regresses onto the optimal coupling of the two samples, whose map does
        not fold (`ksdp.model.folded_fraction`); the renewals refine that matching. ``False`` is
        the paper's min--min. With ``debias`` the self term still matches ``f(x)`` to ``f(x')``.
      min_min_after: with ``match_sources``, the mini-batches from this Adam step on match the
        generated points instead (the min--min, whose debiased loss is stationary at the target
        law rather than at the coupling's conditional mean); ``0`` (default) never switches. An
        experiment: on ks2d-time it lowered the loss but left the law as shrunk (docs/training.md,
        "The radial term").
      radial_weight: a weight ``lambda >= 0`` of a second term, the one-dimensional optimal transport
        between the generated points' distances from the origin and the *whole* training set's
        (`radial_objective`): every generated point of the mini-batch (both batches with ``debias``)
        is paired by rank with the training set's radial quantile, so that the law of ``|f(x)|``
        is fitted against thousands of targets without a sampled coupling's shrinkage. A marginal of
        any law, most telling for a rotation-invariant one; ``0`` (default) adds nothing.
    """

    n_samples: int = 1000
    resample_every: int = 50
    renew_every: int = 50
    sweeps: int = 4
    initial_sweeps: int = 20
    block: int = 16
    learning_rate: float = 3e-3
    ema_decay: float | None = None
    decay_steps: int | None = None
    debias: bool = True
    local_cap: float = 0.0
    match_sources: bool = True
    min_min_after: int = 0
    radial_weight: float = 0.0

    @classmethod
    def paper(cls, **changes) -> TrainConfig:
        """The paper's settings (Sec. 3.4): N = 2000, K = 1000, L = 200, 10 sweeps per renewal (50 on a
        fresh mini-batch), block M = 16, Adam at 1e-3 held constant, the min--min loss of eq. (14), no
        moving average; ``changes`` replace fields."""
        paper = cls(
            n_samples=2000,
            resample_every=1000,
            renew_every=200,
            sweeps=10,
            initial_sweeps=50,
            block=16,
            learning_rate=1e-3,
            ema_decay=0.0,
            decay_steps=0,
            debias=False,
            local_cap=0.0,
            match_sources=False,
            min_min_after=0,
            radial_weight=0.0,
        )
        return paper._replace(**changes)

    def for_steps(self, n_steps: int) -> TrainConfig:
        """This config resolved over a run of ``n_steps``: ``decay_steps=None`` (a decay over the whole
        run) set to ``n_steps``, ``ema_decay=None`` to an average over ``min(1000, n_steps / 6)`` steps."""
        cfg = self._replace(decay_steps=int(n_steps)) if self.decay_steps is None else self
        if cfg.ema_decay is None:
            horizon = min(EMA_HORIZON, n_steps / 6)
            cfg = cfg._replace(ema_decay=1.0 - 1.0 / horizon if horizon > 1 else 0.0)
        return cfg


class TrainState(NamedTuple):
    """Everything the loop carries between mini-batches."""

    params: Any
    opt_state: Any
    perm: jax.Array  # [R, N] of the last mini-batch ([R, 2, N] with TrainConfig.debias: targets, self)
    step: jax.Array  # Adam steps done
    key: jax.Array
    ema: Any  # moving average of params (equal to params when TrainConfig.ema_decay == 0)


class TrainingError(RuntimeError):
    """Training produced a non-finite or diverging loss; the last good checkpoint is kept."""


# a loss this many times the best mini-batch mean so far (the first step's, in the first mini-batch)
# stops training: the untrained residual map starts at the squared W2 between the source ball and the
# targets, and a healthy run only lowers it, up to the noise between mini-batches
DIVERGED = 100.0
# lines a callable ``progress`` of `train` gets over a run (plus one at its end)
PROGRESS_LINES = 20


def cosine_decay(learning_rate, decay_steps, alpha: float = 0.01):
    """optax's cosine decay schedule (``optax.cosine_decay_schedule``, the same arithmetic) from
    ``learning_rate`` to ``alpha`` times it over ``decay_steps``, whose values may be traced: the
    compiled training step takes them as arguments (`hyperparameters`)."""

    def schedule(count):
        count = jnp.minimum(count, decay_steps)
        return learning_rate * ((1 - alpha) * (0.5 * (1 + jnp.cos(jnp.pi * count / decay_steps))) + alpha)

    return schedule


def optimizer(cfg: TrainConfig, hyper: dict | None = None):
    """The optax Adam of ``cfg``: its learning rate, decayed to 1% by a cosine over ``decay_steps`` if set.

    ``hyper`` (`hyperparameters`), inside the compiled step, gives the rate and the decay's length as
    traced values; ``cfg`` then only says whether the rate decays (the optimiser state's structure)."""
    hyper = hyperparameters(cfg) if hyper is None else hyper
    if cfg.decay_steps:
        return optax.adam(cosine_decay(hyper["learning_rate"], hyper["decay_steps"]))
    return optax.adam(hyper["learning_rate"])


# TrainConfig's numbers that change no shape and no branch of the compiled step: it takes them as traced
# arguments, so that one compiled program serves every learning rate, moving average, decay length, cap and
# weight, and so every run length (which sets the decay and the average); the config it is compiled for keeps
# only whether each is on (`structure`)
TRACED = ("learning_rate", "ema_decay", "decay_steps", "local_cap", "min_min_after", "radial_weight")


def hyperparameters(cfg: TrainConfig) -> dict:
    """The `TRACED` fields of a resolved ``cfg`` as NumPy scalars (float32; ``min_min_after`` int32), with the
    moving average's weight of the new parameters, ``1 - ema_decay``, computed in float64 first."""
    if cfg.decay_steps is None or cfg.ema_decay is None:
        raise ValueError(
            "TrainConfig.decay_steps=None and ema_decay=None depend on the run's length: train() sets them; "
            "elsewhere use cfg.for_steps(n_steps)."
        )
    out = {name: np.float32(getattr(cfg, name)) for name in TRACED if name != "min_min_after"}
    out["min_min_after"] = np.int32(cfg.min_min_after)
    out["ema_new"] = np.float32(1.0 - cfg.ema_decay)
    return out


def structure(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with each `TRACED` field replaced by 1 or 0, whether it is on: the compiled step's static
    config (two configs that differ only in those values share one program)."""
    return cfg._replace(**{name: type(getattr(cfg, name))(bool(getattr(cfg, name))) for name in TRACED})


def check_inputs(model_cfg: _model.ModelConfig, cfg: TrainConfig, targets, eta):
    """Validates the training data; returns ``(targets [R, J, d], eta [R, p])`` as float32."""
    targets = jnp.asarray(targets, jnp.float32)
    if targets.ndim != 3:
        raise ValueError(f"targets must be [R, J, d] (R parameter sets of J particles), got {targets.shape}.")
    if targets.shape[-1] != model_cfg.d:
        raise ValueError(f"targets have dimension d={targets.shape[-1]} but the model maps R^{model_cfg.d}.")
    eta = _model.check_eta(model_cfg, eta)
    if eta.ndim != 2 or eta.shape[0] != targets.shape[0]:
        raise ValueError(f"eta must be [R, p] with R={targets.shape[0]} (one per target set), got {eta.shape}.")
    if cfg.n_samples > targets.shape[1]:
        raise ValueError(
            f"n_samples N={cfg.n_samples} exceeds the J={targets.shape[1]} particles per set; "
            f"lower TrainConfig.n_samples or simulate more particles."
        )
    check_config(cfg)
    if not bool(jnp.all(jnp.isfinite(targets))):
        raise ValueError("targets contain non-finite particles.")
    return targets, eta


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Raises a ``ValueError`` or ``TypeError`` naming the first field of ``cfg`` no training run can use."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a ksdp.TrainConfig, got {type(cfg).__name__}.")
    for name in ("n_samples", "resample_every", "renew_every", "sweeps", "initial_sweeps"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if "sweeps" in name else 1):
            raise ValueError(
                f"TrainConfig.{name} must be a {'non-negative' if 'sweeps' in name else 'positive'} integer, got {v!r}."
            )
    if not _is_integer(cfg.block) or cfg.block < 2:
        raise ValueError(
            f"TrainConfig.block (the assignment sub-problem size M) must be an integer >= 2, got {cfg.block!r}."
        )
    if cfg.resample_every % cfg.renew_every:
        raise ValueError(f"renew_every={cfg.renew_every} must divide resample_every={cfg.resample_every}.")
    if not isinstance(cfg.debias, bool):
        raise TypeError(f"TrainConfig.debias must be True or False, got {cfg.debias!r}.")
    if isinstance(cfg.learning_rate, bool) or not (np.isfinite(cfg.learning_rate) and cfg.learning_rate > 0):
        raise ValueError(f"TrainConfig.learning_rate must be a finite positive number, got {cfg.learning_rate!r}.")
    if isinstance(cfg.local_cap, bool) or not (np.isfinite(cfg.local_cap) and cfg.local_cap >= 0):
        raise ValueError(
            f"TrainConfig.local_cap must be a finite number >= 0 (0: off; e.g. 100 times the median self-pair "
            f"cost), got {cfg.local_cap!r}."
        )
    if not isinstance(cfg.match_sources, bool):
        raise TypeError(f"TrainConfig.match_sources must be True or False, got {cfg.match_sources!r}.")
    if isinstance(cfg.min_min_after, bool) or not isinstance(cfg.min_min_after, (int, np.integer)):
        raise TypeError(f"TrainConfig.min_min_after must be an integer (an Adam step), got {cfg.min_min_after!r}.")
    if cfg.min_min_after < 0:
        raise ValueError(f"TrainConfig.min_min_after must be >= 0 (0: never switch), got {cfg.min_min_after}.")
    if cfg.min_min_after and not cfg.match_sources:
        raise ValueError(
            "TrainConfig.min_min_after switches the sources' matching to the min-min: set match_sources=True, "
            "or min_min_after=0."
        )
    if isinstance(cfg.radial_weight, bool) or not isinstance(cfg.radial_weight, (int, float, np.integer, np.floating)):
        raise TypeError(f"TrainConfig.radial_weight must be a number >= 0 (0: off), got {cfg.radial_weight!r}.")
    if not (np.isfinite(cfg.radial_weight) and cfg.radial_weight >= 0):
        raise ValueError(f"TrainConfig.radial_weight must be a finite number >= 0 (0: off), got {cfg.radial_weight!r}.")
    # the radial term ranks M = N (2N with debias) generated points per set in int32 (radial_objective)
    if cfg.radial_weight and (2 if cfg.debias else 1) * cfg.n_samples > RADIAL_MAX_POINTS:
        raise ValueError(
            f"TrainConfig.radial_weight ranks {'2N' if cfg.debias else 'N'} generated points per set, at most "
            f"{RADIAL_MAX_POINTS}: lower TrainConfig.n_samples (got N={cfg.n_samples}) or set radial_weight=0."
        )
    if cfg.local_cap and not cfg.debias:
        raise ValueError("TrainConfig.local_cap caps the debiased loss's self term: set debias=True, or local_cap=0.")
    if cfg.ema_decay is not None and (
        isinstance(cfg.ema_decay, bool)
        or not isinstance(cfg.ema_decay, (int, float, np.integer, np.floating))
        or not (0.0 <= cfg.ema_decay < 1.0)
    ):
        raise ValueError(
            "TrainConfig.ema_decay must be None (an average over the run's last sixth, at most 1000 steps) or "
            f"in [0, 1) (0: no moving average), got {cfg.ema_decay!r}."
        )
    if cfg.decay_steps is not None and (
        isinstance(cfg.decay_steps, bool) or not isinstance(cfg.decay_steps, (int, np.integer)) or cfg.decay_steps < 0
    ):
        raise ValueError(
            "TrainConfig.decay_steps must be None (a decay over the whole run), or an integer >= 0 (0: constant "
            f"rate), got {cfg.decay_steps!r}."
        )
    return cfg


def initial_perm(cfg: TrainConfig, n_sets: int):
    """The identity matchings a run starts from: ``[R, N]`` (``[R, 2, N]`` with the debiased loss's self term)."""
    shape = (n_sets, 2, cfg.n_samples) if cfg.debias else (n_sets, cfg.n_samples)
    return jnp.broadcast_to(jnp.arange(cfg.n_samples, dtype=jnp.int32), shape)


def init_state(key, model_cfg: _model.ModelConfig, cfg: TrainConfig, n_sets: int) -> TrainState:
    """A fresh `TrainState` for ``n_sets`` parameter sets: initial weights (also the moving average)."""
    k_init, k_loop = jax.random.split(key)
    params = _model.init(k_init, model_cfg)
    perm = initial_perm(cfg, n_sets)
    return TrainState(params, optimizer(cfg).init(params), perm, jnp.int32(0), k_loop, params)
