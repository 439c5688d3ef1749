"""Figures and measurements of notebook 09 (beyond plain attention: LeViT, ResMLP, PatchConvNet, ConViT).

Each figure function returns its matplotlib Figure (the notebook shows it and saves it for the report);
the small helpers under them compute what the figures draw, so the tests can check the numbers:

- ``bias_for_query``: a LeViT offset map (heads, R, R) read out as the bias every key gets from one query;
- ``bias_distance_trend``: per head, whether the learned bias falls with the offset's distance (a local prior);
- ``attention_received``: where a layer's attention goes, as a (B, g, g) map (the [CLS] row, or the mean
  over the queries when there is no class token);
- ``gates_by_epoch``: ConViT's gates stacked from a training history, with the value at initialisation;
- ``throughput``: inference and training images per second, measured in alternating rounds (the logic of
  ``benchmarks/architectures.py``; notebooks import only from ``vislearn``).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .viz import overlay, show_image

# --------------------------------------------------------------------------- LeViT's attention biases

def bias_for_query(offset_map: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """The bias each key of the R x R grid gets from the query at (row, col): (heads, R, R).

    ``offset_map`` is one layer's ``attention_bias_maps()`` entry, (heads, R, R) indexed [h, |d_row|, |d_col|].
    """
    heads, R, _ = offset_map.shape
    rows = (torch.arange(R) - row).abs()
    cols = (torch.arange(R) - col).abs()
    return offset_map[:, rows[:, None], cols[None, :]]


def offset_distance(R: int) -> torch.Tensor:
    """Euclidean length of every offset (|d_row|, |d_col|) of an R x R offset map: (R, R)."""
    d = torch.arange(R, dtype=torch.float32)
    return (d[:, None] ** 2 + d[None, :] ** 2).sqrt()


def bias_distance_trend(offset_map: torch.Tensor) -> torch.Tensor:
    """Per head, the Pearson correlation between the bias and the offset's length: (heads,).

    Negative: the head favours near keys (a convolution-like prior); positive: it favours far ones.
    A head whose biases are all equal (e.g. still at their zero init) gives 0.
    """
    heads, R, _ = offset_map.shape
    dist = offset_distance(R).flatten()
    dist = dist - dist.mean()
    b = offset_map.reshape(heads, -1).float()
    b = b - b.mean(1, keepdim=True)
    denom = b.norm(dim=1) * dist.norm()
    return torch.where(denom > 1e-12, (b @ dist) / denom.clamp_min(1e-12), torch.zeros(heads))


def bias_maps_figure(maps: Sequence[torch.Tensor], labels: Sequence[str], *, size: float = 1.35,
                     title: str | None = None):
    """One row per attention layer, one column per head: its (|d_row|, |d_col|) bias map.

    Each row has its own symmetric colour scale, written under the row's label (blue: the logit is lowered,
    red: raised); the number in a panel's title is its head's bias-distance correlation (``bias_distance_trend``).
    """
    heads = max(m.shape[0] for m in maps)
    fig, axes = plt.subplots(len(maps), heads, figsize=(heads * size + 0.6, len(maps) * size + 0.5),
                             squeeze=False, layout="constrained")
    for r, (m, label) in enumerate(zip(maps, labels, strict=True)):
        vmax = max(m.abs().max().item(), 1e-8)
        trend = bias_distance_trend(m)
        for h in range(heads):
            ax = axes[r, h]
            if h >= m.shape[0]:
                ax.axis("off")
                continue
            ax.imshow(m[h].detach().cpu().numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            R = m.shape[-1]
            ax.set_xticks(range(R)), ax.set_yticks(range(R))
            ax.tick_params(labelsize=6)
            ax.set_title(f"head {h}  r={trend[h]:+.2f}", fontsize=7)
            if h == 0:
                ax.set_ylabel(f"{label}\n(scale ±{vmax:.2g})\n|d_row|", fontsize=7)
            if r == len(maps) - 1 or h >= maps[r + 1].shape[0]:
                ax.set_xlabel("|d_col|", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------- ResMLP's token mixing

def mixing_filters_figure(maps: Mapping[str, torch.Tensor], blocks: Sequence[int], patches: Sequence[int], *,
                          size: float = 1.2, title: str | None = None):
    """Rows of token-mixing filters: for each (state, block), the g x g weights of several output patches.

    ``maps``: state name (e.g. "init", "trained") -> (depth, N, g, g) ``token_mixing_maps()``. Each filter
    has its own symmetric colour scale; the output patch itself is outlined.
    """
    rows = [(name, b) for b in blocks for name in maps]
    fig, axes = plt.subplots(len(rows), len(patches), figsize=(len(patches) * size + 0.3, len(rows) * size + 0.4),
                             squeeze=False)
    for r, (name, b) in enumerate(rows):
        m = maps[name]
        g = m.shape[-1]
        for c, p in enumerate(patches):
            ax = axes[r, c]
            w = m[b, p].detach().cpu().numpy()
            vmax = max(float(np.abs(w).max()), 1e-8)
            ax.imshow(w, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.add_patch(plt.Rectangle((p % g - 0.5, p // g - 0.5), 1, 1, fill=False, ec="black", lw=1.2))
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"output patch\n({p // g}, {p % g})", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"{name}\nblock {b + 1}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def series_by_epoch(evals: Sequence[Mapping[str, Any]], key: str, initial: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``(epochs, values)`` of one key of a history's evaluations, ``initial`` prepended at epoch 0 if given.

    ``values`` stacks each evaluation's entry: (epochs,) for numbers, (epochs, ...) for nested lists.
    """
    epochs = [float(e["epoch"]) for e in evals if key in e]
    values = [np.asarray(e[key], dtype=float) for e in evals if key in e]
    if initial is not None:
        epochs, values = [0.0] + epochs, [np.asarray(initial, dtype=float)] + values
    if not values:
        raise ValueError(f"no evaluation in this history records {key!r}")
    return np.asarray(epochs), np.stack(values)


# --------------------------------------------------------------------------- ConViT's gates

def gates_figure(epochs: np.ndarray, gates: np.ndarray, *, title: str | None = None):
    """ConViT's gates over training: left, every head of every GPSA layer; right, the mean per layer.

    ``gates``: (epochs, layers, heads), 1 = attends by position, 0 = by content.
    """
    _, layers, heads = gates.shape
    colors = plt.cm.viridis(np.linspace(0, 0.9, layers))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    for layer in range(layers):
        for h in range(heads):
            ax1.plot(epochs, gates[:, layer, h], "o-", ms=2.5, lw=1, color=colors[layer],
                     label=f"GPSA layer {layer + 1}" if h == 0 else None)
        ax2.plot(epochs, gates[:, layer].mean(1), "o-", ms=3, color=colors[layer], label=f"GPSA layer {layer + 1}")
    ax1.set(xlabel="epoch", ylabel="gate sigmoid(lambda)", title="every head")
    ax2.set(xlabel="epoch", ylabel="mean gate", title="mean over the heads of each layer")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- where the models look

def attention_received(attn: torch.Tensor, grid: int, prefix: int = 0, head: int | None = None) -> torch.Tensor:
    """Where one layer's attention goes, as an image: (B, heads, T_q, T_k) -> (B, grid, grid).

    With ``prefix`` class tokens in front of the keys, the class token's row over the patches (its weight on
    itself left out); without, the mean over all queries of the weight each key patch receives. ``head``: one
    head (0-based), or None for the mean over the heads.
    """
    if head is not None and not 0 <= head < attn.shape[1]:
        raise ValueError(f"head {head} does not exist: this layer has {attn.shape[1]} heads (0 to {attn.shape[1] - 1})")
    if prefix:
        m = attn[:, :, 0, prefix:]                 # (B, h, N): the class token's row
    else:
        m = attn.mean(dim=2)                       # (B, h, N): the mean over the queries
    m = m.mean(dim=1) if head is None else m[:, head]   # (B, N)
    if m.shape[-1] != grid * grid:
        raise ValueError(f"{m.shape[-1]} key patches do not make a {grid} x {grid} grid")
    return m.reshape(-1, grid, grid)


def pooling_figure(images: Sequence[torch.Tensor], maps: torch.Tensor, titles: Sequence[str], *,
                   size: float = 1.7, title: str | None = None):
    """Images on top, the attention-pooling map laid over each below. ``maps``: (B, g, g)."""
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(n * size, 2 * size + 0.5), squeeze=False)
    for j in range(n):
        show_image(axes[0, j], images[j], titles[j])
        overlay(axes[1, j], images[j], maps[j])
        axes[1, j].set_xlabel(f"max weight {maps[j].max():.2f}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def curves_figure(histories: Mapping[str, Any], *, title: str | None = None):
    """Test accuracy after each epoch (left) and training loss (right) of several runs (History objects)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, h in histories.items():
        ax1.plot([e["epoch"] for e in h.evals], [e["test_accuracy"] for e in h.evals], "o-", ms=3, label=name)
        ax2.plot([s["epoch"] for s in h.steps], [s["loss"] for s in h.steps], lw=0.8, label=name)
    ax1.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy after each epoch")
    ax2.set(xlabel="epoch", ylabel="training loss", yscale="log", title="training loss (logged)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- speed

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _images_per_second(step, batch: int, steps: int, device: torch.device) -> float:
    step()                                   # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def throughput(models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, *, steps: int = 2,
               rounds: int = 3) -> dict[str, dict[str, float]]:
    """Inference and training images per second of each model on the batch ``(x, y)``.

    Inference: eval mode, no gradients. Training: a forward, backward and AdamW step in train mode, on a
    *copy* of the model (the models passed in are left untouched). Rounds alternate between the models, so a
    background load hits them alike; each number is the median over the rounds.

    Returns:
        name -> {"infer": img/s, "train": img/s}
    """
    device = x.device
    plans = {}
    for name, model in models.items():
        student = copy.deepcopy(model).to(device)
        opt = torch.optim.AdamW(student.parameters(), lr=1e-4)

        @torch.no_grad()
        def infer(m=model):
            was = m.training
            m.eval()
            m(x)
            m.train(was)

        def train(m=student, opt=opt):
            m.train()
            out = m(x)
            loss = F.cross_entropy(out[0] if isinstance(out, tuple) else out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        plans[name] = (infer, train)
    measured = {name: {"infer": [], "train": []} for name in models}
    for _ in range(rounds):
        for name, (infer, train) in plans.items():
            measured[name]["infer"].append(_images_per_second(infer, len(x), steps, device))
            measured[name]["train"].append(_images_per_second(train, len(x), steps, device))
    return {name: {k: statistics.median(v) for k, v in m.items()} for name, m in measured.items()}
