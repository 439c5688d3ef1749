"""Figures and widgets: image grids, attention overlays, rollout, position similarity, distances.

Every function returns its matplotlib Figure so notebooks can show it and save it for the report
(``vislearn.save_figure``). ``explorer`` builds an ipywidgets UI when a person is at the notebook,
and falls back to a static figure under batch execution (papermill, nbval), where no front end can
render widgets: set ``$VISLEARN_STATIC=1`` (the runner and the test script do) or pass
``interactive=False``. Built in notebook 01.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..results import STATIC_ENV


def _to_display(img) -> np.ndarray:
    """(C, H, W) or (H, W[, C]) tensor/array -> (H, W) or (H, W, 3) array for imshow."""
    a = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return a


def show_image(ax, img, title: str | None = None, cmap: str = "gray") -> None:
    ax.imshow(_to_display(img), cmap=cmap)
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def image_grid(images: Sequence, titles: Sequence[str] | None = None, ncols: int = 8, size: float = 1.4):
    """A grid of images with optional titles."""
    n = len(images)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.25)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            show_image(ax, images[i], titles[i] if titles else None)
        else:
            ax.axis("off")
    fig.tight_layout()
    return fig


def overlay(ax, img, heat, title: str | None = None, alpha: float = 0.6, cmap: str = "inferno") -> None:
    """Show ``img`` with a (g, g) heat map stretched over it (each patch a visible square)."""
    a = _to_display(img)
    h, w = a.shape[:2]
    ax.imshow(a, cmap="gray", extent=(0, w, h, 0))
    heat = heat.detach().cpu().numpy() if isinstance(heat, torch.Tensor) else np.asarray(heat)
    ax.imshow(heat, cmap=cmap, alpha=alpha, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def attention_heads_figure(images, maps: torch.Tensor, row_labels: Sequence[str], size: float = 1.5,
                           title: str | None = None):
    """Rows of per-head maps: ``maps`` (rows, h, g, g); ``images`` one per row (or a single image)."""
    rows, heads = maps.shape[:2]
    fig, axes = plt.subplots(rows, heads + 1, figsize=((heads + 1) * size, rows * size + 0.3), squeeze=False)
    for r in range(rows):
        img = images[r] if isinstance(images, (list, tuple)) or getattr(images, "ndim", 0) == 4 else images
        show_image(axes[r, 0], img)
        axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
        for h in range(heads):
            overlay(axes[r, h + 1], img, maps[r, h], title=f"head {h}" if r == 0 else None)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95) if title else None)
    return fig


def outline(ax, mask, color: str = "cyan", lw: float = 1.2) -> None:
    """Draw the boundary of a boolean (H, W) mask on ``ax`` (pixel centres, as ``imshow`` places them)."""
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.any() and not m.all():
        ax.contour(m.astype(float), levels=[0.5], colors=[color], linewidths=lw)


def overlap_image(pred, truth) -> np.ndarray:
    """Two boolean (H, W) masks as one RGB image: red = predicted only, green = truth only, yellow = both."""
    out = np.zeros((*truth.shape, 3))
    out[..., 0] = _to_display(pred)
    out[..., 1] = _to_display(truth)
    return out


def segmentation_figure(images, cls_maps: torch.Tensor, pred: torch.Tensor, truth: torch.Tensor,
                        scores: torch.Tensor, row_labels: Sequence[str], size: float = 1.6,
                        title: str | None = None):
    """Attention as segmentation, one row per image: the image with its ground truth (cyan), then per
    head the [CLS] attention with the head's thresholded mask (white) and its Jaccard; the best head's
    title is bold, and the last column is the best head's mask next to the ground truth.

    Args:
        images: (R, 3, H, W) in [0, 1] (or a list of R images).
        cls_maps: (R, h, g, g) attention over the patch grid.
        pred: (R, h, H, W) bool masks; truth: (R, H, W) bool; scores: (R, h) Jaccard per head.
    """
    rows, heads = cls_maps.shape[:2]
    fig, axes = plt.subplots(rows, heads + 2, figsize=((heads + 2) * size, rows * size + 0.4), squeeze=False)
    for r in range(rows):
        show_image(axes[r, 0], images[r], "image, ground truth" if r == 0 else None)
        outline(axes[r, 0], truth[r])
        axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
        best = int(scores[r].argmax())
        for h in range(heads):
            ax = axes[r, h + 1]
            overlay(ax, images[r], cls_maps[r, h])
            outline(ax, pred[r, h], color="white", lw=1.0)
            ax.set_title(f"head {h}: J={scores[r, h]:.2f}", fontsize=8, fontweight="bold" if h == best else "normal")
        ax = axes[r, -1]
        ax.imshow(overlap_image(pred[r, best], truth[r]))
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"best head {best}: J={scores[r, best]:.2f}" if r else
                     f"yellow: both, red: mask\ngreen: truth; J={scores[r, best]:.2f}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96) if title else None)
    return fig


def position_similarity_figure(sim: torch.Tensor, size: float = 5.0):
    """The ViT paper's Figure 7 (center): one small map per patch of its cosine similarity to all others."""
    g = sim.shape[0]
    fig, axes = plt.subplots(g, g, figsize=(size, size))
    for i in range(g):
        for j in range(g):
            axes[i, j].imshow(sim[i, j].cpu().numpy(), cmap="viridis", vmin=-1, vmax=1)
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
    for i in range(g):
        axes[i, 0].set_ylabel(str(i + 1), fontsize=7)
        axes[-1, i].set_xlabel(str(i + 1), fontsize=7)
    fig.suptitle("cosine similarity of position embeddings (row, column of the patch)", fontsize=10)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


def attention_distance_figure(distances: torch.Tensor, uniform: float | None = None):
    """Mean attention distance per head (dots) against depth: (depth, heads) in pixels.

    ``uniform``: the distance of attention spread evenly over all patches, drawn as a reference:
    heads well below it look locally, heads near it look everywhere.
    """
    d = distances.cpu().numpy()
    blocks = np.arange(1, d.shape[0] + 1)
    fig, ax = plt.subplots(figsize=(4.8, 3.3))
    for h in range(d.shape[1]):
        ax.scatter(blocks, d[:, h], s=18, label=f"head {h}")
    ax.plot(blocks, d.mean(1), "k--", lw=1, label="mean")
    if uniform is not None:
        ax.axhline(uniform, color="gray", lw=1, ls=":", label="uniform attention")
    ax.set_ylim(0, max(d.max(), uniform or 0) * 1.15)
    ax.set(xlabel="block (depth)", ylabel="mean attention distance (px)", title="how far heads look")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    return fig


def is_interactive() -> bool:
    """True when widgets can be shown: inside a Jupyter kernel, and not under batch execution."""
    if os.environ.get(STATIC_ENV, "").strip() not in ("", "0"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def explorer(draw: Callable[..., plt.Figure], controls: dict[str, Sequence], *, interactive: bool | None = None,
             static: Sequence[dict] | None = None):
    """An ipywidgets explorer over ``draw(**choice)``, or static figures when no front end is attached.

    Args:
        draw: returns a Figure for one choice of the controls (keyword arguments).
        controls: name -> allowed values (a dropdown or slider each).
        interactive: force widgets (True) or static (False); None: ``is_interactive()``.
        static: the choices drawn in the static fallback (default: the first value of each control); the
            live widget opens on the first of them, so both show the same case first.
    Returns:
        the widget, or the list of static figures.
    """
    interactive = is_interactive() if interactive is None else interactive
    if interactive:
        import ipywidgets as widgets
        from IPython.display import display

        def _show(**choice):
            fig = draw(**choice)
            display(fig)
            plt.close(fig)

        start = {name: values[0] for name, values in controls.items()}
        start.update({k: v for k, v in (static or [{}])[0].items()                    # open on the static view's case
                      if k in controls and v in list(controls[k])})
        kwargs = {name: widgets.Dropdown(options=list(values), value=start[name], description=name)
                  if not _is_int_range(values)
                  else widgets.IntSlider(min=values[0], max=values[-1], value=start[name], description=name)
                  for name, values in controls.items()}
        return widgets.interactive(_show, **kwargs)
    choices = static or [{name: values[0] for name, values in controls.items()}]
    print("(static view: run this notebook in JupyterLab for the interactive explorer)")
    return [draw(**choice) for choice in choices]


def _is_int_range(values: Sequence) -> bool:
    return isinstance(values, range) and values.step == 1 and len(values) > 1


def scaling_figure(rows: Sequence[Mapping[str, Any]], min_tokens: float, reference: str = "XCA"):
    """Time and peak memory against N on log-log axes, with the fitted slopes and the crossovers.

    Points are the measurements, lines the power laws fitted on N >= ``min_tokens`` (shaded), and
    dotted verticals mark where each layer becomes slower than ``reference``.
    """
    from ..analysis.scaling import crossover, fit_power_law, series

    layers = list(dict.fromkeys(r["layer"] for r in rows))
    colors = dict(zip(layers, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    panels = [("ms", "forward time per call (ms, median)")]
    if all(r["peak_mib"] is not None for r in rows):
        panels.append(("peak_mib", "peak activation memory (MiB)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    n_ref, t_ref = series(rows, reference, "ms")
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for layer in layers:
            n, y = series(rows, layer, key)
            fit = fit_power_law(n, y, min_tokens)
            long = n[n >= min_tokens]
            ax.loglog(n, y, "o", ms=4, color=colors[layer], label=f"{layer}: slope {fit.slope:.2f}")
            ax.loglog(long, fit(long), "-", lw=1.5, alpha=0.7, color=colors[layer])
        ax.axvspan(min_tokens, max(r["tokens"] for r in rows), color="0.5", alpha=0.08, lw=0)
        if key == "ms":
            others = [layer for layer in layers if layer != reference]
            for k, layer in enumerate(others):
                n, t = series(rows, layer, "ms")
                cross = crossover(n, t, t_ref)
                if cross is not None:   # labels alternate sides of their line, so close crossovers stay readable
                    ax.axvline(cross, color=colors[layer], ls=":", lw=1.2)
                    ax.annotate(f"N={cross:.0f}", (cross, 0.03), xycoords=("data", "axes fraction"), rotation=90,
                                va="bottom", ha="right" if k % 2 == 0 else "left", fontsize=7, color=colors[layer])
        ax.set(xlabel="tokens N", ylabel=label)
        ax.grid(alpha=0.3, which="both", lw=0.4)
        ax.legend(fontsize=7, loc="upper left", title=f"fit on N >= {min_tokens:g} (shaded)", title_fontsize=7)
    fig.tight_layout()
    return fig
