"""The paper's five experiments (Section 4, ``SPEC.md`` section 4) at three scales.

Each experiment learns the dependence on one physical parameter ``eta``: the time ``t`` (at a fixed
flow amplitude) or the flow amplitude ``A`` (at a fixed time, fed to the network as ``log10 A``).
Values are split into training values, held-out values between them, and one extrapolated value.
All times are whole multiples of ``dt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Scale:
    """Sizes of one run: particles, samples per set, training schedule, evaluation size."""

    n_particles: int
    n_samples: int
    n_steps: int
    resample_every: int
    renew_every: int
    sweeps: int
    initial_sweeps: int
    n_eval: int
    learning_rate: float = 3e-3
    width: int = 30
    depth: int = 5


SCALES = {
    # seconds per experiment, for the tests
    "smoke": Scale(
        n_particles=128,
        n_samples=64,
        n_steps=40,
        resample_every=20,
        renew_every=10,
        sweeps=2,
        initial_sweeps=4,
        n_eval=64,
        width=16,
        depth=2,
    ),
    # all five in under 20 minutes on a 2-core CPU
    "quick": Scale(
        n_particles=2000,
        n_samples=1000,
        n_steps=6000,
        resample_every=500,
        renew_every=50,
        sweeps=4,
        initial_sweeps=20,
        n_eval=1000,
    ),
    # the paper's settings (J = 10000, N = 2000, K = 1000, L = 200); meant for a GPU
    "paper": Scale(
        n_particles=10000,
        n_samples=2000,
        n_steps=50000,
        resample_every=1000,
        renew_every=200,
        sweeps=10,
        initial_sweeps=50,
        n_eval=2000,
        learning_rate=1e-3,
    ),
}


@dataclass(frozen=True)
class Experiment:
    name: str
    section: str
    summary: str
    d: int
    flow: str
    eta: str  # "time" or "amplitude"
    fixed: float  # the amplitude of a time experiment, the time of an amplitude experiment
    grids: dict = field(default_factory=dict)  # scale -> (train, held_out, extrapolated)

    def values(self, scale: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        train, held, extra = self.grids.get(scale, self.grids["quick"])
        return (
            np.round(np.asarray(train, float), 6),
            np.round(np.asarray(held, float), 6),
            np.round(np.asarray(extra, float), 6),
        )


def _amplitudes(step):
    return [round(10**e, 4) for e in np.arange(0, 2 + 1e-9, step)]


_AMP_GRIDS = {
    "smoke": ([1.0, 10.0, 100.0], [3.1623], [150.0]),
    "quick": (_amplitudes(0.4), [3.9811, 25.1189], [150.0]),
    "paper": (_amplitudes(0.2), [3.9811, 25.1189], [150.0]),
}

EXPERIMENTS = {
    e.name: e
    for e in [
        Experiment(
            "ks2d-time",
            "4.1",
            "2D, no flow: aggregation towards blow-up (t* = 0.125), eta = t",
            d=2,
            flow="none",
            eta="time",
            fixed=0.0,
            grids={
                "smoke": ([0.005, 0.01, 0.02], [0.015], [0.025]),
                "quick": ([0.0125 * k for k in range(1, 9)], [0.019, 0.044, 0.069, 0.094], [0.11]),
                "paper": ([0.0125 * k for k in range(1, 9)], [0.019, 0.044, 0.069, 0.094], [0.11]),
            },
        ),
        Experiment(
            "laminar2d-amplitude",
            "4.2",
            "2D laminar flow (19), t = 0.02: V shape growing with A, eta = log10 A",
            d=2,
            flow="laminar2d",
            eta="amplitude",
            fixed=0.02,
            grids=_AMP_GRIDS,
        ),
        Experiment(
            "laminar2d-time",
            "4.2",
            "2D laminar flow (19), A = 100: aggregation under shear, eta = t",
            d=2,
            flow="laminar2d",
            eta="time",
            fixed=100.0,
            grids={
                "smoke": ([0.0, 0.01, 0.02], [0.005], [0.025]),
                "quick": ([0.01 * k for k in range(0, 11)], [0.005, 0.055, 0.095], [0.11]),
                "paper": ([0.01 * k for k in range(0, 11)], [0.005, 0.055, 0.095], [0.11]),
            },
        ),
        Experiment(
            "laminar3d-amplitude",
            "4.3",
            "3D laminar flow (20), t = 0.02: V shape in xy and xz, radial in yz",
            d=3,
            flow="laminar3d",
            eta="amplitude",
            fixed=0.02,
            grids=_AMP_GRIDS,
        ),
        Experiment(
            "kolmogorov3d-amplitude",
            "4.3",
            "3D Kolmogorov flow (21), t = 0.1: second moment grows with A",
            d=3,
            flow="kolmogorov3d",
            eta="amplitude",
            fixed=0.1,
            grids={
                "smoke": ([1.0, 10.0, 100.0], [3.1623], [150.0]),
                "quick": (_amplitudes(0.4), [3.9811, 25.1189], [150.0]),
                "paper": (_amplitudes(0.2), [3.9811, 25.1189], [150.0]),
            },
        ),
    ]
}
