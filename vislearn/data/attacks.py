"""Image attacks (what a watermark must survive) and the differentiable augmentation used while marking.

Fernandez, Sablayrolles, Furon, Jégou & Douze, "Watermarking Images in Self-Supervised Latent Spaces",
ICASSP 2022 (reference: facebookresearch/ssl_watermarking, ``evaluate.py``, ``data_augmentation.py``).

Attacks take images in [0, 1], one (3, H, W) or a batch (B, 3, H, W), and return the same layout. Their
strengths follow the reference: JPEG quality, rotation in degrees, centre crop and resize by *area*
fraction (the side shrinks by ``sqrt(area)``), blur by kernel size (torchvision's sigma = 0.15 k + 0.35),
brightness/contrast factors (1 = unchanged), hue shift in [-0.5, 0.5]. JPEG really encodes and decodes
through Pillow, so it is not differentiable; ``MarkingAugment`` is pure torch, so gradients reach the pixels.
Notebook 08_watermarking uses both.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from ..config import ParameterError, check_choice

BILINEAR = InterpolationMode.BILINEAR


def as_batch(images: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(3, H, W) or (B, 3, H, W) images -> (B, 3, H, W) float, and whether the input was a single image."""
    if not isinstance(images, torch.Tensor):
        raise ParameterError(f"images must be a torch.Tensor in [0, 1]; got {type(images).__name__}")
    single = images.dim() == 3
    batch = images.unsqueeze(0) if single else images
    if batch.dim() != 4 or batch.shape[1] != 3:
        raise ParameterError(f"images must have shape (3, H, W) or (B, 3, H, W); got {tuple(images.shape)}")
    if not batch.is_floating_point():
        raise ParameterError(f"images must be float tensors in [0, 1]; got dtype {batch.dtype}")
    return batch, single


def _per_batch(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Let ``fn`` (batch, strength) -> batch accept a single image too and keep the input's dtype."""
    @functools.wraps(fn)
    def wrapped(images: torch.Tensor, *strength: float) -> torch.Tensor:
        batch, single = as_batch(images)
        out = fn(batch, *strength).to(images.dtype)
        return out[0] if single else out
    return wrapped


@_per_batch
def jpeg(images: torch.Tensor, quality: float) -> torch.Tensor:
    """Real JPEG: each image is rounded to 8 bits, saved by Pillow at ``quality`` (1..100) and decoded."""
    from PIL import Image

    out = []
    for img in images:
        pixels = (img.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()  # (H, W, 3)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality))
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        out.append(torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 255)  # (3, H, W)
    return torch.stack(out).to(images.device)


@_per_batch
def rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate by ``degrees`` anticlockwise about the centre (bilinear); the corners become black."""
    return TF.rotate(images, float(degrees), interpolation=BILINEAR)


def _area_side(height: int, width: int, area: float) -> tuple[int, int]:
    side = math.sqrt(area)
    return max(1, int(height * side)), max(1, int(width * side))


@_per_batch
def center_crop(images: torch.Tensor, area: float) -> torch.Tensor:
    """Keep the central ``area`` fraction of the image (not resized back): (B, 3, H', W'), H' = H sqrt(area)."""
    return TF.center_crop(images, list(_area_side(*images.shape[-2:], area)))


@_per_batch
def resize(images: torch.Tensor, area: float) -> torch.Tensor:
    """Resize to ``area`` times the pixel count (bilinear, antialiased): (B, 3, H sqrt(area), W sqrt(area))."""
    return TF.resize(images, list(_area_side(*images.shape[-2:], area)), interpolation=BILINEAR, antialias=True)


@_per_batch
def blur(images: torch.Tensor, kernel_size: float) -> torch.Tensor:
    """Gaussian blur with an odd ``kernel_size`` (sigma = 0.15 kernel_size + 0.35, torchvision's rule)."""
    k = int(kernel_size)
    return images if k == 1 else TF.gaussian_blur(images, [k, k])


@_per_batch
def brightness(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Multiply the pixels by ``factor`` (0 gives black, 1 the image), clipped to [0, 1]."""
    return TF.adjust_brightness(images, float(factor))


@_per_batch
def contrast(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the mean grey level: 0 gives a grey image, 1 the image, 2 doubles the contrast."""
    return TF.adjust_contrast(images, float(factor))


@_per_batch
def hue(images: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue by ``shift`` turns of the colour wheel, in [-0.5, 0.5]."""
    return TF.adjust_hue(images, float(shift))


@_per_batch
def hflip(images: torch.Tensor, strength: float = 1) -> torch.Tensor:
    """Mirror left-right (``strength`` 1), or leave the image (0)."""
    return images.flip(-1) if strength else images


@_per_batch
def identity(images: torch.Tensor, strength: float = 0) -> torch.Tensor:
    """No attack: the reference point of every robustness table."""
    return images


class Attack(NamedTuple):
    """One entry of ``ATTACKS``: the function, the strengths of a robustness curve, the allowed range."""

    function: Callable[[torch.Tensor, float], torch.Tensor]
    strengths: tuple[float, ...]  # the reference's evaluation grid (evaluate.py)
    low: float                    # smallest allowed strength
    high: float                   # largest allowed strength
    unit: str                     # what the strength means, for error messages and table headers


ATTACKS: dict[str, Attack] = {
    "none": Attack(identity, (0,), 0, 0, "no strength"),
    "jpeg": Attack(jpeg, tuple(range(10, 101, 10)), 1, 100, "quality"),
    "rotation": Attack(rotate, tuple(range(0, 45, 5)), -180, 180, "degrees"),
    "crop": Attack(center_crop, tuple(round(0.1 * i, 1) for i in range(1, 11)), 0.01, 1, "area fraction kept"),
    "resize": Attack(resize, tuple(round(0.1 * i, 1) for i in range(1, 11)), 0.01, 4, "area scale"),
    "blur": Attack(blur, tuple(range(1, 20, 2)), 1, 99, "odd kernel size"),
    "brightness": Attack(brightness, (0.5, 1.0, 1.5, 2.0), 0, 10, "factor"),
    "contrast": Attack(contrast, (0.0, 0.5, 1.0, 1.5, 2.0), 0, 10, "factor"),
    "hue": Attack(hue, (-0.5, -0.25, 0.0, 0.25, 0.5), -0.5, 0.5, "shift in turns"),
    "hflip": Attack(hflip, (1,), 0, 1, "0 or 1"),
}


def check_strength(name: str, strength: float) -> float:
    """``strength`` if attack ``name`` accepts it, else a ParameterError naming the allowed range."""
    spec = ATTACKS[check_choice("attack", name, ATTACKS)]
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.integer, np.floating)):
        raise ParameterError(f"strength for attack {name!r} must be a number ({spec.unit}); got {strength!r}")
    if not spec.low <= strength <= spec.high:
        raise ParameterError(f"strength={strength!r} is out of range for attack {name!r}: "
                             f"choose {spec.unit} in [{spec.low}, {spec.high}]")
    if name == "blur" and (int(strength) != strength or int(strength) % 2 == 0):
        raise ParameterError(f"strength={strength!r} for attack 'blur' must be an odd kernel size (1, 3, 5, ...)")
    if name in ("jpeg", "hflip") and int(strength) != strength:
        raise ParameterError(f"strength={strength!r} for attack {name!r} must be an integer ({spec.unit})")
    return strength


def attack(images: torch.Tensor, name: str, strength: float | None = None) -> torch.Tensor:
    """Apply attack ``name`` (a key of ``ATTACKS``) at ``strength``; None picks the middle of its curve."""
    check_choice("attack", name, ATTACKS)
    spec = ATTACKS[name]
    if strength is None:
        strength = spec.strengths[len(spec.strengths) // 2]
    return spec.function(images, check_strength(name, strength))


def combine(images: torch.Tensor, steps: Sequence[tuple[str, float]]) -> torch.Tensor:
    """Apply several attacks in order, e.g. ``combine(x, [("crop", 0.5), ("jpeg", 50)])``."""
    for step in steps:
        if not isinstance(step, (tuple, list)) or len(step) != 2:
            raise ParameterError(f"each step of combine must be a pair (attack name, strength); got {step!r}")
        images = attack(images, *step)
    return images


# --- the differentiable augmentation of the marking loop (data_augmentation.All) ---------------------

AUGMENTATIONS = ("none", "rotation", "crop", "resize", "blur")


class MarkingAugment:
    """One random, differentiable transformation per call, the same for the whole batch.

    Chosen uniformly among none, rotation, crop, resize and blur, then a horizontal flip with probability
    1/2, as the reference's ``All``. Pure torch (``grid_sample``, slicing, ``interpolate``, ``conv2d``): the
    marking loss can be back-propagated to the pixels through it.

    Args:
        degrees: rotation amplitude; angles are von Mises(0, 1) * degrees / pi, as the reference.
        crop_area: range of the area fraction of a random crop (aspect ratio in [3/4, 4/3]).
        resize_area: range of the area scale of a resize.
        max_blur: largest (odd) blur kernel size.
        flip: whether to flip half of the time.
    """

    def __init__(self, *, degrees: float = 30.0, crop_area: tuple[float, float] = (0.2, 1.0),
                 resize_area: tuple[float, float] = (0.2, 1.0), max_blur: int = 17, flip: bool = True):
        for label, (lo, hi) in (("crop_area", crop_area), ("resize_area", resize_area)):
            if not 0 < lo <= hi <= 1:
                raise ParameterError(f"{label}={(lo, hi)} must be a range 0 < low <= high <= 1 of area fractions")
        if max_blur < 1:
            raise ParameterError(f"max_blur={max_blur} must be an odd kernel size >= 1")
        self.degrees, self.crop_area, self.resize_area = degrees, crop_area, resize_area
        self.max_blur, self.flip = max_blur, flip

    def sample(self, height: int, width: int, rng: np.random.Generator) -> tuple[str, tuple, bool]:
        """Draw (kind, parameters, flip) for images of size (height, width)."""
        kind = AUGMENTATIONS[rng.integers(len(AUGMENTATIONS))]
        flip = bool(self.flip and rng.random() < 0.5)
        if kind == "rotation":
            return kind, (float(rng.vonmises(0, 1)) * self.degrees / math.pi,), flip
        if kind == "crop":
            area = rng.uniform(*self.crop_area) * height * width
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            h = min(height, max(1, round(math.sqrt(area / ratio))))
            w = min(width, max(1, round(math.sqrt(area * ratio))))
            return kind, (int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1)), h, w), flip
        if kind == "resize":
            h, w = _area_side(height, width, rng.uniform(*self.resize_area))
            return kind, (max(h, 8), max(w, 8)), flip
        if kind == "blur":
            k = int(rng.integers(1, self.max_blur + 1))
            return kind, (k - (1 - k % 2),), flip  # odd
        return kind, (), flip

    @staticmethod
    def apply(images: torch.Tensor, params: tuple[str, tuple, bool]) -> torch.Tensor:
        """Apply sampled ``params`` to (B, 3, H, W) images; the output may be smaller (crop, resize)."""
        kind, p, flip = params
        if kind == "rotation":
            images = TF.rotate(images, p[0], interpolation=BILINEAR)
        elif kind == "crop":
            top, left, h, w = p
            images = images[..., top:top + h, left:left + w]
        elif kind == "resize":
            images = TF.resize(images, list(p), interpolation=BILINEAR, antialias=True)
        elif kind == "blur" and p[0] > 1:
            images = TF.gaussian_blur(images, [p[0], p[0]])
        return images.flip(-1) if flip else images

    def __call__(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """A random transformation of the (B, 3, H, W) batch, drawn from ``rng``."""
        return self.apply(images, self.sample(*images.shape[-2:], rng))
