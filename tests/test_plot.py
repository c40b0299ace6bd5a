"""`ksdp.plot`: every figure function takes data and returns a Figure; `save` writes a PNG atomically."""

import numpy as np
from matplotlib.figure import Figure

from ksdp import plot


def test_figures_are_returned_and_saved(tmp_path):
    rng = np.random.default_rng(0)
    for d in (2, 3):
        cases = [(f"A = {a}", rng.normal(size=(500, d)), rng.normal(size=(800, d)) * a) for a in (1.0, 2.0)]
        fig = plot.projections(cases, d, "test")
        assert isinstance(fig, Figure)
        # one IPM and one DP panel per case (2D: per column; 3D: three planes per row), each with an image
        assert sum(len(ax.images) for ax in fig.axes) == 2 * len(cases) * (1 if d == 2 else 3)
    m2 = plot.second_moment([1, 2], [0.5, 0.6], [0.01, 0.01], [1, 1.5, 2], [0.5, 0.55, 0.6], "A", "m2", logx=True)
    loss = plot.loss(np.linspace(1.0, 0.1, 100), "loss", floor=0.05)
    for name, f in (("m2", m2), ("loss", loss)):
        assert isinstance(f, Figure)
        plot.save(f, tmp_path / f"{name}.png")
        assert open(tmp_path / f"{name}.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
