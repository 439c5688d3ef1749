"""Figures of product quantization (notebook 06): k-means cells, codebooks, reconstructions, tables, curves.

Every function takes plain arrays (what the notebook measured) and returns its matplotlib Figure, so
the notebook shows it and saves it for the report (``vislearn.save_figure``); the tests check that
what is drawn equals what was passed. Built in notebook 06_product_quantization, on top of
``vislearn.methods.pq``, ``opq`` and ``pq_decoder``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.ticker import MaxNLocator, NullLocator

RANK_COLORS = {1: "tab:blue", 10: "tab:orange", 100: "tab:green"}


def _array(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _image(ax, img, title: str | None = None, vmin: float = 0.0, vmax: float = 1.0, fontsize: int = 8) -> None:
    """A grayscale image on fixed limits (so that reconstructions are compared on one scale), no ticks."""
    ax.imshow(_array(img), cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def nearest_labels(grid: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (squared L2) of every point of a (..., 2) grid: the Voronoi cells."""
    d = ((grid[..., None, :] - centroids) ** 2).sum(-1)  # (..., k)
    return d.argmin(-1)


def kmeans_iterations_figure(points, snapshots: Sequence[tuple[int, np.ndarray]], *, objective=None,
                             resolution: int = 240, size: float = 2.9):
    """k-means in 2-D: one panel per snapshot, the Voronoi cells of its centroids, the points, the centroids.

    Args:
        points: (n, 2) training points.
        snapshots: (iteration, (k, 2) centroids) pairs, in order; each panel draws an arrow from the
            previous snapshot's centroids to its own.
        objective: optional (iterations,) objective per iteration, drawn in a last panel (log scale).
        resolution: grid points per side of the cell map.
    """
    points = _array(points)
    lo, hi = points.min(0), points.max(0)
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    xs, ys = np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution)
    grid = np.stack(np.meshgrid(xs, ys), -1)  # (res, res, 2)
    k = len(snapshots[0][1])
    cmap = ListedColormap(plt.get_cmap("tab20")(np.arange(k) % 20))
    panels = len(snapshots) + (objective is not None)
    fig, axes = plt.subplots(1, panels, figsize=(size * panels, size + 0.3), squeeze=False)
    previous = None
    for ax, (iteration, centroids) in zip(axes[0], snapshots, strict=False):
        centroids = _array(centroids)
        cells = nearest_labels(grid, centroids)  # (res, res)
        ax.imshow(cells, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), cmap=cmap, vmin=-0.5, vmax=k - 0.5,
                  alpha=0.35, interpolation="nearest", aspect="auto")
        ax.scatter(points[:, 0], points[:, 1], s=2, c="0.25", alpha=0.5, lw=0)
        if previous is not None:
            for a, b in zip(previous, centroids, strict=True):
                ax.annotate("", b, a, arrowprops=dict(arrowstyle="->", color="crimson", lw=0.9))
        ax.scatter(centroids[:, 0], centroids[:, 1], s=28, c="k", marker="x", lw=1.4, zorder=3)
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xticks=[], yticks=[])
        ax.set_title(f"iteration {iteration}" if iteration else "start: k random points", fontsize=9)
        previous = centroids
    if objective is not None:
        ax = axes[0, -1]
        obj = _array(objective)
        ax.plot(np.arange(len(obj)), obj, "o-", ms=3)
        ax.set(xlabel="iteration", yscale="log", title="objective (sum of squared\ndistances, before the update)")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def mosaic(tiles: np.ndarray, cols: int, gap: float = np.nan) -> np.ndarray:
    """Lay out (n, h, w) tiles on a grid of ``cols`` columns, 1 px of ``gap`` between them: (rows*(h+1)-1, ...)."""
    n, h, w = tiles.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), gap, dtype=np.float64)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = tile
    return out


def codebook_tiles_figure(centroids, blocks: tuple[int, int], tile: tuple[int, int], *, sort: bool = True,
                          show: int | None = None, size: float = 2.5, title: str | None = None):
    """Each sub-quantizer's centroids drawn as image tiles, the panels placed where their blocks sit.

    Args:
        centroids: (M, ksub, dsub) with M = blocks[0] * blocks[1] and dsub = tile[0] * tile[1].
        blocks: (rows, cols) of image blocks (sub-vectors), in the order of the M sub-quantizers.
        tile: (h, w) pixels of one block.
        sort: order the tiles of each panel by mean brightness (else by centroid index).
        show: draw this many tiles per panel, evenly spaced over that order (None: all ksub).
    """
    c = _array(centroids)
    M, ksub, dsub = c.shape
    if M != blocks[0] * blocks[1] or dsub != tile[0] * tile[1]:
        raise ValueError(f"centroids {c.shape} do not match {blocks} blocks of {tile} pixels")
    picked = np.arange(ksub) if show is None or show >= ksub else np.linspace(0, ksub - 1, show).round().astype(int)
    cols = int(np.ceil(np.sqrt(len(picked))))
    fig, axes = plt.subplots(*blocks, figsize=(size * blocks[1], size * blocks[0] + 0.3), squeeze=False)
    for m, ax in enumerate(axes.flat):
        tiles = c[m].reshape(ksub, *tile)
        if sort:
            tiles = tiles[np.argsort(tiles.mean((1, 2)), kind="stable")]
        ax.imshow(mosaic(tiles[picked], cols), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"block {m}", fontsize=7)
        ax.set_facecolor("tab:blue")  # the gaps between tiles (NaN) show the axes' colour
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def reconstructions_figure(rows: Mapping[str, Sequence], *, col_titles: Sequence[str] | None = None,
                           size: float = 1.15, title: str | None = None):
    """A grid of images: one row per version (original, reconstructions), one column per image.

    Args:
        rows: row label -> (n, h, w) images in [0, 1]; every row has the same n.
        col_titles: n titles for the first row.
    """
    labels = list(rows)
    n = len(rows[labels[0]])
    fig, axes = plt.subplots(len(labels), n, figsize=(size * n + 1.2, size * len(labels) + 0.4), squeeze=False)
    for r, label in enumerate(labels):
        images = _array(rows[label])
        if len(images) != n:
            raise ValueError(f"row {label!r} has {len(images)} images; the first row has {n}")
        for j in range(n):
            _image(axes[r, j], images[j], col_titles[j] if (col_titles and r == 0) else None)
        axes[r, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def distance_table_figure(table, marks: Mapping[str, Sequence[int]] | None = None, *, title: str | None = None):
    """The ADC look-up table of one query, (M, ksub), as a heat map; ``marks``: label -> (M,) codes to circle.

    The distance of the query to a code is the sum of the M entries the code selects, one per row. The
    colours are on a log scale: with PCA vectors the first rows hold far larger distances than the last.
    """
    t = _array(table)
    M, ksub = t.shape
    fig, ax = plt.subplots(figsize=(min(12.0, 2.0 + ksub / 24), 0.42 * M + 1.5))
    positive = t[t > 0]
    norm = LogNorm(vmin=positive.min() if positive.size else 1e-6, vmax=max(t.max(), 1e-6))
    im = ax.imshow(np.maximum(t, norm.vmin), aspect="auto", cmap="viridis_r", norm=norm, interpolation="nearest")
    styles = [dict(marker="o", s=70, facecolors="none", edgecolors="black", lw=1.8),
              dict(marker="s", s=70, facecolors="none", edgecolors="red", lw=1.8),
              dict(marker="D", s=55, facecolors="none", edgecolors="deepskyblue", lw=1.8)]
    for style, (label, codes) in zip(styles, (marks or {}).items(), strict=False):
        codes = _array(codes).astype(int)
        total = t[np.arange(M), codes].sum()
        ax.scatter(codes, np.arange(M), label=f"{label}: sum = {total:.2f}", **style)
    ax.set(xlabel=f"centroid j (of ksub = {ksub})", ylabel="sub-quantizer m", yticks=range(M))
    fig.colorbar(im, ax=ax, label="|q_m - c_m,j|^2 (log scale)", fraction=0.04, pad=0.02)
    if marks:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=len(marks), facecolor="0.85")
    ax.set_title(title or "distance table of one query", fontsize=10)
    fig.tight_layout()
    return fig


def distance_estimates_figure(true, estimates: Mapping[str, Sequence[float]], *, size: float = 3.4):
    """Estimated vs exact squared distances, one panel per estimator (e.g. ADC, SDC), with the diagonal."""
    true = _array(true).ravel()
    fig, axes = plt.subplots(1, len(estimates), figsize=(size * len(estimates), size), squeeze=False,
                             sharex=True, sharey=True)
    lim = max(true.max(), *(np.max(_array(e)) for e in estimates.values())) * 1.05
    for ax, (name, est) in zip(axes[0], estimates.items(), strict=True):
        est = _array(est).ravel()
        ax.scatter(true, est, s=3, alpha=0.4, lw=0)
        ax.plot([0, lim], [0, lim], "k--", lw=0.8)
        rel = np.abs(est - true).mean() / true.mean()
        ax.set(xlim=(0, lim), ylim=(0, lim), xlabel="exact squared distance", title=f"{name}: mean |error| = {rel:.1%}")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("estimated from the codes")
    fig.tight_layout()
    return fig


def recall_curve_figure(bytes_per_vector: Sequence[float], recalls: Mapping[str, Mapping[int, Sequence[float]]], *,
                        title: str | None = None):
    """Recall@r against bytes per vector: one colour per r, one line style per implementation.

    Args:
        bytes_per_vector: x positions (log scale).
        recalls: implementation -> {r: recalls aligned with ``bytes_per_vector``}.
    """
    x = np.asarray(bytes_per_vector, dtype=float)
    styles = [dict(ls="-", marker="o", ms=6, mfc="none"), dict(ls="--", marker="x", ms=7),
              dict(ls=":", marker="s", ms=4)]
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for style, (impl, by_rank) in zip(styles, recalls.items(), strict=False):
        for r, values in by_rank.items():
            ax.plot(x, values, color=RANK_COLORS.get(r), label=f"{impl}, R@{r}", **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [f"{b:g}" for b in x])
    ax.set(xlabel="bytes per vector", ylabel="recall (true nearest neighbour found)", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    ax.set_title(title or "recall against code size", fontsize=10)
    fig.tight_layout()
    return fig


def mse_figure(mse: Mapping[tuple[int, int], float], *, title: str | None = None):
    """Reconstruction error of PQ for every (M, nbits): against M (one line per nbits), and against bytes."""
    nbits_all = sorted({b for _, b in mse})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.7))
    for nbits in nbits_all:
        Ms = sorted(m for m, b in mse if b == nbits)
        values = [mse[(m, nbits)] for m in Ms]
        axes[0].plot(Ms, values, "o-", label=f"nbits = {nbits} (ksub = {2 ** nbits})")
        axes[1].plot([m * nbits / 8 for m in Ms], values, "o-", label=f"nbits = {nbits}")
    for ax, xlabel in zip(axes, ("M (sub-quantizers)", "bytes per vector (M x nbits / 8)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(xlabel=xlabel, ylabel="reconstruction MSE (held-out vectors)")
        ax.grid(alpha=0.3, which="both", lw=0.4)
        ax.legend(fontsize=7)
    Ms_all = sorted({m for m, _ in mse})
    axes[0].set_xticks(Ms_all, [str(m) for m in Ms_all])
    bytes_all = sorted({m * b / 8 for m, b in mse})
    axes[1].set_xticks(bytes_all, [f"{b:g}" for b in bytes_all])
    axes[1].xaxis.set_minor_locator(NullLocator())
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _bars(ax, values: Mapping[str, float], fmt: str, colors: Sequence[str] = ("tab:gray", "tab:purple")) -> None:
    names = list(values)
    bars = ax.bar(names, [values[n] for n in names], color=[colors[i % len(colors)] for i in range(len(names))])
    for bar, name in zip(bars, names, strict=True):
        ax.annotate(format(values[name], fmt), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def decoder_figure(history: Sequence[float], mse: Mapping[str, float], recall: Mapping[str, Mapping[str, float]], *,
                   start_loss: float | None = None, title: str | None = None):
    """A decoder's training loss per epoch, its reconstruction error (bars), and recall with and without it.

    Args:
        history: training loss per epoch.
        mse: method -> MSE, e.g. {"centroid lookup": ..., "decoder": ...}.
        recall: measure -> {method: value}, e.g. {"R@1": {"ADC order": ..., "decoder re-rank": ...}}; grouped bars.
        start_loss: the lookup's training loss, drawn as a reference line.
    """
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    epochs = np.arange(1, len(history) + 1)
    axes[0].plot(epochs, history, "o-", ms=3, label="decoder (training vectors)")
    if start_loss is not None:
        axes[0].axhline(start_loss, color="tab:gray", ls="--", lw=1, label="centroid lookup")
    axes[0].set(xlabel="epoch", ylabel="training MSE", title="training")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    _bars(axes[1], mse, ".3f")
    first, last = list(mse.values())[0], list(mse.values())[-1]
    axes[1].set(ylabel="MSE on the database", title=f"reconstruction error: {last / first - 1:+.1%}")
    measures = list(recall)
    methods = list(dict.fromkeys(name for by_method in recall.values() for name in by_method))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = [recall[k].get(method, np.nan) for k in measures]
        bars = axes[2].bar(np.arange(len(measures)) + (i - (len(methods) - 1) / 2) * width, values, width, label=method,
                           color=("tab:gray", "tab:purple")[i % 2])
        for bar, value in zip(bars, values, strict=True):
            axes[2].annotate(f"{value:.4f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                             va="bottom", fontsize=7)
    axes[2].set(xticks=range(len(measures)), xticklabels=measures, ylabel="recall", ylim=(0, 1.1),
                title="re-ranking the ADC top 100")
    axes[2].legend(fontsize=7, loc="upper left")
    axes[2].grid(alpha=0.3, axis="y")
    for ax in axes:
        ax.title.set_fontsize(9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def subspace_figure(variance: Mapping[str, Sequence[float]], error: Mapping[str, Sequence[float]], *,
                    title: str | None = None):
    """Per sub-space: the share of the variance it holds, and its reconstruction error, for each space."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
    for ax, data, ylabel in ((axes[0], variance, "share of the total variance"),
                             (axes[1], error, "reconstruction MSE of the sub-vector")):
        width = 0.8 / len(data)
        for i, (name, values) in enumerate(data.items()):
            values = _array(values)
            ax.bar(np.arange(len(values)) + (i - (len(data) - 1) / 2) * width, values, width, label=name)
        ax.set(xlabel="sub-space m", ylabel=ylabel, xticks=range(len(values)))
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def neighbours_figure(query, reconstruction, neighbours, titles: Sequence[str], *, query_title: str = "query",
                      reconstruction_title: str = "its code, decoded", extra=None, size: float = 1.35,
                      title: str | None = None):
    """One row: a query image, its reconstruction, its nearest neighbours (each with a title), and optionally
    one ``extra`` (image, title) pair at the end, framed in blue (e.g. the true nearest neighbour)."""
    neighbours = _array(neighbours)
    n = len(neighbours)
    panels = n + 2 + (extra is not None)
    fig, axes = plt.subplots(1, panels, figsize=(size * panels, size + 0.75), squeeze=False)
    _image(axes[0, 0], query, query_title)
    _image(axes[0, 1], reconstruction, reconstruction_title)
    for j in range(n):
        _image(axes[0, j + 2], neighbours[j], titles[j], fontsize=7)
    if extra is not None:
        ax = axes[0, -1]
        _image(ax, extra[0], extra[1], fontsize=7)
        for spine in ax.spines.values():
            spine.set(color="tab:blue", lw=2.5)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
