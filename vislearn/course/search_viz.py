"""Figures of similarity search (notebook 07): brute-force cost, WarpSelect's queues, IVF cells, recall curves.

Every function takes plain arrays (what the notebook measured) and returns its matplotlib Figure, so the
notebook shows it and saves it for the report (``vislearn.save_figure``); the tests check that what is
drawn equals what was passed. Built in notebook 07_similarity_search, on top of ``vislearn.methods.search``
and ``vislearn.methods.kselect``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

IMPL_STYLE = {"ours": dict(color="tab:blue", marker="o", ls="-"),
              "faiss": dict(color="tab:orange", marker="x", ls="--")}


def _array(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def scaling_figure(panels: Sequence[Mapping], *, size: float = 4.0):
    """Log-log panels of measured seconds against a size, each with its fitted power law.

    Args:
        panels: one dict per panel: ``x`` (sizes), ``seconds``, ``fit`` (a callable x -> seconds with a
            ``slope`` attribute, e.g. ``analysis.scaling.fit_power_law``), ``xlabel``, ``title``.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size * 0.8), squeeze=False)
    for ax, p in zip(axes[0], panels, strict=True):
        x, y = np.asarray(p["x"], float), np.asarray(p["seconds"], float)
        ax.loglog(x, y * 1e3, "o", color="tab:blue", label="measured")
        xs = np.geomspace(x.min(), x.max(), 50)
        ax.loglog(xs, np.asarray(p["fit"](xs)) * 1e3, "-", color="tab:gray", label=f"fit: slope {p['fit'].slope:.2f}")
        ax.set_xlabel(p["xlabel"])
        ax.set_ylabel("milliseconds")
        ax.set_title(p.get("title", ""), fontsize=9)
        for axis in (ax.xaxis, ax.yaxis):  # ticks at 1, 2, 5 x 10^j, plain numbers: readable within one decade too
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def warp_select_trace_figure(values, entered, thresholds, merge_steps: Sequence[int], kth_exact, *, k: int, t: int,
                             lanes: int = 32):
    """WarpSelect on one small row, step by step.

    Args:
        values: (n,) the row. entered: (n,) bool, which values entered a thread queue.
        thresholds: (steps,) the warp queue's largest value when each step of ``lanes`` values was read
            (+inf before the first merge). merge_steps: the steps after which the warp merged.
        kth_exact: (n,) the k-th smallest of the first i + 1 values (the threshold of an exact, always
            up-to-date queue; +inf while fewer than k were read).
    Returns:
        three panels: the values and the thresholds over the input; the thread queues (lane x step,
        which values entered); the cumulative insertions against the exact-threshold count.
    """
    values, entered = _array(values).astype(float), _array(entered).astype(bool)
    thresholds, kth_exact = _array(thresholds).astype(float), _array(kth_exact).astype(float)
    n = len(values)
    steps = len(thresholds)
    i = np.arange(n)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), gridspec_kw={"width_ratios": [2.2, 1.2, 1.6]})
    ax = axes[0]
    ax.scatter(i[~entered], values[~entered], s=8, color="lightgray", label="rejected by the threshold")
    ax.scatter(i[entered], values[entered], s=14, color="tab:red", label="entered a thread queue")
    step_x = np.repeat(np.arange(steps) * lanes, 2)[1:]
    step_x = np.append(step_x, steps * lanes)
    step_y = np.repeat(thresholds, 2)
    finite = np.isfinite(step_y)
    ax.plot(step_x[finite], step_y[finite], color="tab:blue", lw=2, label="warp-queue threshold (WarpSelect)")
    ax.plot(i[np.isfinite(kth_exact)], kth_exact[np.isfinite(kth_exact)], color="tab:green", lw=1, ls="--",
            label=f"exact k-th smallest so far (k = {k})")
    for s in merge_steps:
        ax.axvline((s + 1) * lanes, color="tab:purple", lw=0.8, alpha=0.6)
    ax.set_xlabel("input position i (lane = i mod 32, step = i // 32); purple lines: merges")
    ax.set_ylabel("value")
    ax.set_title(f"WarpSelect, n = {n}, k = {k}, t = {t}: {int(entered.sum())} insertions, "
                 f"{len(merge_steps)} merges + the final one", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[1]
    pad = np.zeros(steps * lanes, bool)
    pad[:n] = entered
    grid = pad.reshape(steps, lanes).T.astype(int)  # (lanes, steps)
    ax.imshow(grid, cmap=ListedColormap(["whitesmoke", "tab:red"]), aspect="auto", interpolation="nearest", vmin=0,
              vmax=1)
    for s in merge_steps:
        ax.axvline(s + 0.5, color="tab:purple", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("lane (its thread queue)")
    ax.set_title(f"thread queues: red = inserted; a lane with {t} forces a merge", fontsize=9)
    ax = axes[2]
    exact_enter = values < np.where(np.isfinite(kth_exact), np.r_[np.inf, kth_exact[:-1]], np.inf)
    exact_enter[:k] = True
    ax.plot(i + 1, np.cumsum(entered), color="tab:red", label="WarpSelect (threshold lags until a merge)")
    ax.plot(i + 1, np.cumsum(exact_enter), color="tab:green", ls="--", label="exact threshold")
    ax.plot(i + 1, np.cumsum(np.minimum(1.0, k / (i + 1))), color="k", lw=0.8, ls=":",
            label=r"expected, random order: $\sum \min(1, k/i)$")
    ax.set_xlabel("values read")
    ax.set_ylabel("insertions so far")
    ax.set_title("cumulative insertions", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def insertions_figure(n_values, measured: Mapping[str, Sequence[float]], predicted, *, k: int):
    """Measured WarpSelect insertions against n for each input order, and the random-order prediction."""
    n_values = np.asarray(n_values, float)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (order, ys), c in zip(measured.items(), ("tab:blue", "tab:red", "tab:green"), strict=False):
        ax.loglog(n_values, ys, "o-", color=c, label=f"measured, {order} order")
    ax.loglog(n_values, predicted, "k--", label=r"predicted $\sum_i \min(1, k/i) \approx k(1 + \ln(n/k))$")
    ax.loglog(n_values, n_values, ":", color="gray", label="n (every value)")
    ax.set_xlabel("n (row length)")
    ax.set_ylabel("insertions into thread queues")
    ax.set_title(f"WarpSelect's work, k = {k}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def nearest_labels(grid: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (squared L2) of every point of a (..., 2) grid: the Voronoi cells."""
    d = ((grid[..., None, :] - centroids) ** 2).sum(-1)  # (..., k)
    return d.argmin(-1)


def ivf_figure(points, centroids, query, probes: Sequence[int], list_sizes, *, resolution: int = 240):
    """Left: the Voronoi cells of a coarse quantizer in 2-D, a query and the cells it probes.
    Right: the histogram of the inverted lists' sizes of the real index.

    Args:
        points: (n, 2). centroids: (nlist2d, 2). query: (2,). probes: ids of the probed cells (nearest first).
        list_sizes: (nlist,) sizes of the inverted lists of the real index.
    """
    points, centroids, query = _array(points), _array(centroids), _array(query)
    sizes = _array(list_sizes)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1.2, 1]})
    ax = axes[0]
    lo = np.minimum(points.min(0), centroids.min(0))
    hi = np.maximum(points.max(0), centroids.max(0))
    pad = 0.05 * (hi - lo)
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    grid = np.stack(np.meshgrid(xs, ys), -1)  # (res, res, 2)
    cells = nearest_labels(grid, centroids)
    probed = np.isin(cells, list(probes)).astype(float)
    ax.imshow(cells % 20, origin="lower", extent=(xs[0], xs[-1], ys[0], ys[-1]), cmap="tab20", alpha=0.35,
              aspect="auto", interpolation="nearest")
    ax.contour(xs, ys, probed, levels=[0.5], colors="k", linewidths=1.5)
    ax.scatter(points[:, 0], points[:, 1], s=2, color="k", alpha=0.3)
    ax.scatter(centroids[:, 0], centroids[:, 1], marker="x", s=25, color="k")
    ax.scatter([query[0]], [query[1]], marker="*", s=180, color="tab:red", edgecolor="k", zorder=5)
    ax.set_title(f"{len(centroids)} coarse cells (k-means on 2 PCA coordinates); the query (star) "
                 f"visits its nprobe = {len(probes)} nearest (black outline)", fontsize=8)
    ax.set_xlabel("PCA 1")
    ax.set_ylabel("PCA 2")
    ax = axes[1]
    ax.hist(sizes, bins=30, color="tab:blue")
    ax.axvline(sizes.mean(), color="k", ls="--", label=f"mean {sizes.mean():.0f}")
    ax.set_xlabel("vectors in the list")
    ax.set_ylabel("lists")
    ax.set_title(f"inverted lists of the index: {len(sizes)} cells, sizes {sizes.min()}..{sizes.max()}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def recall_curve_figure(nprobe_values, curves: Mapping[str, Mapping[str, Sequence[float]]], *, r: int = 10):
    """Recall@r against nprobe, and against queries per second, one line per implementation.

    Args:
        curves: name -> {"recall": (len(nprobe),), "qps": (len(nprobe),)}.
    """
    nprobe_values = np.asarray(nprobe_values)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, c in curves.items():
        style = IMPL_STYLE.get(name, dict(marker="o"))
        axes[0].plot(nprobe_values, c["recall"], label=name, **style)
        axes[1].plot(c["qps"], c["recall"], label=name, **style)
        for npb, q, rc in zip(nprobe_values, c["qps"], c["recall"], strict=True):
            if name == next(iter(curves)):
                axes[1].annotate(str(npb), (q, rc), fontsize=6, xytext=(3, -8), textcoords="offset points")
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("nprobe (cells visited)")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("queries per second (one thread; labels: nprobe)")
    for ax in axes:
        ax.set_ylabel(f"recall@{r}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_title("IVF-PQ: more cells, more recall", fontsize=9)
    axes[1].set_title("and fewer queries per second", fontsize=9)
    fig.tight_layout()
    return fig


def neighbours_figure(rows: Sequence[tuple[str, np.ndarray, Sequence[str]]], *, query_images=None,
                      title: str | None = None, size: float = 1.1):
    """Image grids of neighbourhoods: one row per (label, images (k, 28, 28), titles), optionally with a
    query image first on each row (``query_images``: one per row, or None)."""
    k = max(len(imgs) for _, imgs, _ in rows)
    extra = 1 if query_images is not None else 0
    fig, axes = plt.subplots(len(rows), k + extra, figsize=(size * (k + extra), size * 1.25 * len(rows) + 0.4),
                             squeeze=False)
    for r, (label, imgs, titles) in enumerate(rows):
        if extra:
            ax = axes[r, 0]
            ax.imshow(_array(query_images[r]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            for side in ax.spines.values():
                side.set_color("tab:red")
                side.set_linewidth(2)
            ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
            ax.set_title("query", fontsize=7)
        for j in range(k):
            ax = axes[r, j + extra]
            if j < len(imgs):
                ax.imshow(_array(imgs[j]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(titles[j], fontsize=6)
            else:
                ax.axis("off")
            if j == 0 and not extra:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
        for ax in axes[r]:
            ax.set_xticks([]), ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
