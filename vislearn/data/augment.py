"""Augmentations, batched on tensors so they run fast on a CPU: all images of a batch at once.

- ``random_crop_flip``: translations of a few pixels and horizontal flips (notebook 01's loop).
- ``random_zoom``: objects at many sizes (notebook 04; ``fmnist.resize_images`` changes the resolution).
- ``MultiCrop``: DINO's 2 global + several local crops with colour jitter, grayscale, blur and
  solarization (Caron et al., 2021; ``DataAugmentationDINO`` in facebookresearch/dino), notebook 05.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .scenes import SCENES_MEAN, SCENES_STD


def random_crop_flip(x: torch.Tensor, pad: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Batch augmentation on any device: random translation by up to ``pad`` pixels, random h-flip.

    Args:
        x: images (B, C, H, W).
    """
    B, C, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="constant", value=float(x.min()))
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=generator).tolist()
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=generator).tolist()
    out = torch.stack([padded[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(B)])  # (B, C, H, W)
    flip = torch.rand(B, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def random_zoom(images: torch.Tensor, generator: torch.Generator | None = None,
                zoom: tuple[float, float] = (0.75, 2.0)) -> torch.Tensor:
    """Batch augmentation: scale each image by a random factor, about a random point.

    The factor is log-uniform in ``zoom``: above 1 the image is enlarged (a random crop, resized
    back), below 1 shrunk (inside a black border). This is what ImageNet's random-resized crops do
    to object sizes, and what lets a model recognize objects at a scale it was not shown at 1:1.

    Args:
        images: (B, C, H, W), with a black border (``pad_to_32``): the border is replicated.
    """
    return apply_zoom(images, zoom_params(images.shape[0], generator, zoom))


def zoom_params(batch: int, generator: torch.Generator | None = None,
                zoom: tuple[float, float] = (0.75, 2.0)) -> torch.Tensor:
    """The affine matrices ``random_zoom`` draws for a batch of ``batch`` images: (batch, 2, 3).

    Drawn apart from the images so that, under torchrun, every process can draw the whole global
    batch's zooms and keep its own slice: the same zooms one process would apply.
    """
    lo, hi = math.log(zoom[0]), math.log(zoom[1])
    z = torch.exp(torch.rand(batch, generator=generator) * (hi - lo) + lo)         # (B,) zoom factors
    slack = (1 - 1 / z).abs()                                                       # how far the view may move
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / z                                         # sample a (1/z)-sized window
    theta[:, :, 2] = (torch.rand(batch, 2, generator=generator) * 2 - 1) * slack[:, None]
    return theta


def apply_zoom(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample (B, C, H, W) images through (B, 2, 3) affine matrices (``zoom_params``)."""
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


# --- DINO's multi-crop ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MultiCropConfig:
    global_size: int = 64                              # side of the 2 global crops (the model's img_size)
    local_size: int = 32                               # side of the local crops (a multiple of the patch)
    n_local: int = 4                                   # number of local crops (0: global crops only)
    global_scale: tuple[float, float] = (0.4, 1.0)     # area of a global crop, as a fraction of the image
    local_scale: tuple[float, float] = (0.05, 0.4)     # area of a local crop
    ratio: tuple[float, float] = (3 / 4, 4 / 3)        # aspect ratio range of every crop
    flip: float = 0.5                                  # probability of a horizontal flip
    jitter: float = 0.8                                # probability of colour jitter
    brightness: float = 0.4                            # jitter strengths, as torchvision's ColorJitter
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1                                   # max hue rotation, as a fraction of the circle
    grayscale: float = 0.2                             # probability of dropping colour
    blur: tuple[float, float, float] = (1.0, 0.1, 0.5)  # blur probability: global 1, global 2, locals
    blur_sigma: tuple[float, float] = (0.1, 1.0)       # Gaussian blur sigma range, pixels
    solarize: float = 0.2                              # solarization probability of global crop 2


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _uniform(n: int, low: float, high: float, gen: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def random_resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float], ratio: tuple[float, float],
                        flip: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random crop of each image (area ``scale``, aspect ``ratio``), resized to size x size, with
    a random horizontal flip: all images at once, by one ``grid_sample``.

    Args:
        x: images (B, C, H, W).
    Returns:
        (B, C, size, size).
    """
    B = x.shape[0]
    area = _uniform(B, *scale, generator)
    log_r = _uniform(B, math.log(ratio[0]), math.log(ratio[1]), generator)
    w = (area * log_r.exp()).sqrt().clamp(max=1.0)     # crop width, as a fraction of the image width
    h = (area / log_r.exp()).sqrt().clamp(max=1.0)
    cx = (2 * torch.rand(B, generator=generator) - 1) * (1 - w)   # crop centre in [-1, 1] coordinates
    cy = (2 * torch.rand(B, generator=generator) - 1) * (1 - h)
    sign = torch.where(torch.rand(B, generator=generator) < flip, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta.to(x), [B, x.shape[1], size, size], align_corners=False)  # (B, s, s, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def color_jitter(x: torch.Tensor, p: float, brightness: float, contrast: float, saturation: float, hue: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """torchvision's ColorJitter, batched, on images in [0, 1] (B, 3, H, W); each image with prob. p.

    Hue is rotated in the YIQ colour space (a rotation of the two chroma axes), which is what a
    hue shift is, up to the small differences between YIQ and HSV.
    """
    B = x.shape[0]
    on = (torch.rand(B, generator=generator) < p).float().view(B, 1, 1, 1)
    b = 1 + on * _uniform(B, -brightness, brightness, generator).view(B, 1, 1, 1)
    c = 1 + on * _uniform(B, -contrast, contrast, generator).view(B, 1, 1, 1)
    s = 1 + on * _uniform(B, -saturation, saturation, generator).view(B, 1, 1, 1)
    angle = on.view(B) * _uniform(B, -hue, hue, generator) * 2 * math.pi
    x = (x * b).clamp(0, 1)
    luma = _LUMA.to(x).view(1, 3, 1, 1)
    mean = (x * luma).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)    # (B, 1, 1, 1)
    x = ((x - mean) * c + mean).clamp(0, 1)
    grey = (x * luma).sum(1, keepdim=True)                                    # (B, 1, H, W)
    x = ((x - grey) * s + grey).clamp(0, 1)
    cos, sin = angle.cos(), angle.sin()
    rot = torch.zeros(B, 3, 3)
    rot[:, 0, 0], rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = 1, cos, -sin, sin, cos
    m = (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).to(x)                                                   # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", m, x).clamp(0, 1)


def random_grayscale(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each image (B, 3, H, W) by its luma, repeated on 3 channels, with probability p."""
    on = (torch.rand(x.shape[0], generator=generator) < p).view(-1, 1, 1, 1)
    grey = (x * _LUMA.to(x).view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(x)
    return torch.where(on, grey, x)


def random_blur(x: torch.Tensor, p: float, sigma: tuple[float, float],
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian blur with a random sigma per image, with probability p: one grouped convolution."""
    B, C, H, W = x.shape
    if p <= 0:
        return x
    radius = max(1, math.ceil(2 * sigma[1]))
    s = _uniform(B, *sigma, generator)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-t[None] ** 2 / (2 * s[:, None] ** 2))                  # (B, 2r + 1)
    k = k / k.sum(1, keepdim=True)
    on = torch.rand(B, generator=generator) < p
    k[~on] = 0
    k[~on, radius] = 1                                                    # identity kernel: no blur
    k = k.to(x.device).repeat_interleave(C, 0)                            # (B * C, 2r + 1)
    y = F.pad(x.reshape(1, B * C, H, W), (radius,) * 4, mode="reflect")   # (1, B*C, H + 2r, W + 2r)
    y = F.conv2d(y, k.view(B * C, 1, 1, -1), groups=B * C)               # blur along rows
    y = F.conv2d(y, k.view(B * C, 1, -1, 1), groups=B * C)               # then along columns
    return y.view(B, C, H, W)


def random_solarize(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Invert the pixels above 0.5 (PIL's solarize at 128), with probability p per image."""
    on = (torch.rand(x.shape[0], generator=generator) < p).view(-1, 1, 1, 1)
    return torch.where(on & (x >= 0.5), 1 - x, x)


class MultiCrop:
    """DINO's augmentation: 2 global crops and ``n_local`` small local crops of every image.

    The two global views are augmented asymmetrically, as in the paper: the first always blurred,
    the second rarely blurred but sometimes solarized. Local crops see a small part of the image
    at low resolution; asking them to predict what the teacher says about a global view is the
    "local-to-global" correspondence that makes DINO's features object-aware.

    Args:
        cfg: crop sizes, scales and augmentation strengths.
        mean, std: per-channel normalization of the input images (undone, then redone).
    """

    def __init__(self, cfg: MultiCropConfig | None = None, mean: tuple[float, ...] = SCENES_MEAN,
                 std: tuple[float, ...] = SCENES_STD):
        self.cfg = cfg or MultiCropConfig()
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def _augment(self, x: torch.Tensor, size: int, scale, blur: float, solarize: float,
                 gen: torch.Generator | None) -> torch.Tensor:
        c = self.cfg
        x = random_resized_crop(x, size, scale, c.ratio, c.flip, gen)
        x = color_jitter(x, c.jitter, c.brightness, c.contrast, c.saturation, c.hue, gen)
        x = random_grayscale(x, c.grayscale, gen)
        x = random_blur(x, blur, c.blur_sigma, gen)
        x = random_solarize(x, solarize, gen)
        return (x - self.mean.to(x)) / self.std.to(x)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Normalized images (B, C, H, W) -> [global 1, global 2, local 1, ...]; globals are
        (B, C, global_size, global_size), locals (B, C, local_size, local_size)."""
        c = self.cfg
        x = (images * self.std.to(images) + self.mean.to(images)).clamp(0, 1)
        crops = [self._augment(x, c.global_size, c.global_scale, c.blur[0], 0.0, generator),
                 self._augment(x, c.global_size, c.global_scale, c.blur[1], c.solarize, generator)]
        crops += [self._augment(x, c.local_size, c.local_scale, c.blur[2], 0.0, generator)
                  for _ in range(c.n_local)]
        return crops
