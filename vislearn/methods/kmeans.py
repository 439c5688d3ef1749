"""k-means (Lloyd's algorithm) written from scratch, step for step as faiss does it.

Lloyd (1982): alternate (1) assign every point to its nearest centroid and (2) move every centroid to
the mean of its points. The objective, the sum of squared distances of the points to their centroids,
never increases. This module matches ``faiss.Clustering`` (faiss/Clustering.cpp and
faiss/impl/ClusteringHelpers.cpp) in every choice that changes the result:

* the objective of iteration ``i`` is measured *before* the centroids move (faiss's ``obj``);
* random initialisation takes the first ``k`` points of faiss's ``rand_perm(n, seed + 1)``, a
  Fisher-Yates shuffle driven by the same Mersenne Twister (std::mt19937), so the same seed picks the
  same points;
* with ``max_points_per_centroid`` set, a training set larger than ``k * max_points_per_centroid`` is
  subsampled with ``rand_perm(n, seed)`` exactly like faiss (faiss's default is 256; ours is ``None``:
  use every point);
* an empty cluster is re-seeded the way ``split_clusters`` does it: a donor cluster is drawn with a
  probability proportional to its size (minus one), the empty centroid takes a copy of the donor's,
  the two are pushed apart symmetrically by a relative 1/1024, and the donor's size is split in two;
* training stops early once the objective's relative change is ``<= early_stop_threshold`` (0: stop
  when it no longer changes at all).

k-means++ (Arthur & Vassilvitskii, 2007) is available as ``init="kmeans++"`` (our own random
numbers, so it is not draw-for-draw faiss's). Notebook 06_product_quantization builds this file;
product quantization (``pq.py``) runs it once per sub-space.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..config import ParameterError, check_choice, check_int

INITS = ("random", "kmeans++")
SPLIT_EPS = 1.0 / 1024.0  # faiss's relative perturbation of a split centroid ("a bit above float16's epsilon")
SPLIT_SEED = 1234  # split_clusters draws from a fresh RandomGenerator(1234) at every iteration
DISTANCE_BLOCK = 1 << 18  # floats in one block of the (points, centroids) distance matrix: 1 MiB, cache-sized


@dataclass
class KMeansResult:
    """What ``kmeans`` returns.

    Attributes:
        centroids: (k, d) float32, after the last update.
        assignments: (n,) int64, the nearest final centroid of every input point.
        objective: (iterations,) float64, faiss's ``obj``: the sum of squared distances of the training
            points to their nearest centroid at the start of each iteration, before the update.
        nsplit: (iterations,) int64, how many empty clusters were re-seeded at each iteration.
    """

    centroids: np.ndarray
    assignments: np.ndarray
    objective: np.ndarray
    nsplit: np.ndarray


# --- faiss's random numbers -------------------------------------------------------------------------

def mt19937(seed: int, count: int) -> np.ndarray:
    """The first ``count`` outputs of C++'s ``std::mt19937(seed)``, the generator of faiss's RandomGenerator.

    NumPy's legacy ``RandomState(seed)`` seeds the Mersenne Twister exactly like C++ (init_genrand), so
    we borrow its state and read raw 32-bit draws. Returns (count,) uint64 values below 2**32.
    """
    key, pos = np.random.RandomState(seed % 2**32).get_state()[1:3]
    bits = np.random.MT19937()
    bits.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": pos}}
    return bits.random_raw(count)


@lru_cache(maxsize=8)
def _rand_perm_cached(n: int, seed: int, m: int) -> tuple[int, ...]:
    steps = min(m, n - 1)  # the first m swaps of a Fisher-Yates shuffle fix its first m entries
    start = np.arange(steps, dtype=np.int64)
    targets = start + mt19937(seed, steps).astype(np.int64) % (n - start)  # faiss: i + rng.rand_int(n - i)
    perm = list(range(n))
    for i, j in enumerate(targets.tolist()):
        perm[i], perm[j] = perm[j], perm[i]
    return tuple(perm[:m])


def faiss_rand_perm(n: int, seed: int, m: int | None = None) -> np.ndarray:
    """The first ``m`` entries (all by default) of faiss's ``rand_perm(perm, n, seed)``, as (m,) int64."""
    m = n if m is None else min(m, n)
    return np.asarray(_rand_perm_cached(int(n), int(seed), int(m)), dtype=np.int64)


@lru_cache(maxsize=4)
def _split_uniforms(count: int) -> np.ndarray:
    # faiss's rand_float(): mt() / float(mt.max()), in float32 arithmetic
    return mt19937(SPLIT_SEED, count).astype(np.float32) / np.float32(4294967295.0)


# --- the two steps --------------------------------------------------------------------------------

def as_vectors(name: str, x, d: int | None = None) -> np.ndarray:
    """Validate a (n, d) array of vectors and return it as C-contiguous float32."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ParameterError(f"{name} must be a 2-D array (n, d); got shape {x.shape}")
    if d is not None and x.shape[1] != d:
        raise ParameterError(f"{name} has {x.shape[1]} dimensions per vector; expected d={d}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ParameterError(f"{name} must hold real numbers; got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ParameterError(f"{name} contains NaN or infinite values")
    return x


def _nearest(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid by squared L2, as faiss's IndexFlatL2 computes it: |x|^2 + |c|^2 - 2 <x, c>.

    Args:
        x: (n, d) float32.
        centroids: (k, d) float32.

    Returns:
        ids (n,) int64 and squared distances (n,) float32, clamped at 0 like faiss.
    """
    c_norms = (centroids * centroids).sum(1)  # (k,)
    ids = np.empty(len(x), dtype=np.int64)
    dists = np.empty(len(x), dtype=np.float32)
    step = max(1, DISTANCE_BLOCK // max(1, len(centroids)))
    for i0 in range(0, len(x), step):
        xb = x[i0:i0 + step]
        base = (xb * xb).sum(1, keepdim=True) + c_norms  # (b, k)
        dis = torch.addmm(base, xb, centroids.t(), alpha=-2.0).clamp_(min=0.0).numpy()  # (b, k), clamped first
        best = dis.argmin(1)  # NumPy's SIMD argmin (~10x torch's min here); exact ties go to the first, as in faiss
        ids[i0:i0 + step], dists[i0:i0 + step] = best, np.take_along_axis(dis, best[:, None], 1)[:, 0]
    return torch.from_numpy(ids), torch.from_numpy(dists)


def assign(x, centroids) -> tuple[np.ndarray, np.ndarray]:
    """Assign every vector to its nearest centroid (squared L2), in blocks that bound memory.

    Args:
        x: (n, d) vectors.
        centroids: (k, d) centroids.

    Returns:
        ids (n,) int64 and squared distances (n,) float32.
    """
    centroids = as_vectors("centroids", centroids)
    x = as_vectors("x", x, centroids.shape[1])
    ids, dists = _nearest(torch.from_numpy(x), torch.from_numpy(centroids))
    return ids.numpy(), dists.numpy()


def _kmeans_plus_plus(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """k-means++ seeding: each new centroid is a point drawn with probability proportional to D(x)^2.

    Args:
        x: (n, d) float32. Returns (k, d) float32.
    """
    rng = np.random.default_rng(seed)
    x64 = x.double()
    chosen = [int(rng.integers(len(x)))]
    dmin = ((x64 - x64[chosen[0]]) ** 2).sum(1)  # (n,) squared distance to the nearest chosen point
    for _ in range(1, k):
        total = float(dmin.sum())
        if total <= 0:  # every point sits on a centroid already: fall back to a uniform draw
            nxt = int(rng.integers(len(x)))
        else:
            nxt = int(np.searchsorted(torch.cumsum(dmin, 0).numpy(), rng.random() * total, side="left"))
            nxt = min(nxt, len(x) - 1)
        chosen.append(nxt)
        dmin = torch.minimum(dmin, ((x64 - x64[nxt]) ** 2).sum(1))
    return x[chosen].clone()


def _update_centroids(x64: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the points of every cluster (0 for an empty one) and the cluster sizes (float32, like faiss)."""
    sums = torch.zeros(k, x64.shape[1], dtype=torch.float64).index_add_(0, ids, x64)  # (k, d)
    counts = torch.bincount(ids, minlength=k).double()  # (k,)
    means = sums / counts.clamp(min=1).unsqueeze(1)
    return means.float().numpy(), counts.float().numpy()


def split_clusters(centroids: np.ndarray, counts: np.ndarray, n: int) -> int:
    """Re-seed every empty cluster in place, as faiss's ``split_clusters``; return how many were empty.

    For each empty cluster, in index order, donors ``j = 0, 1, ..., k-1, 0, ...`` are tried with a fresh
    faiss RandomGenerator(1234): donor ``j`` is taken when a uniform draw falls below
    ``(counts[j] - 1) / (n - k)``; after ``10 k`` failed tries the largest cluster is taken. The empty
    centroid copies the donor's, both are perturbed by a relative ``+-1/1024`` with opposite signs
    (alternating per coordinate), and the donor's size is split between them.

    Args:
        centroids: (k, d) float32, modified in place.
        counts: (k,) float32 cluster sizes, modified in place.
        n: the number of training points.
    """
    empty = np.flatnonzero(counts == 0)
    if len(empty) == 0:
        return 0
    k, d = centroids.shape
    max_tries = 10 * k
    denominator = np.float64(np.float32(n - k))
    up, down = np.float32(1 + SPLIT_EPS), np.float32(1 - SPLIT_EPS)
    even = np.arange(d) % 2 == 0
    grow = np.where(even, up, down).astype(np.float32)  # (d,) factors of the re-seeded centroid
    shrink = np.where(even, down, up).astype(np.float32)  # (d,) factors of its donor
    donors_tried = np.arange(max_tries) % k  # (max_tries,)
    used = 0  # draws consumed from the stream so far in this call
    for ci in empty:
        size = 1 << int(np.ceil(np.log2(used + max_tries)))
        draws = _split_uniforms(size)[used:used + max_tries]  # (max_tries,)
        accept = (counts.astype(np.float64) - 1.0) / denominator  # (k,)
        hits = np.flatnonzero(draws < accept[donors_tried])
        if len(hits):
            cj = int(donors_tried[hits[0]])
            used += int(hits[0]) + 1
        else:
            cj = int(np.argmax(counts))
            used += max_tries
        centroids[ci] = centroids[cj] * grow
        centroids[cj] = centroids[cj] * shrink
        counts[ci] = counts[cj] / np.float32(2)
        counts[cj] -= counts[ci]
    return len(empty)


def kmeans(x, k: int, *, iters: int = 25, seed: int = 0, init: str = "random", init_centroids=None,
           max_points_per_centroid: int | None = None, early_stop_threshold: float = 0.0) -> KMeansResult:
    """Lloyd's k-means, equal to ``faiss.Kmeans(d, k, niter=iters, seed=seed)`` given the same data.

    Args:
        x: (n, d) training vectors, n >= k.
        k: number of clusters.
        iters: Lloyd iterations (faiss's ``niter``); fewer if the objective stops changing.
        seed: seeds the subsampling (``rand_perm(n, seed)``) and the initialisation (``seed + 1``).
        init: ``"random"`` (k distinct training points, faiss's draw) or ``"kmeans++"``.
        init_centroids: (k, d) starting centroids; overrides ``init``.
        max_points_per_centroid: subsample to ``k * max_points_per_centroid`` points first, as faiss does
            (faiss's default is 256); ``None`` trains on every point.
        early_stop_threshold: stop once the relative change of the objective is at most this.
    """
    x = as_vectors("x", x)
    n, d = x.shape
    k = check_int("k", k, minimum=1)
    iters = check_int("iters", iters, minimum=0)
    seed = check_int("seed", seed, minimum=0)
    check_choice("init", init, INITS)
    if n < k:
        raise ParameterError(f"k-means needs at least k={k} training points to place {k} centroids; got n={n}")
    xt = x
    if max_points_per_centroid is not None:
        max_points_per_centroid = check_int("max_points_per_centroid", max_points_per_centroid, minimum=1)
        if n > k * max_points_per_centroid:
            xt = x[faiss_rand_perm(n, seed, k * max_points_per_centroid)]
    nt = len(xt)
    x_all, x_train = torch.from_numpy(x), torch.from_numpy(xt)

    if nt == k:  # faiss's corner case: the points are the centroids, one iteration of objective 0
        ids, _ = _nearest(x_all, x_train)
        return KMeansResult(xt.copy(), ids.numpy(), np.zeros(1), np.zeros(1, dtype=np.int64))
    if init_centroids is not None:
        centroids = as_vectors("init_centroids", init_centroids, d).copy()
        if len(centroids) != k:
            raise ParameterError(f"init_centroids has {len(centroids)} rows; expected k={k}")
    elif init == "random":
        centroids = xt[faiss_rand_perm(nt, seed + 1, k)].copy()
    else:
        centroids = _kmeans_plus_plus(x_train, k, seed).numpy()

    x64 = x_train.double()
    objective, nsplit = [], []
    for it in range(iters):
        ids, dists = _nearest(x_train, torch.from_numpy(centroids))
        objective.append(float(dists.double().sum()))
        centroids, counts = _update_centroids(x64, ids, k)
        nsplit.append(split_clusters(centroids, counts, nt))
        if it > 0:
            previous = objective[-2]
            change = abs(previous - objective[-1]) / abs(previous) if previous != 0 else np.inf
            if change <= early_stop_threshold:
                break
    ids, _ = _nearest(x_all, torch.from_numpy(centroids))
    return KMeansResult(centroids, ids.numpy(), np.asarray(objective, dtype=np.float64),
                        np.asarray(nsplit, dtype=np.int64))
