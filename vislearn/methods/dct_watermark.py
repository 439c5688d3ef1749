"""A classical baseline: spread-spectrum watermarking in the DCT domain of the luminance.

Cox, Kilian, Leighton & Shamoon, "Secure spread spectrum watermarking for multimedia", IEEE TIP 1997,
in its simplest additive form, as the pixel-domain comparison of Fernandez et al. (ICASSP 2022) and
notebook 08_watermarking. A secret key holds K pseudo-random +-1 patterns over a band of mid-frequency
coefficients of the image's orthonormal 2-D DCT. Marking adds ``alpha * sum_k s_k p_k`` to those
coefficients of the luminance Y (the same change to R, G and B changes Y by exactly that, since Y's
weights sum to 1); ``alpha`` is chosen so the PSNR equals a target (Parseval: the orthonormal DCT keeps the
energy), then the image is rounded to 8 bits within that budget.

Detection correlates the band with each pattern: ``z_k = <y, p_k> / |y|``. For an unmarked image and a
random key, ``<y, p>`` is a sum of coefficients with random signs, so ``z`` is close to N(0, 1): a threshold
``tau = Phi^{-1}(1 - FPR)`` gives the false-positive rate (zero-bit), and bit k is the sign of ``z_k``
(multi-bit). The key is tied to the image size: an attacked image of another size is resized back first
(which undoes a resize, but not a crop: there is no synchronisation, which is the baseline's weakness).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import ParameterError, check_int
from ..data.attacks import as_batch
from .watermark_marking import clip_psnr

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix (n, n): ``C @ v`` is ``scipy.fft.dct(v, norm="ortho")``."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)      # (n, n)
    c[0] /= math.sqrt(2)
    return c


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT over the last two axes: (..., H, W) -> (..., H, W)."""
    ch, cw = dct_matrix(x.shape[-2]).to(x), dct_matrix(x.shape[-1]).to(x)
    return ch @ x @ cw.T


def idct2(coeffs: torch.Tensor) -> torch.Tensor:
    """Inverse of ``dct2`` (the transposes: the matrices are orthogonal)."""
    ch, cw = dct_matrix(coeffs.shape[-2]).to(coeffs), dct_matrix(coeffs.shape[-1]).to(coeffs)
    return ch.T @ coeffs @ cw


def luminance(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, H, W) luminance Y."""
    return torch.einsum("bchw,c->bhw", images, torch.tensor(LUMA, dtype=images.dtype, device=images.device))


@dataclass
class DctKey:
    """The secret: K +-1 patterns on a band of DCT coefficients of an (height, width) luminance."""

    patterns: torch.Tensor   # (K, L) +-1 float
    index: torch.Tensor      # (L,) flat indices of the band's coefficients in the (H * W) DCT
    height: int
    width: int

    @property
    def bits(self) -> int:
        return self.patterns.shape[0]


def dct_key(height: int, width: int, k: int = 1, generator: torch.Generator | None = None,
            band: tuple[float, float] = (0.3, 1.2)) -> DctKey:
    """A random key for (height, width) images: ``k`` patterns on the coefficients (u, v) whose normalised
    frequency ``u / H + v / W`` (0 to 2) lies in ``band``. Mid frequencies: the low ones carry most of the
    image's energy (the noise of the correlation) and are visible; the highest ones do not survive JPEG."""
    height, width = check_int("height", height, minimum=8), check_int("width", width, minimum=8)
    k = check_int("k", k, minimum=1)
    if not 0 < band[0] < band[1] <= 2:
        raise ParameterError(f"band={band} must be 0 < low < high <= 2 (normalised frequency u/H + v/W)")
    u = torch.arange(height)[:, None] / height
    v = torch.arange(width)[None, :] / width
    freq = (u + v).flatten()                                                   # (H * W,)
    index = torch.nonzero((freq >= band[0]) & (freq < band[1])).flatten()     # (L,)
    signs = torch.randint(0, 2, (k, len(index)), generator=generator)
    return DctKey(signs.float() * 2 - 1, index, height, width)


def _band(images: torch.Tensor, key: DctKey) -> torch.Tensor:
    """(B, 3, H, W) -> (B, L) the key's band of the luminance DCT, resizing to the key's size if needed."""
    if images.shape[-2:] != (key.height, key.width):
        images = F.interpolate(images, size=(key.height, key.width), mode="bilinear", antialias=True,
                               align_corners=False)
    return dct2(luminance(images.double())).flatten(1)[:, key.index]


def dct_embed(images: torch.Tensor, key: DctKey, bits: torch.Tensor | None = None,
              target_psnr: float = 42.0) -> torch.Tensor:
    """Watermark images at a PSNR of ``target_psnr`` dB after 8-bit rounding.

    Args:
        images: (B, 3, H, W) or (3, H, W) in [0, 1], of the key's size.
        key: from ``dct_key``.
        bits: (B, K) booleans, the messages; None for zero-bit (every pattern added with sign +1).
        target_psnr: the budget, in dB.

    Returns:
        The marked images, like the input, on the 8-bit grid.
    """
    x0, single = as_batch(images)
    B, _, H, W = x0.shape
    if (H, W) != (key.height, key.width):
        raise ParameterError(f"the key was made for {key.height}x{key.width} images; got {H}x{W}")
    if not 0 < target_psnr <= 100:
        raise ParameterError(f"target_psnr={target_psnr!r} must be in (0, 100] dB (42 in the paper)")
    signs = torch.ones(B, key.bits) if bits is None else bits.to(torch.float64) * 2 - 1   # (B, K)
    if signs.shape != (B, key.bits):
        raise ParameterError(f"bits must have shape (B, K) = ({B}, {key.bits}); got {tuple(signs.shape)}")
    pattern = signs.double() @ key.patterns.double()                          # (B, L)
    coeffs = torch.zeros(B, H * W, dtype=torch.float64)
    coeffs[:, key.index] = pattern
    change = idct2(coeffs.view(B, H, W))                                      # (B, H, W), energy |pattern|^2
    mse = 10 ** (-target_psnr / 10)
    alpha = torch.sqrt(mse * H * W / (pattern ** 2).sum(1))                   # (B,): mean(change^2) = mse
    # aim 10% over the budget: clipping (saturated pixels) and rounding then bring it back onto the target
    marked = x0.double() + 1.1 * alpha.view(B, 1, 1, 1) * change[:, None]
    out = clip_psnr(x0.double(), marked.clamp(0, 1), target_psnr, rounded=True).to(x0.dtype)
    return out[0] if single else out


def dct_scores(images: torch.Tensor, key: DctKey) -> torch.Tensor:
    """Normalised correlations ``z_k = <y, p_k> / |y|`` of the band with each pattern: (B, K), ~N(0, 1) if
    unmarked. Images of another size are resized to the key's size first."""
    band = _band(as_batch(images)[0], key)                                     # (B, L)
    return band @ key.patterns.double().T / band.norm(dim=1, keepdim=True).clamp_min(1e-12)


def dct_threshold(fpr: float) -> float:
    """The one-sided threshold on ``z`` with ``P(z > tau) = fpr`` under the N(0, 1) null."""
    from scipy.stats import norm

    if not 0 < fpr < 1:
        raise ParameterError(f"fpr={fpr!r} must be a probability strictly between 0 and 1 (e.g. 1e-6)")
    return float(norm.isf(fpr))


def dct_detect(images: torch.Tensor, key: DctKey, fpr: float = 1e-6) -> torch.Tensor:
    """Zero-bit detection with the first pattern: (B,) bool, ``z_0 > tau(fpr)``."""
    return dct_scores(images, key)[:, 0] > dct_threshold(fpr)


def dct_decode(images: torch.Tensor, key: DctKey) -> torch.Tensor:
    """Multi-bit decoding: (B, K) bool, the sign of each correlation."""
    return dct_scores(images, key) > 0
