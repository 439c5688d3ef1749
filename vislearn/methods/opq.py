"""Optimized product quantization (OPQ): rotate the space so that PQ loses less.

Ge, He, Ke & Sun, "Optimized Product Quantization for Approximate Nearest Neighbor Search", CVPR 2013
(the non-parametric version). PQ cuts a vector into fixed sub-vectors; when the variance is spread
unevenly over them (PCA output puts most of it in the first dimensions) or the dimensions inside a
sub-vector are correlated, the codebooks are wasted. OPQ learns an orthogonal matrix ``R`` and
quantizes ``y = R x`` instead, alternating two steps that both lower ``sum |R x - decode(encode(R x))|^2``:

1. with ``R`` fixed, train the PQ on the rotated training vectors (a few k-means iterations, warm
   started from the previous codebooks);
2. with the codes fixed, the best rotation is an orthogonal Procrustes problem, solved by one SVD:
   if ``X^T Y = U S V^T`` (X the centred training vectors, Y their reconstructions), then
   ``R^T = U V^T``.

The schedule is faiss's ``OPQMatrix::train`` (faiss/VectorTransform.cpp): a random orthogonal start
(QR of a Gaussian matrix), ``niter=50`` outer iterations, 40 k-means iterations for the first PQ and 4
for the later ones, PQ subsampling at 1000 points per centroid, at most 65,536 training vectors; then,
as ``faiss.IndexPreTransform(OPQMatrix, IndexPQ)`` does, a fresh PQ is trained on the rotated vectors.
Notebook 06_product_quantization builds it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import ParameterError, check_int
from .kmeans import as_vectors, faiss_rand_perm
from .pq import ProductQuantizer


def random_rotation(d: int, seed: int = 0) -> np.ndarray:
    """A random (d, d) orthogonal matrix: the Q of the QR decomposition of a Gaussian matrix, float32."""
    gaussian = torch.from_numpy(np.random.default_rng(seed).standard_normal((d, d)))
    q, r = torch.linalg.qr(gaussian)
    return (q * torch.sign(torch.diagonal(r))).float().numpy()  # sign fix: Haar-distributed (Mezzadri, 2007)


def procrustes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The orthogonal (d, d) ``R`` minimising ``|x R^T - y|^2``.

    Args:
        x: (n, d) vectors, y: (n, d) targets. Returns R (d, d) float32.
    """
    xy = torch.from_numpy(x).double().T @ torch.from_numpy(y).double()  # (d, d)
    u, _, vt = torch.linalg.svd(xy)  # (d, d) each
    return (u @ vt).T.float().numpy()


class OPQ:
    """An OPQ rotation followed by a product quantizer.

    Args:
        d: vector dimension, a multiple of ``M``.
        M: number of sub-quantizers.
        nbits: bits per sub-quantizer.

    Attributes:
        rotation: (d, d) float32 orthogonal matrix ``R`` after ``train`` (faiss's ``OPQMatrix.A``);
            ``transform(x) = x @ R.T``.
        pq: the ``ProductQuantizer`` of the rotated vectors.
        train_error: (niter,) mean squared PQ reconstruction error of the centred training vectors,
            measured before each rotation update.
    """

    def __init__(self, d: int, M: int, nbits: int = 8):
        self.pq = ProductQuantizer(d, M, nbits)  # validates d, M, nbits
        self.d, self.M, self.nbits = self.pq.d, self.pq.M, self.pq.nbits
        self.rotation: np.ndarray | None = None
        self.train_error: np.ndarray | None = None

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "untrained"
        return f"OPQ(d={self.d}, M={self.M}, nbits={self.nbits}, {state})"

    @property
    def is_trained(self) -> bool:
        return self.rotation is not None and self.pq.is_trained

    def train(self, x, *, niter: int = 50, niter_pq: int = 4, niter_pq_0: int = 40, seed: int = 0,
              init_rotation=None, max_train_points: int = 65536, pq_iters: int = 25) -> OPQ:
        """Learn the rotation, then a PQ of the rotated vectors.

        Args:
            x: (n, d) training vectors.
            niter: alternations of PQ training and rotation update.
            niter_pq: k-means iterations of each warm-started PQ training.
            niter_pq_0: k-means iterations of the first PQ training.
            seed: seeds the random rotation, the subsampling and k-means.
            init_rotation: (d, d) orthogonal starting rotation instead of a random one.
            max_train_points: train the rotation on at most this many vectors (a faiss-style subsample).
            pq_iters: k-means iterations of the final PQ.
        """
        x = as_vectors("x", x, self.d)
        niter = check_int("niter", niter, minimum=0)
        seed = check_int("seed", seed, minimum=0)
        max_train_points = check_int("max_train_points", max_train_points, minimum=1)
        if len(x) < self.pq.ksub:
            raise ParameterError(f"OPQ training needs at least ksub=2**nbits={self.pq.ksub} vectors; got {len(x)}")
        if init_rotation is None:
            rotation = random_rotation(self.d, seed)
        else:
            rotation = np.asarray(init_rotation, dtype=np.float32)
            if rotation.shape != (self.d, self.d):
                raise ParameterError(f"init_rotation must have shape ({self.d}, {self.d}); got {rotation.shape}")
            if not np.allclose(rotation @ rotation.T, np.eye(self.d), atol=1e-4):
                raise ParameterError("init_rotation must be orthogonal (R @ R.T == I)")
        xs = x if len(x) <= max_train_points else x[faiss_rand_perm(len(x), seed, max_train_points)]
        xc = xs - xs.mean(0, dtype=np.float64).astype(np.float32)  # (n, d) centred, as faiss trains on
        pq = ProductQuantizer(self.d, self.M, self.nbits)
        errors = []
        for it in range(niter):
            xr = xc @ rotation.T  # (n, d) rotated
            pq.train(xr, iters=niter_pq_0 if it == 0 else niter_pq, seed=seed, max_points_per_centroid=1000,
                     init_centroids=None if it == 0 else pq.centroids)
            recons = pq.decode(pq.encode(xr))  # (n, d)
            errors.append(float(((recons - xr).astype(np.float64) ** 2).sum(1).mean()))
            rotation = procrustes(xc, recons)
        self.rotation, self.train_error = rotation, np.asarray(errors)
        self.pq.train(self.transform(x), iters=pq_iters, seed=seed)
        return self

    def _require_rotation(self) -> np.ndarray:
        if self.rotation is None:
            raise ParameterError("cannot use OPQ before it is trained: call train(x) first")
        return self.rotation

    def transform(self, x) -> np.ndarray:
        """Rotate (n, d) vectors: ``x @ R.T``, float32."""
        rotation = self._require_rotation()
        return as_vectors("x", x, self.d) @ rotation.T

    def encode(self, x) -> np.ndarray:
        """(n, d) vectors -> (n, M) codes of the rotated vectors."""
        return self.pq.encode(self.transform(x))

    def decode(self, codes) -> np.ndarray:
        """(n, M) codes -> (n, d) reconstructions in the original space (``R`` is orthogonal: ``y @ R``)."""
        return self.pq.decode(codes) @ self._require_rotation()

    def search(self, q, codes, k: int, *, mode: str = "adc") -> tuple[np.ndarray, np.ndarray]:
        """Rotate the queries, then ``ProductQuantizer.search``; distances are unchanged by a rotation."""
        return self.pq.search(self.transform(q), codes, k, mode=mode)

    @classmethod
    def from_faiss(cls, opq_matrix, pq) -> OPQ:
        """Copy a trained ``faiss.OPQMatrix`` and the ``faiss.ProductQuantizer`` (or IndexPQ) behind it."""
        import faiss

        ours = cls(opq_matrix.d_in, opq_matrix.M, getattr(pq, "pq", pq).nbits)
        ours.rotation = faiss.vector_to_array(opq_matrix.A).reshape(opq_matrix.d_out, opq_matrix.d_in).copy()
        ours.pq = ProductQuantizer.from_faiss(pq)
        return ours
