r"""DeepParticle training: the alternating min--min loop of Algorithm 1 (paper Sec. 3.3--3.4).

$$
\min_\theta \frac1R\sum_{r=1}^R \min_{\gamma_r} \frac1N\sum_i
|f_\theta(x_{i,r};\eta_r) - y_{\gamma_r(i),r}|^2
$$

(eq. 14 averaged over the ``R`` parameter sets, so the learning rate does not depend on ``R``).

One **mini-batch** (``resample_every = K`` steps) draws fresh sources ``x`` from the initial law
and ``N`` targets ``y`` from each set's particles, matches them (``initial_sweeps`` block
sweeps from the identity), then alternates ``renew_every = L`` Adam steps on ``theta`` with
``sweeps`` block sweeps on every ``gamma_r`` (all sets batched). The permutations are integer data:
the gradient flows through the matched cost only (Danskin), the matching under ``stop_gradient``.

A mini-batch is one jitted call (``lax.scan`` inside), so the loop compiles once whatever the
number of mini-batches. The state is data (`TrainState`); checkpoints are written
atomically after every ``checkpoint_every`` mini-batches and at the end, and `train`
resumes from one exactly (same keys, same result to float32 round-off).

The package holds one concept per module: `ksdp.training.config` (`TrainConfig`, `TrainState`),
`ksdp.training.losses`, `ksdp.training.step` (one mini-batch), `ksdp.training.checkpoint` and
`ksdp.training.loop` (`train`); their public names are all importable from ``ksdp.training``.
"""

from ksdp.training.checkpoint import (
    CHECKPOINT_FORMAT,
    MAX_STEPS,
    CheckpointError,
    CheckpointMismatch,
    fingerprint,
    generator_from_checkpoint,
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
    initial_perm,
    optimizer,
)
from ksdp.training.loop import TrainResult, batch_means, final_loss, fresh_batch_loss, interactive, train
from ksdp.training.losses import (
    RADIAL_MAX_POINTS,
    SELF_CAP,
    debiased_objective,
    fit_cost,
    loss_fn,
    radial_objective,
    radial_quantiles,
)
from ksdp.training.step import mesh_split, train_minibatch

__all__ = [
    "CHECKPOINT_FORMAT",
    "DIVERGED",
    "MAX_STEPS",
    "PROGRESS_LINES",
    "RADIAL_MAX_POINTS",
    "SELF_CAP",
    "CheckpointError",
    "CheckpointMismatch",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingError",
    "batch_means",
    "check_inputs",
    "debiased_objective",
    "final_loss",
    "fingerprint",
    "fit_cost",
    "fresh_batch_loss",
    "generator_from_checkpoint",
    "init_state",
    "initial_perm",
    "interactive",
    "load_checkpoint",
    "loss_fn",
    "mesh_split",
    "optimizer",
    "radial_objective",
    "radial_quantiles",
    "save_checkpoint",
    "train",
    "train_minibatch",
    "training_metadata",
]
