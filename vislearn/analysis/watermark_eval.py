"""Evaluating watermarks: the feature extractor phi of notebook 08, photo tiles, robustness curves.

Fernandez, Sablayrolles, Furon, Jégou & Douze, "Watermarking Images in Self-Supervised Latent Spaces",
ICASSP 2022 (reference: facebookresearch/ssl_watermarking, ``evaluate.py``). Notebook 08_ssl_watermarking.

``robustness`` runs attack x strength over marked images and averages a per-image score (a detection,
0/1, or a bit accuracy); the paper's numbers are kept here so the notebook prints them next to ours.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ParameterError, check_int
from ..data.attacks import ATTACKS, attack

# Table 1 of the paper: zero-bit TPR at FPR 1e-6, PSNR >= 42 dB (ResNet-50 DINO, D = 2048)
PAPER_ZERO_BIT_TPR = {("none", 0): 1.00, ("rotation", 25): 1.00, ("crop", 0.5): 1.00, ("crop", 0.1): 0.98,
                      ("resize", 0.7): 1.00, ("blur", 11): 1.00, ("jpeg", 50): 0.97, ("brightness", 2.0): 0.96,
                      ("contrast", 2.0): 1.00, ("hue", 0.25): 1.00}
# Table 2 of the paper: multi-bit, 30 bits, PSNR >= 33 dB, 128 px images: bit error rate
PAPER_MULTI_BIT_BER = {("none", 0): 0.00, ("jpeg", 50): 0.15, ("blur", 11): 0.01, ("crop", 0.1): 0.45,
                       ("resize", 0.7): 0.16, ("hue", 0.2): 0.05}


class ViTFeatures(nn.Module):
    """Images in [0, 1] of any size -> (B, D) features: resized to ``size`` inside the graph (antialiased,
    so gradients reach every pixel), normalised with ``mean``/``std``, then ``features(backbone, x)``."""

    def __init__(self, backbone: nn.Module, features: Callable, mean: Sequence[float], std: Sequence[float],
                 size: int = 64):
        super().__init__()
        self.backbone, self.features, self.size = backbone, features, check_int("size", size, minimum=8)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.size, self.size):
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True,
                                   align_corners=False)                          # (B, 3, size, size)
        return self.features(self.backbone, (images - self.mean) / self.std)    # (B, D)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255


def tiles(image: np.ndarray, size: int = 128) -> torch.Tensor:
    """Non-overlapping ``size`` x ``size`` tiles of an (H, W, 3) uint8 image, row by row: (N, 3, size, size)."""
    size = check_int("size", size, minimum=1)
    x = to_tensor(image)
    if min(x.shape[1:]) < size:
        raise ParameterError(f"the image ({x.shape[1]}x{x.shape[2]}) is smaller than one {size} px tile")
    t = x.unfold(1, size, size).unfold(2, size, size)                           # (3, nh, nw, size, size)
    return t.permute(1, 2, 0, 3, 4).reshape(-1, 3, size, size).contiguous()


def random_crops(image: np.ndarray, n: int, size: int = 128, rng: np.random.Generator | None = None,
                 scale: tuple[int, int] = (64, 256)) -> torch.Tensor:
    """``n`` square crops of random side in ``scale`` at random places, resized to ``size``, on the 8-bit
    grid: (n, 3, size, size)."""
    rng = rng or np.random.default_rng(0)
    x = to_tensor(image)
    H, W = x.shape[1:]
    out = []
    for _ in range(check_int("n", n, minimum=1)):
        s = int(rng.integers(scale[0], min(scale[1], H, W) + 1))
        i, j = int(rng.integers(H - s + 1)), int(rng.integers(W - s + 1))
        crop = F.interpolate(x[None, :, i:i + s, j:j + s], size=(size, size), mode="bilinear",
                             antialias=True, align_corners=False)[0]
        out.append((crop.clamp(0, 1) * 255).round() / 255)
    return torch.stack(out)


@torch.no_grad()
def batched(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """``fn`` over ``images`` in chunks, without gradients, concatenated."""
    return torch.cat([fn(images[i:i + batch]) for i in range(0, len(images), batch)])


def grid(attacks: Mapping[str, Sequence[float]] | None = None) -> list[tuple[str, float]]:
    """(attack, strength) pairs: ``attacks`` name -> strengths, or every strength of every ``ATTACKS``."""
    attacks = attacks if attacks is not None else {n: a.strengths for n, a in ATTACKS.items()}
    return [(name, s) for name, strengths in attacks.items() for s in strengths]


def robustness(images: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor],
               pairs: Sequence[tuple[str, float]]) -> list[dict]:
    """Attack marked ``images`` with each (attack, strength) and average ``score`` (attacked batch -> (B,)
    per-image values: detections or bit accuracies).

    Returns:
        one row per pair: {"attack", "strength", "value"} (the mean over the images).
    """
    rows = []
    for name, strength in pairs:
        with torch.no_grad():
            values = score(attack(images, name, strength))
        rows.append({"attack": name, "strength": strength, "value": float(values.float().mean())})
    return rows


def lookup(rows: Sequence[dict], name: str, strength: float) -> float | None:
    """The value of (attack, strength) in ``robustness`` rows, or None if it was not run."""
    for r in rows:
        if r["attack"] == name and np.isclose(r["strength"], strength):
            return r["value"]
    return None


def false_positives(pvalues: np.ndarray, fprs: Sequence[float]) -> list[dict]:
    """Measured false-positive rate of unmarked images at each target ``fpr``: p-value < fpr.

    Returns:
        rows {"target FPR", "detected", "measured FPR"} ("detected" as "count / number").
    """
    p = np.asarray(pvalues, dtype=np.float64)
    return [{"target FPR": f, "detected": f"{int((p < f).sum())} / {len(p)}", "measured FPR": float((p < f).mean())}
            for f in fprs]
