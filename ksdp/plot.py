"""Figures of particle clouds and training runs: projections DP vs IPM, second moments, loss.

Every function takes data and returns a `matplotlib.figure.Figure`, made without pyplot, so importing
this module leaves the caller's plotting backend (a notebook's, say) as it was. In a notebook the
figure shows when it is the cell's value; `save` writes it to a PNG file atomically (the experiments'
command line saves its figures this way).

Projections: the IPM panel and the generated panel of one value share their bins and their colour
scale (one density scale per value), so a difference in colour is a difference in density; row
labels say which is which, so titles stay short.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ksdp import storage

AXES = "xyz"
BINS = 70


def save(fig: Figure, path, dpi: int = 90) -> None:
    """Writes ``fig`` to ``path`` as PNG, atomically (the file is the old one or the whole new one)."""
    storage.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"))


def _bounds(arrays, plane):
    pts = np.concatenate([a[:, list(plane)] for a in arrays])
    lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
    pad = 0.1 * (hi - lo) + 1e-3
    return [[lo[0] - pad[0], hi[0] + pad[0]], [lo[1] - pad[1], hi[1] + pad[1]]]


def _pair(ax_ipm, ax_dp, ipm, dp, plane):
    """Both histograms of one value and plane on the same bins and the same colour scale."""
    rng = _bounds([ipm, dp], plane)
    hs = [np.histogram2d(p[:, plane[0]], p[:, plane[1]], bins=BINS, range=rng, density=True)[0] for p in (ipm, dp)]
    vmax = max(float(h.max()) for h in hs) or 1.0
    extent = [rng[0][0], rng[0][1], rng[1][0], rng[1][1]]
    for ax, h in ((ax_ipm, hs[0]), (ax_dp, hs[1])):
        im = ax.imshow(h.T, origin="lower", extent=extent, aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax)
        ax.set_xlabel(AXES[plane[0]], fontsize=8, labelpad=1)
        ax.set_ylabel(AXES[plane[1]], fontsize=8, labelpad=1)
        ax.tick_params(labelsize=6)
    return im


def projections(cases, d: int, title: str = "") -> Figure:
    """2D histograms of IPM and generated clouds, IPM above DP, one density scale per case.

    Args:
      cases: list of ``(label, ipm [n, d], dp [m, d])``, e.g. ``("A = 10", ipm_particles, g.sample(key, 10.0, n))``.
      d: space dimension, 2 or 3.
      title: the figure's title.

    2D: one column per case, rows IPM and DP. 3D: one row per case and source (IPM, DP), columns the
    xy, xz and yz planes.
    """
    if d == 2:
        fig = Figure(figsize=(2.9 * len(cases), 5.6), layout="constrained")
        axs = fig.subplots(2, len(cases), squeeze=False)
        for c, (label, ipm, dp) in enumerate(cases):
            _pair(axs[0, c], axs[1, c], ipm, dp, (0, 1))
            axs[0, c].set_title(label, fontsize=9)
        axs[0, 0].annotate("IPM", (-0.45, 0.5), xycoords="axes fraction", rotation=90, va="center", fontsize=10)
        axs[1, 0].annotate(
            "DeepParticle", (-0.45, 0.5), xycoords="axes fraction", rotation=90, va="center", fontsize=10
        )
    else:
        planes = [(0, 1), (0, 2), (1, 2)]
        fig = Figure(figsize=(8.4, 2.6 * 2 * len(cases)), layout="constrained")
        axs = fig.subplots(2 * len(cases), 3, squeeze=False)
        for c, (label, ipm, dp) in enumerate(cases):
            for k, plane in enumerate(planes):
                _pair(axs[2 * c, k], axs[2 * c + 1, k], ipm, dp, plane)
            axs[2 * c, 0].annotate(
                f"IPM\n{label}",
                (-0.5, 0.5),
                xycoords="axes fraction",
                rotation=90,
                va="center",
                ha="center",
                fontsize=9,
            )
            axs[2 * c + 1, 0].annotate(
                f"DP\n{label}", (-0.5, 0.5), xycoords="axes fraction", rotation=90, va="center", ha="center", fontsize=9
            )
        for k, plane in enumerate(planes):
            axs[0, k].set_title(f"{AXES[plane[0]]}{AXES[plane[1]]} plane", fontsize=9)
    fig.suptitle(title + "\n(each value: IPM and DP on the same bins and colour scale)", fontsize=9)
    return fig


def second_moment(
    x_ipm, m2_ipm, m2_ipm_se, x_dp, m2_dp, xlabel, title, curves=(), logx=False, marks=None, n_runs=3
) -> Figure:
    """m2 against the parameter: IPM points (the mean of ``n_runs`` runs, 2 standard errors), DP curve,
    optional reference curves."""
    fig = Figure(figsize=(5.8, 4.1), layout="constrained")
    ax = fig.subplots()
    ax.plot(x_dp, m2_dp, "-", label="DeepParticle (generated)")
    ax.errorbar(
        x_ipm, m2_ipm, yerr=2 * np.asarray(m2_ipm_se), fmt="o", ms=4, capsize=2, label=f"IPM ({n_runs} runs, 2 SE)"
    )
    for x, y, label in curves:
        ax.plot(x, y, "--", lw=1, label=label)
    for value, label in marks or []:
        ax.axvline(value, color="gray", lw=0.7, ls=":")
        ax.annotate(
            label, (value, 1.0), xycoords=("data", "axes fraction"), fontsize=7, rotation=90, va="top", ha="right"
        )
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("second moment $m_2$")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return fig


def loss(history, title: str = "", floor=None) -> Figure:
    """The training loss per Adam step, with the squared W2 floor of the mini-batch size."""
    fig = Figure(figsize=(5.8, 3.6), layout="constrained")
    ax = fig.subplots()
    h = np.asarray(history)
    ax.semilogy(np.arange(1, len(h) + 1), h, lw=0.5, label="training loss")
    if floor is not None and np.isfinite(floor):
        ax.axhline(
            floor, color="k", ls="--", lw=1, label=f"W2$^2$ between two independent samples of one set: {floor:.3g}"
        )
    ax.set_xlabel("Adam step")
    ax.set_ylabel("loss (eq. 14, mean over sets)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return fig
