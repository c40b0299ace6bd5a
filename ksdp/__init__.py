"""ksdp: Keller--Segel chemotaxis by a regularised interacting particle method, learned with DeepParticle.

Doors (thin entry points over pure functions):

* `simulate`, `sweep`: the IPM (`ksdp.ipm`; its drift direct or on a particle mesh, `ksdp.drifts`).
* `make_dataset`, `save_dataset`, `load_dataset`: IPM datasets (`ksdp.data`).
* `w2`: the 2-Wasserstein distance with a certified gap (exact for small N, an auction above; `ksdp.wasserstein`).
* `train`, `generate`: DeepParticle (`ksdp.training`, `ksdp.model`).
* `Generator`, `load_generator`, `pretrained`: learnt maps to keep, load and sample (`ksdp.generator`).

Every door that can run on several devices takes ``mesh=`` (`ksdp.parallel`).
"""

from ksdp import drifts, flows, initial, kernels, model, parallel, particle_mesh, provenance, transport
from ksdp._version import __version__
from ksdp.data import Dataset, load_dataset, make_dataset, save_dataset
from ksdp.drifts import pair_sum, velocity
from ksdp.generator import Generator, GeneratorFileError, load_generator, pretrained
from ksdp.ipm import (
    NonFiniteError,
    Params,
    StepSizeWarning,
    Trajectory,
    second_moment,
    simulate,
    sweep,
    uniform_ball,
)
from ksdp.model import ModelConfig, generate, make_config
from ksdp.training import CheckpointError, CheckpointMismatch, TrainConfig, TrainingError, train
from ksdp.wasserstein import w2

__all__ = [
    "CheckpointError",
    "CheckpointMismatch",
    "Dataset",
    "Generator",
    "GeneratorFileError",
    "ModelConfig",
    "NonFiniteError",
    "Params",
    "StepSizeWarning",
    "TrainConfig",
    "TrainingError",
    "Trajectory",
    "__version__",
    "drifts",
    "flows",
    "generate",
    "initial",
    "kernels",
    "load_dataset",
    "load_generator",
    "make_config",
    "make_dataset",
    "model",
    "pair_sum",
    "parallel",
    "particle_mesh",
    "pretrained",
    "provenance",
    "save_dataset",
    "second_moment",
    "simulate",
    "sweep",
    "train",
    "transport",
    "velocity",
    "uniform_ball",
    "w2",
]
