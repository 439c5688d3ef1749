"""Figures of notebook 08_ssl_watermarking: the cone, the FPR curve, marking step by step, robustness.

Each function returns its matplotlib Figure (the notebook saves and shows it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def _img(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def cone_figure(cos_theta: float, points: np.ndarray, key: np.ndarray) -> plt.Figure:
    """The double cone |x . a| > |x| cos(theta): 2-D (left) and 3-D (right) with random Gaussian points
    coloured by inside/outside. ``points``: (N, 3); ``key``: (3,) unit vector."""
    theta = math.acos(cos_theta)
    fig = plt.figure(figsize=(10, 4.4))
    ax = fig.add_subplot(1, 2, 1)
    p2 = points[:, :2]
    k2 = key[:2] / np.linalg.norm(key[:2]) if np.linalg.norm(key[:2]) > 1e-6 else np.array([1.0, 0.0])
    inside2 = np.abs(p2 @ k2) > np.linalg.norm(p2, axis=1) * cos_theta
    ax.scatter(*p2[~inside2].T, s=6, c="0.6", label="outside")
    ax.scatter(*p2[inside2].T, s=6, c="tab:red", label="inside (detected)")
    phi = math.atan2(k2[1], k2[0])
    r = np.abs(p2).max() * 1.1
    for sgn in (1, -1):
        for d in (theta, -theta):
            a = phi + d + (0 if sgn > 0 else math.pi)
            ax.plot([0, r * math.cos(a)], [0, r * math.sin(a)], "k--", lw=1)
    ax.arrow(0, 0, 2 * k2[0], 2 * k2[1], width=0.04, color="tab:blue")
    ax.set_aspect("equal")
    ax.set_title(f"2-D: the double cone around the key a\nhalf-angle {math.degrees(theta):.0f}°, "
                 f"{inside2.mean():.0%} of random points inside", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax = fig.add_subplot(1, 2, 2, projection="3d")
    u = points / np.linalg.norm(points, axis=1, keepdims=True)
    inside = np.abs(u @ key) > cos_theta
    ax.scatter(*u[~inside].T, s=3, c="0.7")
    ax.scatter(*u[inside].T, s=5, c="tab:red")
    # the two circles where the cone meets the unit sphere
    e1 = np.cross(key, [1, 0, 0] if abs(key[0]) < 0.9 else [0, 1, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(key, e1)
    t = np.linspace(0, 2 * math.pi, 100)
    for sgn in (1, -1):
        circle = sgn * cos_theta * key[:, None] + math.sin(theta) * (np.outer(e1, np.cos(t)) + np.outer(e2, np.sin(t)))
        ax.plot(*circle, "k-", lw=1.2)
    ax.quiver(0, 0, 0, *key, color="tab:blue", lw=2)
    ax.set_title(f"3-D: directions on the sphere,\n{inside.mean():.0%} inside the two caps", fontsize=9)
    ax.set_box_aspect((1, 1, 1))
    fig.tight_layout()
    return fig


def fpr_figure(cosines: np.ndarray, curves: Mapping[int, np.ndarray], monte_carlo: Mapping[int, np.ndarray],
               fpr: float, angles: Mapping[int, float]) -> plt.Figure:
    """FPR against cos(theta) per dimension D: closed form (lines) and Monte Carlo (dots); the threshold
    cosine at ``fpr`` for each D marked."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (d, curve) in enumerate(curves.items()):
        color = f"C{i}"
        ax.semilogy(cosines, curve, color=color, label=f"D = {d}: closed form")
        if d in monte_carlo:
            mc = monte_carlo[d]
            ok = mc > 0
            ax.semilogy(cosines[ok], mc[ok], "o", ms=4, color=color, mfc="none", label=f"D = {d}: Monte Carlo")
        if d in angles:
            ax.axvline(math.cos(angles[d]), color=color, ls=":", lw=1)
    ax.axhline(fpr, color="k", lw=0.8, ls="--")
    ax.text(0.99, fpr * 1.5, f"FPR {fpr:g}", ha="right", fontsize=8)
    ax.set_ylim(1e-9, 1.5)
    ax.set_xlabel("cos θ (the cone's threshold)")
    ax.set_ylabel("P(|cos(u, a)| > cos θ), u uniform")
    ax.set_title("false-positive rate of the cone detector", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def marking_figure(history: Mapping[str, Sequence[float]], original: torch.Tensor, marked: torch.Tensor,
                   heat: torch.Tensor, magnify: float = 10.0) -> plt.Figure:
    """Top: loss, PSNR and the objective's score per step, and the SSIM heat map (1 where the images agree
    locally, lower where the change is large next to the local texture). Bottom: original, marked, the
    difference magnified around grey, and the amplitude of the change (mean |x - x0| over channels)."""
    fig, axes = plt.subplots(2, 4, figsize=(12, 6))
    keys = [k for k in history if k not in ("loss", "psnr")]
    for ax, k in zip(axes[0], ["loss", "psnr"] + keys, strict=False):
        ax.plot(history[k])
        ax.set_title(k if k != "psnr" else "PSNR (dB)", fontsize=9)
        ax.set_xlabel("step")
    diff = (marked - original)
    h = heat.detach().cpu().numpy()
    im = axes[0, 3].imshow(h, cmap="magma", vmin=float(np.quantile(h, 0.01)), vmax=1)
    axes[0, 3].set_title("SSIM heat map\n(marked vs original)", fontsize=9)
    fig.colorbar(im, ax=axes[0, 3], fraction=0.046)
    axes[1, 0].imshow(_img(original))
    axes[1, 0].set_title("original", fontsize=9)
    axes[1, 1].imshow(_img(marked))
    axes[1, 1].set_title("marked", fontsize=9)
    axes[1, 2].imshow(_img(0.5 + magnify * diff))
    axes[1, 2].set_title(f"difference x{magnify:g} (grey = 0)", fontsize=9)
    amplitude = diff.abs().mean(0).detach().cpu().numpy() * 255
    im = axes[1, 3].imshow(amplitude, cmap="viridis")
    axes[1, 3].set_title("where the change goes\n|x - x0|, 8-bit levels", fontsize=9)
    fig.colorbar(im, ax=axes[1, 3], fraction=0.046)
    for ax in (*axes[1], axes[0, 3]):
        ax.axis("off")
    fig.tight_layout()
    return fig


def robustness_figure(curves: Mapping[str, Sequence[dict]], ylabel: str, title: str) -> plt.Figure:
    """One panel per attack: value against strength, one line per method (``curves`` method -> rows of
    ``analysis.watermark_eval.robustness``)."""
    attacks = list(dict.fromkeys(r["attack"] for rows in curves.values() for r in rows if r["attack"] != "none"))
    cols = 4
    nrows = max(1, math.ceil(len(attacks) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(12, 2.7 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, attacks, strict=False):
        for i, (method, rows) in enumerate(curves.items()):
            pts = [(r["strength"], r["value"]) for r in rows if r["attack"] == name]
            if pts:
                x, y = zip(*pts, strict=True)
                style = ("o-", "s--", "^:", "D-.")[i % 4]      # lines that coincide (e.g. all at 0) stay visible
                ax.plot(x, y, style, ms=7 - 1.5 * (i % 4), mfc="none", color=f"C{i}", label=method)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel(ylabel, fontsize=8)
    for ax in list(axes.flat)[len(attacks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def attacked_figure(marked: torch.Tensor, attacked: torch.Tensor, text: str, bits: str | None = None) -> plt.Figure:
    """The marked image, the attacked one, and the detector's answer written under it."""
    fig, axes = plt.subplots(1, 2, figsize=(7, 4.4))
    axes[0].imshow(_img(marked))
    axes[0].set_title("marked", fontsize=9)
    axes[1].imshow(_img(attacked))
    axes[1].set_title(text, fontsize=9)
    for ax in axes:
        ax.axis("off")
    if bits:
        fig.text(0.5, 0.01, bits, ha="center", va="bottom", family="monospace", fontsize=8)
    fig.tight_layout(rect=(0, 0.13 if bits else 0, 1, 1))
    return fig
