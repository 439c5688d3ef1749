"""Watermarks in a self-supervised latent space: the feature space, the keys, the detectors and their losses.

Fernandez, Sablayrolles, Furon, Jégou & Douze, "Watermarking Images in Self-Supervised Latent Spaces",
ICASSP 2022; reference implementation facebookresearch/ssl_watermarking (``utils.py``, ``decode.py``,
``build_normalization_layer.py``). Notebook 08_watermarking builds it.

The features ``x = phi(image)`` of an SSL backbone are whitened (PCA whitening as a linear layer), so that
for natural images they look like draws from an isotropic distribution: their directions are then close to
uniform on the sphere, and the false-positive rate of a cone detector has a closed form.

- Zero-bit: a secret unit key ``a``. An image is *marked* if its feature lies in the double cone
  ``|x . a| > |x| cos(theta)``. For a direction uniform on the sphere of ``R^D``,
  ``P(|cos| > c) = I_{1 - c^2}((D - 1) / 2, 1 / 2)`` (a regularised incomplete beta), so ``theta`` follows
  from the false-positive rate we accept (D = 2048, FPR = 1e-6: cos(theta) = 0.1078). Marking pushes the
  feature inside the cone by maximising ``R(x) = rho (x . a)^2 - |x|^2``, ``rho = 1 / cos^2(theta)``,
  positive exactly inside the cone.
- Multi-bit: K orthonormal carriers ``a_k``; bit k is the sign of ``x . a_k``; marking minimises the hinge
  ``sum_k max(0, m - (x . a_k) s_k)`` with ``s_k = +-1`` the message and margin ``m``.

The optimisation on the pixels lives in ``watermark_marking``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..config import ParameterError, check_int


class Whitening(nn.Module):
    """PCA whitening as a linear layer: ``y = W x + b``, ``W = diag(1 / sqrt(e)) V^T``, ``b = -W mean``.

    ``e`` and ``V`` are the eigenvalues and eigenvectors of the covariance of the features it was fitted on,
    so the fitted features come out with zero mean and identity covariance. Components are ordered by
    decreasing variance; ``dim`` keeps the first ones.

    Args:
        weight: (dim, D) whitening matrix.
        bias: (dim,) offset.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)
        self.linear.requires_grad_(False)

    @classmethod
    def fit(cls, features: torch.Tensor, dim: int | None = None, eps: float = 1e-8) -> Whitening:
        """Fit on (N, D) features, N > D; keep ``dim`` components (default: all D)."""
        if features.dim() != 2 or len(features) < 2:
            raise ParameterError(f"features must have shape (N, D) with N >= 2; got {tuple(features.shape)}")
        n, d = features.shape
        dim = d if dim is None else check_int("dim", dim, minimum=1, maximum=d)
        x = features.detach().double()
        mean = x.mean(0)                                                       # (D,)
        centred = x - mean                                                     # (N, D)
        cov = centred.T @ centred / (n - 1)                                    # (D, D)
        e, v = torch.linalg.eigh(cov)                                          # ascending eigenvalues
        e, v = e.flip(0)[:dim], v.flip(1)[:, :dim]                             # (dim,), (D, dim) largest first
        if e[-1] <= eps * e[0]:
            raise ParameterError(f"the features span fewer than dim={dim} directions (eigenvalue {float(e[-1]):.3g});"
                                 f" pass more than N={n} samples or a smaller dim")
        weight = torch.diag(e.rsqrt()) @ v.T                                   # (dim, D)
        bias = -(mean @ weight.T)                                              # (dim,)
        return cls(weight.to(features.dtype), bias.to(features.dtype))

    def whiten(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N, dim) whitened features."""
        return self.linear(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.whiten(features)


class Extractor(nn.Module):
    """phi: a backbone (images -> (B, D) features) followed by a ``Whitening``."""

    def __init__(self, backbone: nn.Module, whitening: Whitening):
        super().__init__()
        self.backbone, self.whitening = backbone, whitening

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.whitening(self.backbone(images))


# --- the cone and its false-positive rate -------------------------------------------------------------

def _check_dim(dim: int) -> int:
    return check_int("dim", dim, minimum=2)


def false_positive_rate(cos_theta, dim: int):
    """P(|u . a| > cos_theta) for u uniform on the unit sphere of R^dim: ``I_{1 - c^2}((dim - 1) / 2, 1 / 2)``.

    Accepts a number or an array of cosines in [0, 1]; returns float64 of the same shape.
    """
    from scipy.special import betainc

    c = np.asarray(cos_theta, dtype=np.float64)
    if np.any((c < 0) | (c > 1)) or np.any(np.isnan(c)):
        raise ParameterError(f"cos_theta must lie in [0, 1]; got {cos_theta!r}")
    out = betainc((_check_dim(dim) - 1) / 2, 0.5, 1 - c * c)
    return out if out.ndim else float(out)


def cone_angle(fpr: float, dim: int) -> float:
    """The half-angle theta (radians) of the double cone whose false-positive rate is ``fpr`` in R^dim."""
    from scipy.optimize import brentq

    _check_dim(dim)
    if not 0 < fpr < 1:
        raise ParameterError(f"fpr={fpr!r} must be a probability strictly between 0 and 1 (e.g. 1e-6)")
    target = math.log(fpr)
    # log FPR decreases from 0 (c = 0) to -inf (c = 1); solve in log space for small rates
    c = brentq(lambda c: math.log(max(false_positive_rate(c, dim), 1e-300)) - target, 0.0, 1.0,
               xtol=1e-14, rtol=1e-14)
    return math.acos(c)


def p_value(cosines, dim: int) -> np.ndarray:
    """The probability that a random direction is at least this close to the key: FPR at ``|cos|``.

    Args:
        cosines: (B,) cosines between features and key (a tensor or an array), signs ignored.

    Returns:
        (B,) float64 p-values (they underflow to 0 below ~1e-308).
    """
    if isinstance(cosines, torch.Tensor):
        cosines = cosines.detach().cpu().double().numpy()
    c = np.clip(np.abs(np.asarray(cosines, dtype=np.float64)), 0, 1)
    return np.asarray(false_positive_rate(c, dim))


# --- keys ---------------------------------------------------------------------------------------------

def secret_key(dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random direction, uniform on the unit sphere of R^dim: (dim,)."""
    a = torch.randn(_check_dim(dim), generator=generator, dtype=torch.float64)
    return (a / a.norm()).float()


def carriers(k: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """K random orthonormal directions of R^dim (Haar-distributed: QR of a Gaussian matrix): (K, dim)."""
    dim = _check_dim(dim)
    k = check_int("k", k, minimum=1, maximum=dim)
    g = torch.randn(dim, k, generator=generator, dtype=torch.float64)          # (dim, K)
    q, r = torch.linalg.qr(g)                                                  # (dim, K), (K, K)
    q = q * torch.sign(torch.diagonal(r))                                      # unique, uniform orthonormal frame
    return q.T.contiguous().float()                                            # (K, dim)


def random_bits(n: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, k) random messages as booleans."""
    return torch.rand(check_int("n", n, minimum=1), check_int("k", k, minimum=1), generator=generator) < 0.5


# --- detection and decoding ---------------------------------------------------------------------------

def _check_features(features: torch.Tensor, dim: int) -> torch.Tensor:
    if features.dim() != 2 or features.shape[1] != dim:
        raise ParameterError(f"features must have shape (B, {dim}) to match the key; got {tuple(features.shape)}")
    return features


def cosine(features: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """(B, D) features, (D,) key -> (B,) signed cosines."""
    features = _check_features(features, key.shape[-1])
    return features @ key / features.norm(dim=1).clamp_min(1e-12)


def acceptance(features: torch.Tensor, key: torch.Tensor, cos_theta: float) -> torch.Tensor:
    """R(x) = rho (x . a)^2 - |x|^2 with rho = 1 / cos^2(theta): (B,), positive inside the cone."""
    features = _check_features(features, key.shape[-1])
    rho = 1 / cos_theta ** 2
    return rho * (features @ key) ** 2 - (features * features).sum(1)


def detect(features: torch.Tensor, key: torch.Tensor, cos_theta: float) -> torch.Tensor:
    """Zero-bit detector: (B,) bool, True where ``|x . a| > |x| cos(theta)`` (the feature is in the cone)."""
    return cosine(features, key).abs() > cos_theta


def decode(features: torch.Tensor, carriers: torch.Tensor) -> torch.Tensor:
    """Multi-bit decoder: (B, D) features, (K, D) carriers -> (B, K) bits, True where ``x . a_k > 0``."""
    return _check_features(features, carriers.shape[-1]) @ carriers.T > 0


def bit_accuracy(decoded: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """(B, K) decoded and true bits -> (B,) fraction of bits decoded right."""
    return (decoded.bool() == bits.bool()).float().mean(1)


# --- losses (summed over the batch, as the reference: each image's gradient ignores the others) ---------

def zero_bit_loss(features: torch.Tensor, key: torch.Tensor, cos_theta: float) -> torch.Tensor:
    """-sum_b R(x_b): minimising it pushes every feature deeper into the cone."""
    return -acceptance(features, key, cos_theta).sum()


def multi_bit_loss(features: torch.Tensor, carriers: torch.Tensor, bits: torch.Tensor,
                   margin: float = 5.0) -> torch.Tensor:
    """sum_b mean_k max(0, m - (x_b . a_k) s_bk), ``s = 2 bits - 1``: zero once every bit has margin ``m``.

    Args:
        features: (B, D); carriers: (K, D); bits: (B, K) booleans (or 0/1).
    """
    if bits.shape != (features.shape[0], carriers.shape[0]):
        raise ParameterError(f"bits must have shape (B, K) = ({features.shape[0]}, {carriers.shape[0]}); "
                             f"got {tuple(bits.shape)}")
    signs = 2 * bits.to(features.dtype) - 1                                    # (B, K) +-1
    projections = _check_features(features, carriers.shape[-1]) @ carriers.T  # (B, K)
    return torch.clamp(margin - projections * signs, min=0).mean(1).sum()


class ZeroBit:
    """The zero-bit objective for ``mark``: a key and the cone's cosine (e.g. ``cos(cone_angle(1e-6, D))``)."""

    score_name = "R"

    def __init__(self, key: torch.Tensor, cos_theta: float):
        if not 0 < cos_theta < 1:
            raise ParameterError(f"cos_theta={cos_theta!r} must lie in (0, 1); use math.cos(cone_angle(fpr, dim))")
        self.key, self.cos_theta = key, float(cos_theta)

    def loss(self, features: torch.Tensor, margin: float) -> torch.Tensor:
        """``zero_bit_loss`` (the cone has no margin: ``margin`` is accepted for a common interface)."""
        return zero_bit_loss(features, self.key.to(features), self.cos_theta)

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """(B,) acceptance R: positive means detected."""
        return acceptance(features, self.key.to(features), self.cos_theta)


class MultiBit:
    """The multi-bit objective for ``mark``: (K, D) carriers and the (B, K) boolean messages to hide."""

    score_name = "bit_accuracy"

    def __init__(self, carriers: torch.Tensor, bits: torch.Tensor):
        if bits.dim() != 2 or bits.shape[1] != carriers.shape[0]:
            raise ParameterError(f"bits must have shape (B, K={carriers.shape[0]}); got {tuple(bits.shape)}")
        self.carriers, self.bits = carriers, bits.bool()

    def loss(self, features: torch.Tensor, margin: float) -> torch.Tensor:
        return multi_bit_loss(features, self.carriers.to(features), self.bits.to(features.device), margin)

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """(B,) fraction of the message's bits decoded right."""
        return bit_accuracy(decode(features, self.carriers.to(features)), self.bits.to(features.device))
