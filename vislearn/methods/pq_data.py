"""Data and ground truth for the product-quantization notebook: Fashion-MNIST as PCA vectors.

Nearest-neighbour search papers (Jégou et al., TPAMI 2011; faiss's benchmarks) measure a method by
how often the true nearest neighbour of a query comes back among its first ``r`` results, "R@r". This
module prepares such a benchmark from Fashion-MNIST (Xiao et al., 2017): the training split is the
database, the test split the queries, both projected on the principal components of the database
(PCA fitted on the base only, then applied to the queries), and ``exact_knn`` computes the ground truth
by brute force. ``recall_at`` is faiss's definition of R@r (the fraction of queries whose true nearest
neighbour is in the first r results). Notebook 06_product_quantization builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..config import ParameterError, check_int
from ..data.fmnist import load_fashion_mnist_arrays
from .kmeans import as_vectors

PIXELS = 28 * 28
BLOCK_FLOATS = 1 << 22  # floats in one block of the (queries, base) distance matrix: 16 MiB


@dataclass(frozen=True)
class PCA:
    """A PCA projection: ``(x - mean) @ components.T``.

    Attributes:
        mean: (D,) float64.
        components: (dim, D) float64, orthonormal rows by decreasing variance; each row's largest
            entry (in absolute value) is positive, so the result does not depend on the eigensolver's signs.
        variances: (dim,) float64, the variance along each component.
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray

    def apply(self, x) -> np.ndarray:
        """Project (n, D) vectors; returns (n, dim) float32."""
        centred = torch.from_numpy(np.asarray(x, dtype=np.float64) - self.mean)
        return (centred @ torch.from_numpy(self.components).T).float().numpy()

    def invert(self, y) -> np.ndarray:
        """Map (n, dim) projections (or their reconstructions) back to (n, D): ``y @ components + mean``, float32."""
        y = torch.from_numpy(np.asarray(y, dtype=np.float64))
        return (y @ torch.from_numpy(self.components) + torch.from_numpy(self.mean)).float().numpy()


def fit_pca(x, dim: int) -> PCA:
    """Principal components of (n, D) vectors, from the eigenvectors of their covariance (float64)."""
    x = np.asarray(x, dtype=np.float64)
    dim = check_int("dim", dim, minimum=1)
    if x.ndim != 2 or dim > x.shape[1]:
        raise ParameterError(f"PCA to dim={dim} needs (n, D) data with D >= dim; got shape {x.shape}")
    mean = x.mean(0)
    xc = torch.from_numpy(x - mean)
    variances, vectors = torch.linalg.eigh(xc.T @ xc / len(x))  # (D,), (D, D), ascending
    variances, vectors = variances.numpy(), vectors.numpy()
    components = vectors[:, ::-1][:, :dim].T.copy()  # (dim, D), decreasing variance
    signs = np.sign(components[np.arange(dim), np.abs(components).argmax(1)])
    return PCA(mean, components * signs[:, None], variances[::-1][:dim].copy())


def _subset(images: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of n images drawn without replacement, sorted (all, in order, when n is the split's size)."""
    if n > len(images):
        raise ParameterError(f"asked for {n} vectors but the split holds only {len(images)} images")
    keep = np.arange(len(images))
    if n < len(images):
        keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:n])
    return keep


def fashion_mnist_pixels(split: str = "train", n: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The images behind ``fashion_mnist_pca``: pixels (n, 784) float32 in [0, 1] and labels (n,) int64.

    ``fashion_mnist_pixels("train", n_base, seed)`` are the base vectors before the projection and
    ``fashion_mnist_pixels("test", n_query, seed + 1)`` the queries, row for row.
    """
    images, labels = load_fashion_mnist_arrays(split)
    n = len(images) if n is None else check_int("n", n, minimum=1)
    keep = _subset(images, n, seed)
    return images[keep].reshape(n, PIXELS).astype(np.float32) / 255.0, labels[keep]


@lru_cache(maxsize=4)
def _fashion_mnist_pca(dim: int, n_base: int, n_query: int, seed: int) -> tuple[np.ndarray, np.ndarray, PCA]:
    base = fashion_mnist_pixels("train", n_base, seed)[0]
    queries = fashion_mnist_pixels("test", n_query, seed + 1)[0]
    pca = fit_pca(base, dim)
    return pca.apply(base), pca.apply(queries), pca


def fashion_mnist_pca(dim: int = 64, n_base: int = 60000, n_query: int = 10000, seed: int = 0,
                      return_pca: bool = False) -> tuple[np.ndarray, ...]:
    """Fashion-MNIST as a nearest-neighbour benchmark: base = train split, queries = test split.

    Pixels are scaled to [0, 1] and projected on the ``dim`` principal components of the base.

    Args:
        dim: PCA dimension (<= 784).
        n_base: database size (<= 60,000); a seeded random subset when smaller.
        n_query: number of queries (<= 10,000); likewise.
        seed: chooses the subsets.
        return_pca: also return the fitted ``PCA`` (to map vectors back to pixels with ``pca.invert``).

    Returns:
        base (n_base, dim) float32 and queries (n_query, dim) float32, the same for the same arguments;
        then the PCA if ``return_pca``.
    """
    args = (check_int("dim", dim, minimum=1), check_int("n_base", n_base, minimum=dim),
            check_int("n_query", n_query, minimum=1), check_int("seed", seed, minimum=0))
    base, queries, pca = _fashion_mnist_pca(*args)
    return (base.copy(), queries.copy(), pca) if return_pca else (base.copy(), queries.copy())


def exact_knn(queries, base, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force k nearest neighbours (squared L2, ``|q|^2 + |b|^2 - 2 <q, b>``), in blocks of queries.

    Args:
        queries: (nq, d).
        base: (n, d).
        k: neighbours per query, 1 <= k <= n.

    Returns:
        squared distances (nq, k) float32, increasing, and ids (nq, k) int64.
    """
    b = torch.from_numpy(as_vectors("base", base))
    q = torch.from_numpy(as_vectors("queries", queries, b.shape[1]))
    k = check_int("k", k, minimum=1)
    if k > len(b):
        raise ParameterError(f"k={k} neighbours were asked for, but the base holds only {len(b)} vectors")
    b_norms = (b * b).sum(1)  # (n,)
    distances = torch.empty(len(q), k)
    ids = torch.empty(len(q), k, dtype=torch.int64)
    step = max(1, BLOCK_FLOATS // len(b))
    for i0 in range(0, len(q), step):
        qb = q[i0:i0 + step]
        dis = torch.addmm((qb * qb).sum(1, keepdim=True) + b_norms, qb, b.t(), alpha=-2.0)  # (bq, n)
        distances[i0:i0 + step], ids[i0:i0 + step] = torch.topk(dis, k, dim=1, largest=False)
    return distances.clamp_(min=0.0).numpy(), ids.numpy()


def recall_at(ids, ground_truth, r: int) -> float:
    """faiss's R@r: the fraction of queries whose true nearest neighbour is among their first r results.

    Args:
        ids: (nq, >= r) result ids, best first.
        ground_truth: (nq,) true nearest neighbour, or (nq, k) true neighbours (column 0 is used).
        r: how many results count.
    """
    ids, gt = np.asarray(ids), np.asarray(ground_truth)
    r = check_int("r", r, minimum=1)
    if ids.ndim != 2 or r > ids.shape[1]:
        raise ParameterError(f"R@{r} needs (nq, >= {r}) result ids; got shape {ids.shape}")
    gt = gt.reshape(len(gt), -1)[:, 0] if gt.ndim > 1 else gt
    if len(gt) != len(ids):
        raise ParameterError(f"{len(ids)} result rows but {len(gt)} ground-truth rows")
    return float((ids[:, :r] == gt[:, None]).any(1).mean())
