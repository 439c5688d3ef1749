"""Marking: optimise the pixels of an image so that its feature carries the watermark, invisibly.

Fernandez et al., "Watermarking Images in Self-Supervised Latent Spaces", ICASSP 2022 (reference:
facebookresearch/ssl_watermarking, ``encode.py`` and ``utils_img.py``). Notebook 08_watermarking.

Each of ~100 Adam steps on the pixels: (1) the change from the original is attenuated by an SSIM heat map,
so it hides in textured regions where the eye does not see it; (2) it is scaled down to a PSNR budget
(42 dB); (3) one random differentiable augmentation (``data.attacks.MarkingAugment``) is applied so the mark
survives such edits; (4) the loss ``lambda_w * watermark_loss(phi(view)) + lambda_i * |x - x0|^2`` is
back-propagated to the pixels. At the end the image is constrained once more and rounded to 8 bits, with the
PSNR budget met *after* rounding.

Images are (B, 3, H, W) in [0, 1] (the reference works in ImageNet-normalised space; our extractor takes
[0, 1] and may normalise inside).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ParameterError, check_int
from ..data.attacks import MarkingAugment, as_batch

SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2  # SSIM's constants for a dynamic range of 1


def gaussian_window(size: int = 17, sigma: float = 1.5) -> torch.Tensor:
    """A normalised 1-D Gaussian kernel of ``size`` taps: (size,). Its outer product is the 2-D window."""
    t = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def gaussian_blur(t: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with zero padding: a vertical then a horizontal 1-D pass."""
    C, k = t.shape[1], len(window)
    w = window.to(t)
    t = F.conv2d(t, w.view(1, 1, k, 1).expand(C, 1, k, 1), padding=(k // 2, 0), groups=C)
    return F.conv2d(t, w.view(1, 1, 1, k).expand(C, 1, 1, k), padding=(0, k // 2), groups=C)


def ssim_heatmap(x: torch.Tensor, y: torch.Tensor, window: int = 17, sigma: float = 1.5) -> torch.Tensor:
    """Local SSIM between two image batches (B, C, H, W) in [0, 1]: (B, C, H, W), 1 where they agree.

    Means, variances and covariance are Gaussian-weighted over a ``window`` (Wang et al., 2004).
    """
    C = x.shape[1]
    moments = gaussian_blur(torch.cat([x, y, x * x, y * y, x * y], 1), gaussian_window(window, sigma))
    mu_x, mu_y, xx, yy, xy = moments.split(C, dim=1)                       # 5 x (B, C, H, W) local means
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    return ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)
            / ((mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (var_x + var_y + SSIM_C2)))


def attenuate(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Scale the change ``x - x0`` pixel-wise by the SSIM heat map (mean over channels, clipped at 0).

    Where the change would be visible (a flat region, low SSIM) it shrinks; in texture it stays.
    """
    heat = ssim_heatmap(x, x0).mean(1, keepdim=True).clamp_min(0)           # (B, 1, H, W) in [0, 1]
    return x0 + heat * (x - x0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image pair, peak 1: (B, C, H, W) x 2 -> (B,) (inf if equal)."""
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1)
    return (-10 * torch.log10(mse)).to(a.dtype)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest of the 256 levels of an 8-bit image, in [0, 1]."""
    return (x.clamp(0, 1) * 255).round() / 255


def clip_psnr(x0: torch.Tensor, x: torch.Tensor, target_db: float, *, rounded: bool = False) -> torch.Tensor:
    """Scale ``x - x0`` down, image by image, so that PSNR(x0, result) is at least ``target_db``.

    An image already within budget is returned unchanged (rounded if asked). Differentiable when not rounded
    (the marking loop runs through it). With ``rounded=True`` the result is 8-bit in [0, 1] and the budget
    holds *after* rounding and clamping: the scale is found by bisection on the rounded image, so the PSNR
    lands on the target within a few hundredths of a dB (for ``x0`` on the 8-bit grid).

    Args:
        x0: (B, C, H, W) originals; x: (B, C, H, W) changed images; target_db: the budget, e.g. 42.
    """
    delta = x - x0
    mse = (delta.double() ** 2).flatten(1).mean(1)                          # (B,)
    budget = 10 ** (-target_db / 10)                                         # the largest MSE allowed
    scale = torch.sqrt(budget / mse.clamp_min(1e-30)).clamp(max=1).to(x.dtype)  # (B,), 1 when within budget
    if not rounded:
        over = (scale < 1).view(-1, 1, 1, 1)
        return torch.where(over, x0 + scale.view(-1, 1, 1, 1) * delta, x)  # (B, C, H, W), x itself if within
    return _round_within_budget(x0.detach(), delta.detach(), target_db)


def _round_within_budget(x0: torch.Tensor, delta: torch.Tensor, target_db: float, steps: int = 30) -> torch.Tensor:
    """quantize(x0 + s delta) with the largest s in [0, 1] (per image, by bisection) that keeps the PSNR of
    the *rounded and clamped* image at or above ``target_db``: its error only grows with s, pixel by pixel."""
    def rounded_at(s):
        return quantize(x0 + s.view(-1, 1, 1, 1) * delta)

    ones = torch.ones(len(x0), dtype=x0.dtype, device=x0.device)
    ok = psnr(rounded_at(ones), x0) >= target_db                            # (B,) within budget as it is
    lo, hi = torch.zeros_like(ones), ones.clone()
    for _ in range(steps):
        mid = (lo + hi) / 2
        good = psnr(rounded_at(mid), x0) >= target_db
        lo, hi = torch.where(good, mid, lo), torch.where(good, hi, mid)
    return rounded_at(torch.where(ok, ones, lo))


@dataclass
class WatermarkConfig:
    """Settings of ``mark`` (defaults: the reference's ``main_0bit.py``)."""

    iterations: int = 100         # Adam steps on the pixels
    lr: float = 0.01              # Adam's learning rate, in [0, 1] pixel units
    lambda_w: float = 1.0         # weight of the watermark loss
    lambda_i: float = 1.0         # weight of the image loss |x - x0|^2 (summed over pixels)
    target_psnr: float = 42.0     # PSNR budget in dB, enforced every step and after rounding
    augment: bool = True          # one random differentiable augmentation per step
    ssim: bool = True             # SSIM attenuation of the change
    margin: float = 5.0           # multi-bit hinge margin m
    seed: int = 0                 # seed of the augmentations' draws
    augmentation: MarkingAugment = field(default_factory=MarkingAugment, repr=False)

    def __post_init__(self):
        check_int("iterations", self.iterations, minimum=1)
        check_int("seed", self.seed, minimum=0)
        for name in ("lr", "target_psnr", "margin"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ParameterError(f"{name}={value!r} must be a positive number")
        for name in ("lambda_w", "lambda_i"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ParameterError(f"{name}={value!r} must be a number >= 0")
        if self.target_psnr > 100:
            raise ParameterError(f"target_psnr={self.target_psnr!r} dB is beyond what 8-bit images can show; "
                                 "use 30..60 dB (42 in the paper)")
        for name in ("augment", "ssim"):
            if not isinstance(getattr(self, name), bool):
                raise ParameterError(f"{name}={getattr(self, name)!r} must be True or False")

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("augmentation")
        return d


@dataclass
class Marked:
    """What ``mark`` returns: the 8-bit marked images and one entry per step of each logged quantity."""

    images: torch.Tensor                  # (B, 3, H, W) in [0, 1], multiples of 1/255
    history: dict[str, list[float]]       # "loss", "psnr" (batch mean), and the objective's score name


@contextlib.contextmanager
def _frozen(module):
    """Switch off gradients of an ``nn.Module``'s parameters (the extractor stays fixed) for the block."""
    params = [p for p in getattr(module, "parameters", list)() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def constrain(x: torch.Tensor, x0: torch.Tensor, config: WatermarkConfig) -> torch.Tensor:
    """The image the optimiser's variable stands for: SSIM-attenuated, then within the PSNR budget."""
    if config.ssim:
        x = attenuate(x, x0)
    return clip_psnr(x0, x, config.target_psnr)


def mark(images: torch.Tensor, extractor, objective, config: WatermarkConfig | None = None) -> Marked:
    """Watermark a batch by optimising its pixels.

    Args:
        images: (B, 3, H, W) or (3, H, W) in [0, 1], ideally 8-bit (``quantize``).
        extractor: any callable (B, 3, h, w) in [0, 1] -> (B, D) features, e.g. ``watermark.Extractor``.
        objective: ``watermark.ZeroBit(key, cos_theta)`` or ``watermark.MultiBit(carriers, bits)``: its
            ``loss(features, margin)`` is minimised, its ``score(features)`` (R or bit accuracy) logged.
        config: the settings (``WatermarkConfig()`` by default).

    Returns:
        ``Marked(images, history)``: marked images like the input, 8-bit, with PSNR >= ``target_psnr``.
    """
    config = config or WatermarkConfig()
    x0, single = as_batch(images)
    x0 = x0.detach()
    if x0.min() < 0 or x0.max() > 1:
        raise ParameterError(f"images must lie in [0, 1]; got values in [{float(x0.min()):.3g}, {float(x0.max()):.3g}]")
    rng = np.random.default_rng(config.seed)
    x = x0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=config.lr)
    history: dict[str, list[float]] = {"loss": [], "psnr": [], objective.score_name: []}
    with _frozen(extractor):
        for _ in range(config.iterations):
            constrained = constrain(x, x0, config)
            view = config.augmentation(constrained, rng) if config.augment else constrained
            features = extractor(view)                                          # (B, D)
            loss_w = objective.loss(features, config.margin)
            loss_i = ((x - x0) ** 2).sum()                                      # on the variable, as the reference
            loss = config.lambda_w * loss_w + config.lambda_i * loss_i
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history["loss"].append(loss.item())
            history["psnr"].append(_mean_finite(psnr(constrained.detach(), x0)))
            history[objective.score_name].append(float(objective.score(features.detach()).mean()))
        with torch.no_grad():
            out = clip_psnr(x0, constrain(x, x0, config), config.target_psnr, rounded=True)
    return Marked(out[0] if single else out, history)


def _mean_finite(values: torch.Tensor) -> float:
    """Mean of the finite entries (an unchanged image has an infinite PSNR); inf if none is finite."""
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.inf
