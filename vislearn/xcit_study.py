"""The experiments of notebook 04 around XCiT (El-Nouby et al., 2021, "XCiT: Cross-Covariance Image
Transformers"): cost against sequence length, resolution changes, and local patch interaction.

- **Cost, measured.** ``measure_scaling`` times one self-attention layer and one XCA layer of the
  same width on sequences of growing length N (medians of interleaved repeats, by default on the
  CPU time of one thread, which load from other programs barely changes) and records the peak
  memory each forward pass allocates (``PeakMemory``: every tensor created during the call,
  counted exactly by a dispatch mode, so it works on any device). ``fit_power_law`` fits
  cost = c * N^slope on a log-log scale; ``crossover`` finds the N beyond which one layer stays
  cheaper. Theory: self-attention costs O(N^2 D) time and O(h N^2) memory, XCA O(N D d) and
  O(N D), with d = D / h the channels per head.
- **Resolution.** ``fashion_mnist_32`` pads Fashion-MNIST to 32 x 32 px (a multiple of the patch
  size 8), ``resize_images`` makes any other size. XCiT's convolutional stem and Fourier positions
  work at any size; a plain ViT needs its learned position embeddings interpolated to the new grid
  (``resize_pos_embed``, equal to timm's ``resample_abs_pos_embed``; ``at_resolution``).
  ``random_zoom`` shows objects at many sizes during training, as ImageNet's random-resized crops do.
- **Local patch interaction (LPI).** ``without_lpi`` switches LPI off in a trained XCiT;
  ``token_influence`` measures how strongly each input token moves one output token of a block.
- **Recipes** ``xcit_fmnist32``, ``vit_fmnist32`` (two models of similar size, 6 attention blocks
  of width 64, patches of 8 x 8 px), ``xcit_fmnist32_nolpi`` (the paper's "w/o LPI" ablation), and
  ``xcit_fmnist32_zoom``, ``vit_fmnist32_zoom`` (the first two trained on randomly zoomed images):
  ``python -m vislearn.train xcit_fmnist32 --preset full --out data/checkpoints``.

Built in ``notebooks/04_xcit_cross_covariance.ipynb``.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.data import TensorDataset

from .config import check_choice
from .data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, fashion_mnist
from .layers import Attention
from .train import Recipe, TrainConfig, register
from .vit import VisionTransformer, ViTConfig
from .xcit import XCA, XCiT, XCiTConfig

# --- Data at any resolution ---------------------------------------------------------------------------

TRAIN_SIZE = 32          # Fashion-MNIST's 28 px padded by 2 px on every side: a 4 x 4 grid of 8 x 8 patches
BACKGROUND = (0.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD  # a black pixel, normalized


def pad_to_32(images: torch.Tensor) -> torch.Tensor:
    """Normalized images (N, 1, 28, 28) -> (N, 1, 32, 32), with a 2 px black border (no rescaling)."""
    return F.pad(images, (2, 2, 2, 2), value=BACKGROUND)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images (N, C, H, W) -> (N, C, size, size), bilinear (antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def fashion_mnist_at(split: str, limit: int | None = None, seed: int = 0, size: int = TRAIN_SIZE) -> TensorDataset:
    """Fashion-MNIST padded to 32 px, then resized to ``size``: images (N, 1, size, size), labels (N,)."""
    images, labels = fashion_mnist(split, limit, seed=seed).tensors
    return TensorDataset(resize_images(pad_to_32(images), size), labels)


def fashion_mnist_32(split: str, limit: int | None, seed: int) -> TensorDataset:
    """The data of this module's recipes (a ``Recipe.data`` function): Fashion-MNIST at 32 x 32 px."""
    return fashion_mnist_at(split, limit, seed, TRAIN_SIZE)


def random_zoom(images: torch.Tensor, generator: torch.Generator | None = None,
                zoom: tuple[float, float] = (0.75, 2.0)) -> torch.Tensor:
    """Batch augmentation: scale each image by a random factor, about a random point.

    The factor is log-uniform in ``zoom``: above 1 the image is enlarged (a random crop, resized
    back), below 1 shrunk (inside a black border). This is what ImageNet's random-resized crops do
    to object sizes, and what lets a model recognize objects at a scale it was not shown at 1:1.

    Args:
        images: (B, C, H, W), with a black border (``pad_to_32``): the border is replicated.
    """
    B = images.shape[0]
    lo, hi = math.log(zoom[0]), math.log(zoom[1])
    z = torch.exp(torch.rand(B, generator=generator) * (hi - lo) + lo)             # (B,) zoom factors
    slack = (1 - 1 / z).abs()                                                       # how far the view may move
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / z                                         # sample a (1/z)-sized window
    theta[:, :, 2] = (torch.rand(B, 2, generator=generator) * 2 - 1) * slack[:, None]
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


# --- A plain ViT at another resolution -----------------------------------------------------------------

def resize_pos_embed(pos_embed: torch.Tensor, new_grid: int | tuple[int, int], num_prefix_tokens: int = 1,
                     mode: str = "bicubic") -> torch.Tensor:
    """Interpolate learned position embeddings to another patch grid (timm's ``resample_abs_pos_embed``).

    The patch part is seen as a (D, g, g) image and resized; prefix tokens ([CLS]) keep theirs.

    Args:
        pos_embed: (1, prefix + g * g, D), the old grid square.
        new_grid: side of the new grid (or (rows, columns)).
    Returns:
        (1, prefix + rows * columns, D).
    """
    rows, cols = (new_grid, new_grid) if isinstance(new_grid, int) else new_grid
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    g = math.isqrt(patches.shape[1])
    if g * g != patches.shape[1]:
        raise ValueError(f"{patches.shape[1]} patch position embeddings do not form a square grid")
    if (rows, cols) == (g, g):
        return pos_embed
    D = patches.shape[-1]
    grid = patches.reshape(1, g, g, D).permute(0, 3, 1, 2).float()                 # (1, D, g, g)
    grid = F.interpolate(grid, size=(rows, cols), mode=mode, align_corners=False, antialias=True)
    patches = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, D).to(pos_embed.dtype)  # (1, rows * cols, D)
    return torch.cat([prefix, patches], dim=1)


def vit_at_resolution(model: VisionTransformer, img_size: int) -> VisionTransformer:
    """A copy of ``model`` for img_size x img_size inputs: same weights, position embeddings interpolated."""
    cfg = replace(model.cfg, img_size=img_size)
    new = VisionTransformer(cfg)
    state = dict(model.state_dict())
    state["pos_embed"] = resize_pos_embed(state["pos_embed"], img_size // cfg.patch_size, model.num_prefix_tokens)
    new.load_state_dict(state)
    p = next(model.parameters())
    return new.to(p.device).train(model.training)


def at_resolution(model: nn.Module, img_size: int) -> nn.Module:
    """``model`` ready for img_size x img_size inputs: XCiT as is (any size works), a ViT interpolated."""
    if isinstance(model, VisionTransformer):
        return vit_at_resolution(model, img_size)
    if isinstance(model, XCiT):
        return model
    raise TypeError(f"at_resolution: expected a VisionTransformer or an XCiT, got {type(model).__name__}")


@torch.no_grad()
def accuracy_at(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, size: int,
                device: torch.device | str = "cpu", batch_size: int = 2000) -> float:
    """Accuracy of ``model`` on images resized to ``size`` (a ViT gets interpolated position embeddings)."""
    m = at_resolution(model, size).to(device).eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        x = resize_images(images[i:i + batch_size], size).to(device)
        correct += (m(x).argmax(1).cpu() == labels[i:i + batch_size]).sum().item()
    return correct / len(images)


# --- Local patch interaction ----------------------------------------------------------------------------

@torch.no_grad()
def switch_off_lpi_(model: XCiT) -> XCiT:
    """Remove every LPI branch of ``model`` in place: gamma3 = 0 and LPI's last conv = 0.

    Zeroing both makes the gradients of all LPI parameters exactly zero, so a model trained from
    this state stays LPI-free (the paper's "w/o LPI" ablation) without a separate architecture.
    """
    for block in model.blocks:
        block.gamma3.zero_()
        block.local_mp.conv2.weight.zero_()
        block.local_mp.conv2.bias.zero_()
    return model


def without_lpi(model: XCiT) -> XCiT:
    """A copy of a (trained) XCiT with its local patch interaction switched off."""
    return switch_off_lpi_(copy.deepcopy(model))


def token_influence(block: nn.Module, tokens: torch.Tensor, grid: tuple[int, int], index: int) -> torch.Tensor:
    """How strongly each input token moves output token ``index`` of an XCA block.

    Returns ``||d y_index / d x_j||`` (Frobenius norm of the D x D Jacobian) for every input token
    j, as a map (H, W) over the patch grid.

    Args:
        block: an ``XCABlock`` (called as ``block(x, H, W)``).
        tokens: one image's tokens (1, N, D), N = H * W.
    """
    H, W = grid
    x = tokens.detach().clone()

    def out(inp):
        return block(inp, H, W)[0, index]                                       # (D,)

    jac = torch.autograd.functional.jacobian(out, x, vectorize=True)            # (D, 1, N, D)
    return jac.pow(2).sum(dim=(0, 1, 3)).sqrt().reshape(H, W)                   # (H, W)


# --- Cost against sequence length ------------------------------------------------------------------------

class PeakMemory(TorchDispatchMode):
    """Count the bytes of every tensor created inside the ``with`` block, and their peak.

    Each new storage an operation returns is added when it appears and subtracted when the last
    tensor using it is freed. Inputs, weights and views of them are not counted, and neither is
    scratch memory a kernel allocates and frees internally (a fused attention kernel's tiles):
    this is the memory of the activations a forward pass keeps alive, exactly and on any device.

    Use: ``with PeakMemory() as m: f(x)``, then ``m.peak`` (bytes).
    """

    def __init__(self):
        super().__init__()
        self.live: dict[tuple[int, int], list[int]] = {}   # storage -> [bytes, live tensors using it]
        self.current = 0
        self.peak = 0

    def _release(self, key: tuple[int, int]) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = (storage.data_ptr(), storage.nbytes())
            if key not in self.live:
                if storage.data_ptr() in inputs:   # a view or in-place result of an input: nothing new
                    continue
                self.live[key] = [storage.nbytes(), 0]
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            self.live[key][1] += 1
            weakref.finalize(t, self._release, key)
        return out


def peak_memory(fn: Callable[[], Any]) -> int:
    """Peak bytes of the tensors ``fn()`` creates (see ``PeakMemory``); its result is dropped."""
    with torch.no_grad(), PeakMemory() as meter:
        result = fn()
        del result
    return meter.peak


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (None: leave as is), then restore the previous setting."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def attention_layers(dim: int = 128, heads: int = 4, seed: int = 0) -> dict[str, Callable[[torch.Tensor], Any]]:
    """The layers compared by ``measure_scaling``, all of width ``dim`` with ``heads`` heads.

    - ``self-attention``: the explicit softmax(Q K^T / sqrt(d)) V, as in the papers (and timm
      without its fused kernel): the N x N weights are materialized.
    - ``self-attention (fused)``: the same layer through ``F.scaled_dot_product_attention``, whose
      memory-efficient kernels never store the N x N weights (but still compute them all).
    - ``XCA``: cross-covariance attention: d x d weights per head.
    """
    torch.manual_seed(seed)
    sa, xca = Attention(dim, heads).eval(), XCA(dim, heads).eval()
    return {
        "self-attention": lambda x: sa(x, return_attention=True)[0],
        "self-attention (fused)": sa,
        "XCA": xca,
    }


def _time_once(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, number: int, clock: Callable[[], float]) -> float:
    start = clock()
    for _ in range(number):
        fn(x)
    return (clock() - start) / number


CLOCKS = ("cpu", "wall")


@torch.no_grad()
def measure_scaling(tokens: Sequence[int], *, dim: int = 128, heads: int = 4, batch: int = 1, repeats: int = 5,
                    threads: int | None = 1, clock: str = "cpu", min_seconds: float = 0.002, memory: bool = True,
                    layers: Mapping[str, Callable[[torch.Tensor], Any]] | None = None,
                    seed: int = 0) -> list[dict[str, Any]]:
    """Forward time and peak memory of attention layers on sequences of ``tokens`` lengths.

    Every (length, layer) pair is warmed up once, then timed ``repeats`` times in interleaved
    rounds (each round visits every length and layer), so a burst of load from elsewhere on the
    machine hits all of them alike; the median is kept. A short call is repeated until one sample
    lasts ``min_seconds``. Memory is counted once (it is deterministic) by ``peak_memory``.

    Args:
        tokens: sequence lengths N.
        threads: torch threads while measuring; 1 (the default) makes every computation run on the
            calling thread, which the ``cpu`` clock needs.
        clock: ``cpu``: CPU time of the calling thread (``time.thread_time``): time spent waiting for
            a core that other programs hold is not counted, so a busy machine changes the result
            little; ``wall``: wall-clock time (``time.perf_counter``), for several threads or a GPU.
        layers: name -> callable on (batch, N, dim) tokens; default ``attention_layers(dim, heads)``.
    Returns:
        one row per (N, layer): ``tokens``, ``layer``, ``ms`` (median), ``ms_spread`` (max - min over
        repeats, ms) and ``peak_mib`` (MiB; None if ``memory`` is False).
    """
    check_choice("clock", clock, CLOCKS)
    if clock == "cpu" and threads != 1:
        raise ValueError(f"clock='cpu' times the calling thread only, so it needs threads=1 (got {threads}); "
                         "use clock='wall' with several threads")
    timer = time.thread_time if clock == "cpu" else time.perf_counter
    layers = dict(layers) if layers is not None else attention_layers(dim, heads, seed)
    gen = torch.Generator().manual_seed(seed)
    inputs = {n: torch.randn(batch, n, dim, generator=gen) for n in tokens}
    samples: dict[tuple[int, str], list[float]] = {(n, name): [] for n in tokens for name in layers}
    with torch_threads(threads):
        number = {}
        for n in tokens:                                    # warm up, and pick how many calls make a sample
            for name, fn in layers.items():
                fn(inputs[n])
                once = min(_time_once(fn, inputs[n], 1, timer) for _ in range(2))
                number[n, name] = max(1, math.ceil(min_seconds / max(once, 1e-7)))
        for _ in range(repeats):
            for n in tokens:
                for name, fn in layers.items():
                    samples[n, name].append(_time_once(fn, inputs[n], number[n, name], timer))
    rows = []
    for n in tokens:
        for name, fn in layers.items():
            s = samples[n, name]
            peak = peak_memory(lambda fn=fn, n=n: fn(inputs[n])) / 2**20 if memory else None
            rows.append({"tokens": n, "layer": name, "ms": 1e3 * statistics.median(s),
                         "ms_spread": 1e3 * (max(s) - min(s)), "peak_mib": peak})
    return rows


def series(rows: Sequence[Mapping[str, Any]], layer: str, key: str = "ms") -> tuple[np.ndarray, np.ndarray]:
    """(N, value) arrays of one layer from ``measure_scaling``'s rows, sorted by N."""
    pairs = sorted((r["tokens"], r[key]) for r in rows if r["layer"] == layer)
    if not pairs:
        raise ValueError(f"no rows for layer {layer!r}")
    n, y = zip(*pairs, strict=True)
    return np.asarray(n, dtype=float), np.asarray(y, dtype=float)


@dataclass(frozen=True)
class PowerLaw:
    """y = coef * n ** slope, fitted by least squares on log y against log n."""

    slope: float
    coef: float
    n_min: float   # the range of n the fit used
    n_max: float

    def __call__(self, n) -> np.ndarray:
        return self.coef * np.asarray(n, dtype=float) ** self.slope


def fit_power_law(n: Sequence[float], y: Sequence[float], min_n: float | None = None,
                  max_n: float | None = None) -> PowerLaw:
    """Fit y = c * n^slope on the points with min_n <= n <= max_n (a straight line on a log-log plot)."""
    n, y = np.asarray(n, dtype=float), np.asarray(y, dtype=float)
    keep = np.ones_like(n, dtype=bool)
    if min_n is not None:
        keep &= n >= min_n
    if max_n is not None:
        keep &= n <= max_n
    if keep.sum() < 2:
        raise ValueError(f"fit_power_law needs at least 2 points in [{min_n}, {max_n}], got {int(keep.sum())}")
    if (y[keep] <= 0).any():
        raise ValueError("fit_power_law needs positive values")
    slope, intercept = np.polyfit(np.log(n[keep]), np.log(y[keep]), 1)
    return PowerLaw(float(slope), float(np.exp(intercept)), float(n[keep].min()), float(n[keep].max()))


def crossover(n: Sequence[float], a: Sequence[float], b: Sequence[float]) -> float | None:
    """The length beyond which ``a`` stays above ``b`` (e.g. a = self-attention time, b = XCA time).

    Between the last measured point where a <= b and the next one, log(a / b) is interpolated
    linearly in log n. Returns None if a is never above b at the longest length; n[0] if a is
    above b everywhere (the crossover is at or below the measured range).
    """
    n, a, b = (np.asarray(v, dtype=float) for v in (n, a, b))
    order = np.argsort(n)
    n, gap = n[order], np.log(a[order]) - np.log(b[order])
    if gap[-1] <= 0:
        return None
    below = np.nonzero(gap <= 0)[0]
    if len(below) == 0:
        return float(n[0])
    i = below[-1]
    t = -gap[i] / (gap[i + 1] - gap[i])                       # where the interpolated gap is 0
    return float(np.exp(np.log(n[i]) + t * (np.log(n[i + 1]) - np.log(n[i]))))


def scaling_summary(rows: Sequence[Mapping[str, Any]], min_tokens: float, reference: str = "XCA") -> list[dict]:
    """Per layer: fitted time and memory slopes on N >= min_tokens, and the crossover with ``reference``."""
    out = []
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    n_ref, t_ref = series(rows, reference, "ms")
    for layer in layers:
        n, t = series(rows, layer, "ms")
        row = {"layer": layer, "time slope": round(fit_power_law(n, t, min_tokens).slope, 3)}
        if all(r["peak_mib"] is not None for r in rows if r["layer"] == layer):
            n_m, m = series(rows, layer, "peak_mib")
            row["memory slope"] = round(fit_power_law(n_m, m, min_tokens).slope, 3)
        if layer != reference:
            cross = crossover(n, t, t_ref)
            row[f"slower than {reference} from N ="] = None if cross is None else round(cross)
        out.append(row)
    return out


def scaling_figure(rows: Sequence[Mapping[str, Any]], min_tokens: float, reference: str = "XCA"):
    """Time and peak memory against N on log-log axes, with the fitted slopes and the crossovers.

    Points are the measurements, lines the power laws fitted on N >= ``min_tokens`` (shaded), and
    dotted verticals mark where each layer becomes slower than ``reference``.
    """
    import matplotlib.pyplot as plt

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


# --- Recipes ---------------------------------------------------------------------------------------------

def _lpi_off_loss(device: torch.device):
    """Cross-entropy on an XCiT whose LPI branches are switched off (re-zeroed before every step)."""
    del device

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        switch_off_lpi_(model)   # idempotent and cheap; with zero gradients the zeros would stay anyway
        return F.cross_entropy(model(x), y)

    return loss_fn


def _zoom_loss(device: torch.device):
    """Cross-entropy on randomly zoomed images (``random_zoom``, its own seeded generator)."""
    del device
    generator = torch.Generator().manual_seed(0)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(random_zoom(x, generator)), y)

    return loss_fn


# The same budget for every model, and no translations or flips (at this size and budget the models
# underfit, see notebook 01). A recipe's only other hook into training is its objective, so the zoom
# augmentation lives there (``_zoom_loss``): training sees zoomed images, evaluation the images as they are.
FMNIST32_FULL = TrainConfig(epochs=10, batch_size=128, lr=1e-3, weight_decay=0.05, warmup_epochs=1, augment=False)
FMNIST32_PRESETS = {
    "smoke": replace(FMNIST32_FULL, epochs=1, train_limit=2048, test_limit=1000, warmup_epochs=0.2),
    "classroom": replace(FMNIST32_FULL, epochs=2, warmup_epochs=0.3),
    "full": FMNIST32_FULL,
}
# Two models of similar size: 6 attention blocks of width 64 with 4 heads, MLP ratio 2, 8 x 8 px patches.
XCIT_FMNIST32 = XCiTConfig(img_size=TRAIN_SIZE, patch_size=8, in_chans=1, num_classes=10, embed_dim=64, depth=4,
                           num_heads=4, mlp_ratio=2.0, cls_attn_layers=2, tokens_norm=False)
VIT_FMNIST32 = ViTConfig(img_size=TRAIN_SIZE, patch_size=8, in_chans=1, num_classes=10, embed_dim=64, depth=6,
                         num_heads=4, mlp_ratio=2.0)

RECIPES = {
    r.name: register(r) for r in (
        Recipe(name="xcit_fmnist32", arch="xcit", model=XCIT_FMNIST32.to_dict(), presets=FMNIST32_PRESETS,
               data=fashion_mnist_32,
               description="The XCiT of notebook 04 (conv stem to 4x4 patches of 8x8 px, D=64, 4 XCA blocks + "
                           "2 class-attention blocks, 4 heads) on Fashion-MNIST padded to 32 px."),
        Recipe(name="vit_fmnist32", arch="vit", model=VIT_FMNIST32.to_dict(), presets=FMNIST32_PRESETS,
               data=fashion_mnist_32,
               description="A plain ViT of similar size for notebook 04 (4x4 patches of 8x8 px, D=64, 6 blocks, "
                           "4 heads) on Fashion-MNIST padded to 32 px."),
        Recipe(name="xcit_fmnist32_nolpi", arch="xcit", model=XCIT_FMNIST32.to_dict(), presets=FMNIST32_PRESETS,
               data=fashion_mnist_32, make_loss=_lpi_off_loss,
               description="xcit_fmnist32 trained with its local patch interaction switched off (the paper's "
                           "'w/o LPI' ablation)."),
        Recipe(name="xcit_fmnist32_zoom", arch="xcit", model=XCIT_FMNIST32.to_dict(), presets=FMNIST32_PRESETS,
               data=fashion_mnist_32, make_loss=_zoom_loss,
               description="xcit_fmnist32 trained on randomly zoomed images (x0.75 to x2), as ImageNet models see "
                           "objects at many sizes."),
        Recipe(name="vit_fmnist32_zoom", arch="vit", model=VIT_FMNIST32.to_dict(), presets=FMNIST32_PRESETS,
               data=fashion_mnist_32, make_loss=_zoom_loss,
               description="vit_fmnist32 trained on randomly zoomed images (x0.75 to x2)."),
    )
}
