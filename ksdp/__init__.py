"""ksdp: Keller--Segel chemotaxis by a regularised interacting particle method, learned with DeepParticle.

Doors (thin entry points over pure functions):

* :func:`simulate`, :func:`sweep`: the IPM (:mod:`ksdp.ipm`).
* :func:`make_dataset`, :func:`save_dataset`, :func:`load_dataset`: IPM datasets (:mod:`ksdp.data`).
* :func:`w2`: the 2-Wasserstein distance by exact / block assignment (:mod:`ksdp.transport`).
* :func:`train`, :func:`generate`: DeepParticle (:mod:`ksdp.training`, :mod:`ksdp.model`).

Every door that can run on several devices takes ``mesh=`` (:mod:`ksdp.parallel`).
"""
__version__ = "0.1.0"

from ksdp import flows, kernels  # noqa: E402
from ksdp.data import Dataset, load_dataset, make_dataset, save_dataset  # noqa: E402
from ksdp.ipm import (NonFiniteError, Params, Trajectory, pair_sum, second_moment, simulate, sweep,  # noqa: E402
                      uniform_ball, velocity)
from ksdp import transport  # noqa: E402
from ksdp.transport import w2  # noqa: E402
from ksdp import model  # noqa: E402
from ksdp.model import ModelConfig, generate, make_config  # noqa: E402
from ksdp.training import TrainConfig, train  # noqa: E402
from ksdp import parallel  # noqa: E402
