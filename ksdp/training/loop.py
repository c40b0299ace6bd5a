"""`train`: the loop over mini-batches, with checkpoints, progress and the loss's health; and the
diagnostics of a finished run's loss history."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ksdp import metrics as _metrics
from ksdp import model as _model
from ksdp import parallel as _parallel
from ksdp._checks import is_integer as _is_integer
from ksdp.generator import Generator
from ksdp.training.checkpoint import (
    CheckpointMismatch,
    fingerprint,
    load_checkpoint,
    save_checkpoint,
    training_metadata,
)
from ksdp.training.config import (
    DIVERGED,
    PROGRESS_LINES,
    TrainConfig,
    TrainingError,
    TrainState,
    check_inputs,
    init_state,
)
from ksdp.training.step import mesh_split, train_minibatch


def fresh_batch_loss(history, resample_every: int, n_batches: int = 20) -> float:
    """Mean loss at the first Adam step of each of the last ``n_batches`` mini-batches.

    At that step the parameters have not yet been trained on the mini-batch's points (drawn afresh,
    then matched), so the value is an out-of-sample estimate of the matched cost, to hold against
    the squared W2 floor of two independent ``N``-samples; the losses of later steps include the fit
    to the particular points of the mini-batch.
    """
    h = np.asarray(history, float)
    first = h[: len(h) - len(h) % resample_every : resample_every]  # empty without a whole mini-batch
    if not len(first):
        raise ValueError(f"the history ({len(h)} steps) holds no whole mini-batch of {resample_every} steps.")
    return float(np.mean(first[-n_batches:]))


def batch_means(history, resample_every: int) -> np.ndarray:
    """The mean loss of each whole mini-batch of ``resample_every`` steps (an unfinished one is left out)."""
    h = np.asarray(history, float)
    whole = len(h) // resample_every
    return h[: whole * resample_every].reshape(whole, resample_every).mean(axis=1)


def final_loss(history, resample_every: int, n_batches: int = 20) -> _metrics.Estimate:
    """The training loss at the end of training: the mean over the last ``n_batches`` whole
    mini-batches of each one's mean loss, with its standard error (their spread / sqrt(n)).

    Each mini-batch draws its own sources and targets, so the batch means are close to independent
    draws; the last steps of one mini-batch alone are a single draw (at the paper scale, about 9%
    from one mini-batch to the next) and the most fitted part of it.
    """
    means = batch_means(history, resample_every)
    if len(means) < 2:
        raise ValueError(
            f"the history ({len(history)} steps) holds {len(means)} whole mini-batch(es) of {resample_every} "
            "steps; a standard error needs at least 2."
        )
    spread = _metrics.run_spread(means[-n_batches:])
    return _metrics.Estimate(spread["mean"], spread["se"])


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


class TrainResult(NamedTuple):
    """What `train` returns: the learnt map as a `ksdp.generator.Generator` (the weights it holds are
    the moving average when ``TrainConfig.ema_decay > 0``, else the last iterate), the loss history and
    the training state (for resuming; the generator is what to keep, `Generator.save`)."""

    generator: Generator
    history: list  # loss after every Adam step
    state: TrainState

    @property
    def params(self):
        """The generator's weights (``result.generator.params``)."""
        return self.generator.params

    @property
    def model(self) -> _model.ModelConfig:
        """The generator's config (``result.generator.config``)."""
        return self.generator.config


def interactive() -> bool:
    """Whether a person is watching: stderr is a terminal, or the code runs in a Jupyter (IPython) kernel."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def train(
    key,
    targets,
    eta,
    model_cfg: _model.ModelConfig,
    cfg: TrainConfig = TrainConfig(),  # the recommended recipe
    *,
    n_steps: int,
    checkpoint: str | None = None,
    checkpoint_every: int = 1,
    resume: bool = True,
    progress: bool | Callable[[str], Any] | None = None,
    mesh=None,
    axis: str | None = None,
) -> TrainResult:
    """Trains $f_\\theta$ on target particle sets, one per physical parameter.

    Args:
      key: random key (initial parameters and all sampling).
      targets: ``[R, J, d]`` particles of each training set.
      eta: ``[R, p]`` (or ``[R]``) physical parameters, raw (the model normalises them).
      model_cfg: from `ksdp.model.make_config`.
      cfg: `TrainConfig` (default: the recommended recipe; `TrainConfig.paper` for the paper's). A
        ``decay_steps`` of None decays the learning rate over these ``n_steps``; the checkpoint and the
        generator's metadata record the resolved value.
      n_steps: total Adam steps, a multiple of ``cfg.resample_every``.
      checkpoint: path of the checkpoint file; ``None`` for none.
      checkpoint_every: mini-batches between checkpoints (one is always written at the end).
      resume: continue from ``checkpoint`` if it exists (its data, key and configs must match).
      progress: ``True`` for a progress bar, ``False`` for none, ``None`` (default) for a bar when stderr
        is a terminal or the code runs in a Jupyter kernel (`interactive`; the bar is ``tqdm.auto``'s, a
        widget there); or a callable such as ``print`` or a logger's method, for runs whose output goes
        to a file: it gets one line at every twentieth of the training (`PROGRESS_LINES`) and at its
        end, with the step, the mini-batch's mean loss, the rate and the time left.
      mesh: a `jax.sharding.Mesh` to train data parallel over the ``R`` sets (``R`` a
        multiple of its devices; ``axis`` names the mesh axis, default its only one). Each device
        matches its own sets; every step equals the unsharded one to round-off (`ksdp.parallel`).

    Returns:
      `TrainResult`.

    Raises:
      TrainingError: the loss turned non-finite or diverged (above `DIVERGED` times the best
        mini-batch mean so far); the last checkpoint stays as it was.
      CheckpointMismatch: ``checkpoint`` exists but was written for other targets, eta, key or
        configs (`fingerprint`), or holds more than ``n_steps`` steps.
    """
    targets, eta, cfg = _checked(model_cfg, cfg, targets, eta, n_steps, checkpoint_every, mesh, axis)
    fp = fingerprint(key, targets, eta, model_cfg, cfg)
    state, history = None, []
    if checkpoint and resume and os.path.exists(checkpoint):
        state, history = _resumed(checkpoint, fp, model_cfg, cfg, targets.shape[0], n_steps)
    if state is None:
        state = init_state(key, model_cfg, cfg, targets.shape[0])
    step = int(state.step)  # counted here: a sharded state need not be readable on this process
    saved = step if history else None  # the step of this run's checkpoint on disk
    k = cfg.resample_every
    best = min((float(np.mean(history[i : i + k])) for i in range(0, len(history) - k + 1, k)), default=np.inf)
    done = step // cfg.resample_every
    total = n_steps // cfg.resample_every
    say, bar = _reporters(progress, n_steps, done * cfg.resample_every)
    every = max(1, -(-(total - done) // PROGRESS_LINES))  # mini-batches between two lines of `say`
    kept = lambda s: (
        f"the checkpoint {checkpoint} holds step {s}" if s is not None else "no checkpoint was written for this run"
    )
    t0 = time.perf_counter()
    try:
        for b in range(done, total):
            new, losses = train_minibatch(state, targets, eta, model_cfg, cfg, mesh=mesh, axis=axis)
            losses = _parallel.gather(losses)
            best = _check_losses(losses, step, best, cfg, kept(saved))
            state, step = new, step + cfg.resample_every
            history.extend(losses.tolist())
            rate = (b + 1 - done) * cfg.resample_every / (time.perf_counter() - t0)  # steps per second
            if bar is not None:
                bar.update(cfg.resample_every)
                bar.set_postfix(loss=f"{losses[-1]:.3g}", rate=f"{rate:.0f}/s")
            if say is not None and ((b + 1 - done) % every == 0 or b + 1 == total):
                left = (n_steps - step) / rate / 60
                say(
                    f"  train: step {step}/{n_steps} ({100 * step / n_steps:.0f}%), mini-batch loss "
                    f"{float(np.mean(losses)):.4g}, {rate:.1f} steps/s, about {left:.0f} min left"
                )
            if checkpoint and ((b + 1 - done) % checkpoint_every == 0 or b + 1 == total):
                save_checkpoint(checkpoint, state, model_cfg, cfg, history, {"fingerprint": fp})
                saved = step
    finally:
        if bar is not None:
            bar.close()
    weights = state.ema if cfg.ema_decay else state.params
    return TrainResult(
        Generator(model_cfg, weights, training_metadata(targets, eta, cfg, len(history))), history, state
    )


def _checked(model_cfg, cfg: TrainConfig, targets, eta, n_steps, checkpoint_every, mesh, axis):
    """`train`'s arguments checked before any work: ``(targets, eta, cfg)``, the config resolved over
    ``n_steps`` with plain Python numbers (it is written to checkpoints and generators as JSON)."""
    targets, eta = check_inputs(model_cfg, cfg, targets, eta)
    if not _is_integer(n_steps) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}.")
    cfg = cfg.for_steps(n_steps)  # a decay over the whole run: over these n_steps
    cfg = TrainConfig(*(v.item() if isinstance(v, np.generic) else v for v in cfg))
    if not _is_integer(checkpoint_every) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer (mini-batches), got {checkpoint_every!r}.")
    if n_steps % cfg.resample_every:
        raise ValueError(f"n_steps={n_steps} must be a multiple of resample_every={cfg.resample_every}.")
    if mesh is not None:
        mesh_split(mesh, axis, targets.shape[0])
    return targets, eta, cfg


def _reporters(progress, n_steps: int, start: int):
    """``(say, bar)``: the callable that gets progress lines and the tqdm bar, either None (`train`'s
    ``progress``)."""
    say = progress if callable(progress) else None
    if progress is not None and say is None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False, None or a callable taking a str, got {progress!r}.")
    show = interactive() if progress is None else (progress is True)
    if not show or start >= n_steps:
        return say, None
    from tqdm.auto import tqdm

    return say, tqdm(total=n_steps, initial=start, unit="step", desc="train", leave=False)


def _resumed(checkpoint: str, fp: str, model_cfg, cfg: TrainConfig, n_sets: int, n_steps: int):
    """``(state, loss history)`` of ``checkpoint``; `CheckpointMismatch` unless it is this run's."""
    state, saved_model, saved_cfg, history, extra = load_checkpoint(checkpoint)
    if saved_model != model_cfg or saved_cfg != cfg or state.perm.shape[0] != n_sets:
        raise CheckpointMismatch(
            f"checkpoint {checkpoint} was written for another model or training config; delete it or pass resume=False."
        )
    saved_fp = extra.get("fingerprint")
    if saved_fp != fp:
        why = (
            "carries no fingerprint (an older ksdp wrote it)"
            if saved_fp is None
            else f"was written for other training data, eta, key or loss (its fingerprint {str(saved_fp)[:12]} "
            f"is not {fp[:12]})"
        )
        raise CheckpointMismatch(f"checkpoint {checkpoint} {why}; delete it or pass resume=False.")
    if int(state.step) > n_steps:
        raise CheckpointMismatch(
            f"checkpoint {checkpoint} holds {int(state.step)} steps, more than n_steps={n_steps}; pass "
            f"n_steps >= {int(state.step)}, or resume=False to train {n_steps} steps afresh."
        )
    return state, history


def _check_losses(losses, step: int, best: float, cfg: TrainConfig, kept: str) -> float:
    """Raises `TrainingError` if a mini-batch's losses turned non-finite or diverged (above `DIVERGED` times
    the best mini-batch mean so far, or the first step's loss in the first mini-batch); returns the new best.
    ``kept`` says which checkpoint is on disk."""
    if not np.all(np.isfinite(losses)):
        bad = step + int(np.flatnonzero(~np.isfinite(losses))[0]) + 1
        raise TrainingError(
            f"the loss turned non-finite at step {bad}; {kept}. Lower the learning rate or check the targets."
        )
    ref = max(min(best, float(losses[0])), float(np.finfo(np.float32).tiny))
    if np.max(losses) > DIVERGED * ref:
        bad = step + int(np.argmax(losses > DIVERGED * ref)) + 1
        hint = "; or train with TrainConfig.debias=False" if cfg.debias else ""
        raise TrainingError(
            f"the loss diverged: {float(np.max(losses)):.3g} at step {bad}, more than {DIVERGED:g} times "
            f"the best mini-batch mean so far ({ref:.3g}); {kept}. Lower the learning rate (now "
            f"{cfg.learning_rate:g}){hint}."
        )
    return min(best, float(np.mean(losses)))
