"""Figures of the experiments (PNG, matplotlib Agg): projections DP vs IPM, second moments, loss."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ksdp import _io  # noqa: E402

AXES = "xyz"


def _save(fig, path):
    _io.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90, bbox_inches="tight"))
    plt.close(fig)


def _bounds(arrays, plane):
    pts = np.concatenate([a[:, list(plane)] for a in arrays])
    lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
    pad = 0.1 * (hi - lo) + 1e-3
    return [[lo[0] - pad[0], hi[0] + pad[0]], [lo[1] - pad[1], hi[1] + pad[1]]]


def projections(path, cases, d, title):
    """``cases``: list of ``(label, ipm [n, d], dp [m, d])``; 2D histograms, IPM above DP.

    2D: one column per case. 3D: rows are (case, IPM/DP), columns the xy, xz, yz planes.
    """
    planes = [(0, 1)] if d == 2 else [(0, 1), (0, 2), (1, 2)]
    if d == 2:
        fig, axs = plt.subplots(2, len(cases), figsize=(3.2 * len(cases), 6.2), squeeze=False)
        grid = [
            [
                (axs[0, c], cases[c][1], f"IPM {cases[c][0]}", planes[0]),
                (axs[1, c], cases[c][2], f"DP {cases[c][0]}", planes[0]),
            ]
            for c in range(len(cases))
        ]
    else:
        fig, axs = plt.subplots(2 * len(cases), 3, figsize=(9.5, 3.1 * 2 * len(cases)), squeeze=False)
        grid = [
            [
                (axs[2 * c + s, k], cases[c][1 + s], f"{'IPM' if s == 0 else 'DP'} {cases[c][0]}", pl)
                for s in (0, 1)
                for k, pl in enumerate(planes)
            ]
            for c in range(len(cases))
        ]
    for c, panels in enumerate(grid):
        for ax, pts, label, pl in panels:
            rng = _bounds([cases[c][1], cases[c][2]], pl)
            ax.hist2d(pts[:, pl[0]], pts[:, pl[1]], bins=70, range=rng, density=True, cmap="viridis")
            ax.set_title(label, fontsize=8)
            ax.set_xlabel(AXES[pl[0]], fontsize=8)
            ax.set_ylabel(AXES[pl[1]], fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def second_moment(path, x_ipm, m2_ipm, x_dp, m2_dp, xlabel, title, analytic=None, logx=False, marks=None):
    """m2 against the parameter: IPM reference points, DP curve, optional analytic line."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(x_dp, m2_dp, "-", label="DeepParticle (generated)")
    ax.plot(x_ipm, m2_ipm, "o", label="IPM (reference)")
    if analytic is not None:
        ax.plot(analytic[0], analytic[1], "k--", lw=1, label=analytic[2])
    for value, label in marks or []:
        ax.axvline(value, color="gray", lw=0.7, ls=":")
        ax.text(value, ax.get_ylim()[1], label, fontsize=7, rotation=90, va="top")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("second moment $m_2$")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)


def loss(path, history, title):
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    h = np.asarray(history)
    ax.semilogy(np.arange(1, len(h) + 1), h, lw=0.5)
    ax.set_xlabel("Adam step")
    ax.set_ylabel("training loss (eq. 14, mean over sets)")
    ax.set_title(title, fontsize=10)
    _save(fig, path)
