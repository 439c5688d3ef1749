"""DeepCluster: k-means on the network's own features as pseudo-labels (Caron et al., 2018, "Deep
Clustering for Unsupervised Learning of Visual Features"), from scratch.

An epoch of DeepCluster has two halves. (1) Compute the features of every training image with the
current network, PCA-whiten them, L2-normalise them and cluster them with k-means into K groups:
each image's cluster is its *pseudo-label*. (2) Train the network for one epoch to predict those
pseudo-labels with a freshly initialised linear classifier, drawing images *uniformly over the
pseudo-labels* (a big cluster must not dominate; a tiny one must not vanish). Repeat. Nothing stops
the network from putting everything in one cluster except k-means itself (it re-seeds empty
clusters) and the uniform sampling.

Mapped to the reference implementation (facebookresearch/deepcluster, ``clustering.py``, ``main.py``,
``util.py``):

- ``preprocess``: ``preprocess_features``: faiss ``PCAMatrix(d, dim, eigen_power=-0.5)`` (PCA whitening
  to ``dim`` = 256 components), then each row divided by its L2 norm. Ours: ``watermark.Whitening``
  (the same whitening, from the covariance's eigenvectors), then ``F.normalize``.
- ``cluster``: ``run_kmeans``: faiss k-means (``niter`` 20, every point used:
  ``max_points_per_centroid`` 10^7), here ``kmeans.kmeans`` of notebook 06, which equals
  ``faiss.Kmeans`` point for point, including how it re-seeds an empty cluster (``split_clusters``).
- ``uniform_sampler``: ``UnifLabelSampler``: ``int(N / non-empty clusters) + 1`` draws per non-empty
  cluster (with replacement only if the cluster is that small or smaller), shuffled, cut or
  wrapped to N.
- ``new_classifier``: the top layer re-created every epoch, weights ~ N(0, 0.01), bias 0.
- ``nmi``: normalised mutual information (arithmetic mean of the entropies, scikit-learn's default),
  between successive epochs' assignments (how much the clusters still move) and with the true labels.

Built in notebook 10, with SwAV (``swav``) and PAWS (``paws``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ParameterError, check_int
from .kmeans import kmeans
from .watermark import Whitening


def preprocess(features: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """PCA-whiten (N, D) features to ``min(dim, D, rank)`` components, then L2-normalise each row.

    ``rank``: the directions the features really span (features after a ReLU often have dead units).
    faiss's PCAMatrix would whiten those null directions too, blowing rounding noise up to unit
    variance; we keep only the spanned ones, which gives the same result whenever the features have
    full rank.
    """
    if features.dim() != 2:
        raise ParameterError(f"features must be (N, D); got shape {tuple(features.shape)}")
    x = features.double()
    # singular values above 2e-4 of the largest: eigenvalues above 4e-8, safely above Whitening's 1e-8 floor
    rank = int(torch.linalg.matrix_rank(x - x.mean(0), rtol=2e-4))
    dim = min(check_int("dim", dim, minimum=1), features.shape[1], max(rank, 1))
    white = Whitening.fit(x, dim)
    return F.normalize(white(x), dim=1).to(features.dtype)


@dataclass
class Clusters:
    """One clustering of the training set.

    Attributes:
        labels: (N,) int64 pseudo-label of every image.
        members: per cluster, the indices of its images (the reference's ``images_lists``).
        objective: k-means's objective per iteration.
        resplit: how many empty clusters k-means re-seeded over all its iterations.
    """

    labels: np.ndarray
    members: list[np.ndarray]
    objective: np.ndarray
    resplit: int

    @property
    def empty(self) -> int:
        return sum(len(m) == 0 for m in self.members)


def cluster(features: torch.Tensor, k: int, *, dim: int = 256, iters: int = 20, seed: int = 0) -> Clusters:
    """Pseudo-labels: ``preprocess`` the features, then k-means into ``k`` clusters (faiss's algorithm)."""
    x = preprocess(features.float(), dim).numpy().astype(np.float32)
    result = kmeans(x, k, iters=iters, seed=seed)
    labels = result.assignments.astype(np.int64)
    members = [np.flatnonzero(labels == c) for c in range(k)]
    return Clusters(labels, members, result.objective, int(result.nsplit.sum()))


def uniform_sampler(members: list[np.ndarray], n: int, generator: np.random.Generator) -> np.ndarray:
    """An epoch's image order drawn uniformly over the pseudo-labels (``UnifLabelSampler``): (n,) indices.

    Each non-empty cluster gives ``int(n / non_empty) + 1`` images, with replacement only when it has
    no more than that many; the draws are shuffled, then cut to ``n`` (or wrapped around to ``n``).
    """
    non_empty = [m for m in members if len(m)]
    if not non_empty:
        raise ParameterError("every cluster is empty: nothing to sample")
    per_label = int(n / len(non_empty)) + 1
    drawn = np.concatenate([generator.choice(m, per_label, replace=len(m) <= per_label) for m in non_empty])
    generator.shuffle(drawn)
    if len(drawn) >= n:
        return drawn[:n].astype(np.int64)
    return np.resize(drawn, n).astype(np.int64)


def new_classifier(in_dim: int, k: int) -> nn.Linear:
    """The top layer DeepCluster re-creates at every epoch: weights ~ N(0, 0.01), bias 0."""
    layer = nn.Linear(in_dim, k)
    nn.init.normal_(layer.weight, 0.0, 0.01)
    nn.init.zeros_(layer.bias)
    return layer


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(a, b) -> float:
    """Normalised mutual information of two labellings, I(a; b) / ((H(a) + H(b)) / 2); 1 if both are constant."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ParameterError(f"two labellings of the same non-empty set are needed; got {a.shape} and {b.shape}")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    joint = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(joint, (ai, bi), 1)                                   # (|A|, |B|) contingency table
    ha, hb = _entropy(joint.sum(1)), _entropy(joint.sum(0))
    if ha == 0 and hb == 0:
        return 1.0
    mutual = ha + hb - _entropy(joint.ravel())
    return float(max(0.0, mutual) / ((ha + hb) / 2))


__all__ = ["Clusters", "cluster", "new_classifier", "nmi", "preprocess", "uniform_sampler"]
