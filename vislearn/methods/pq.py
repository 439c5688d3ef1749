"""Product quantization (PQ): compact codes and nearest-neighbour search with look-up tables.

Jégou, Douze & Schmid, "Product quantization for nearest neighbor search", TPAMI 2011. A vector of
dimension ``d`` is cut into ``M`` sub-vectors of ``dsub = d / M`` dimensions; each sub-vector is
replaced by the index of its nearest centroid in a sub-codebook of ``ksub = 2**nbits`` centroids
learned by k-means. A vector becomes ``M`` small integers (``M * nbits`` bits).

Search never decodes the database. For a query ``q``, a table ``T[m, j] = |q_m - c_{m,j}|^2`` holds the
distance of each query sub-vector to each centroid; the distance to a code ``(j_1, ..., j_M)`` is then
``sum_m T[m, j_m]``: M look-ups and additions (asymmetric distance computation, ADC). The symmetric
variant (SDC) encodes the query as well and looks up centroid-to-centroid distances.

This module matches faiss's ``ProductQuantizer`` and ``IndexPQ`` (faiss/impl/ProductQuantizer.cpp,
faiss/IndexPQ.cpp): the same centroid layout (faiss stores them flat, ``(M, ksub, dsub)`` row-major),
the same codes (faiss packs codes of ``nbits != 8`` into a bit stream, see ``pack_codes``), the same
training (our ``kmeans`` per sub-space, with faiss's seed and subsampling), the same ADC/SDC distances.
Notebook 06_product_quantization builds it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ParameterError, check_choice, check_int
from .kmeans import INITS, as_vectors, kmeans

MODES = ("adc", "sdc")
MAX_NBITS = 16
BLOCK_FLOATS = 1 << 20  # floats in one block of a distance matrix (4 MiB): large enough for BLAS, small for the cache


def as_codes(codes, M: int, ksub: int) -> np.ndarray:
    """Validate (n, M) integer codes below ``ksub``; return them as a NumPy array."""
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ParameterError(f"codes must be a 2-D array (n, M); got shape {codes.shape}")
    if codes.shape[1] != M:
        raise ParameterError(f"codes have width {codes.shape[1]}; this quantizer writes M={M} codes per vector "
                             "(for faiss's packed bytes, call unpack_codes first)")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ParameterError(f"codes must be integers; got dtype {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() >= ksub):
        raise ParameterError(f"codes must lie in 0..{ksub - 1} (ksub=2**nbits); got {codes.min()}..{codes.max()}")
    return codes


def pack_codes(codes, nbits: int) -> np.ndarray:
    """Pack (n, M) codes of ``nbits`` bits into faiss's byte layout (PQEncoderGeneric: a little-endian
    bit stream, code ``m`` at bit ``m * nbits``). Returns (n, ceil(M * nbits / 8)) uint8."""
    codes = np.asarray(codes).astype(np.int64)
    n, M = codes.shape
    bits = ((codes[:, :, None] >> np.arange(nbits)) & 1).astype(np.uint8)  # (n, M, nbits), low bit first
    return np.packbits(bits.reshape(n, M * nbits), axis=1, bitorder="little")  # (n, code_size)


def unpack_codes(packed, M: int, nbits: int) -> np.ndarray:
    """Inverse of ``pack_codes``: faiss's (n, code_size) bytes -> (n, M) int64 codes."""
    packed = np.asarray(packed, dtype=np.uint8)
    bits = np.unpackbits(packed, axis=1, bitorder="little")[:, :M * nbits]  # (n, M * nbits)
    bits = bits.reshape(len(packed), M, nbits).astype(np.int64)  # (n, M, nbits)
    return (bits << np.arange(nbits)).sum(-1)  # (n, M)


def smallest_k(dist: torch.Tensor, ids: torch.Tensor | None, k: int,
               best: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge the k smallest entries of each column of ``dist`` (nb, nq) into ``best`` ((nq, k) values, ids)."""
    vals, pos = torch.topk(dist, min(k, len(dist)), dim=0, largest=False)  # (k', nq)
    vals, pos = vals.t(), (pos if ids is None else ids[pos]).t()  # (nq, k')
    if best is not None:
        vals, pos = torch.cat([best[0], vals], 1), torch.cat([best[1], pos], 1)  # (nq, k + k')
        vals, order = torch.topk(vals, k, dim=1, largest=False)
        pos = pos.gather(1, order)
    return vals, pos


class ProductQuantizer:
    """A product quantizer: ``M`` sub-quantizers of ``2**nbits`` centroids each on ``d / M`` dimensions.

    Args:
        d: vector dimension, a multiple of ``M``.
        M: number of sub-quantizers (sub-vectors).
        nbits: bits per sub-quantizer, 1..16; codes are uint8 up to 8 bits, uint16 above.

    Attributes:
        centroids: (M, ksub, dsub) float32 after ``train`` or ``set_centroids``, else None.
    """

    def __init__(self, d: int, M: int, nbits: int = 8):
        self.d = check_int("d", d, minimum=1)
        self.M = check_int("M", M, minimum=1)
        self.nbits = check_int("nbits", nbits)
        if not 1 <= self.nbits <= MAX_NBITS:
            raise ParameterError(f"nbits={nbits} is not allowed; choose 1..{MAX_NBITS} bits per sub-quantizer")
        if self.d % self.M:
            divisors = [m for m in range(1, self.d + 1) if self.d % m == 0]
            raise ParameterError(f"d={d} is not divisible by M={M}; M must divide d, e.g. one of {divisors}")
        self.dsub = self.d // self.M
        self.ksub = 1 << self.nbits
        self.code_dtype = np.uint8 if self.nbits <= 8 else np.uint16
        self.centroids: np.ndarray | None = None
        self.train_objective: np.ndarray | None = None  # (M, iterations) k-means objective per sub-space

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "untrained"
        return f"ProductQuantizer(d={self.d}, M={self.M}, nbits={self.nbits}, {state})"

    @property
    def is_trained(self) -> bool:
        return self.centroids is not None

    @property
    def code_size(self) -> int:
        """Bytes per vector once packed as faiss stores them."""
        return (self.M * self.nbits + 7) // 8

    def _require_trained(self, action: str) -> np.ndarray:
        if self.centroids is None:
            raise ParameterError(f"cannot {action} before the quantizer is trained: call train(x) or set_centroids")
        return self.centroids

    def set_centroids(self, centroids) -> ProductQuantizer:
        """Use these (M, ksub, dsub) centroids (also accepted flat, as faiss stores them)."""
        c = np.ascontiguousarray(np.asarray(centroids, dtype=np.float32))
        shape = (self.M, self.ksub, self.dsub)
        if c.size != np.prod(shape):
            raise ParameterError(f"centroids must have shape {shape} (M, ksub, dsub); got {c.shape}")
        self.centroids = c.reshape(shape).copy()
        return self

    def train(self, x, *, iters: int = 25, seed: int = 0, init: str = "random", init_centroids=None,
              max_points_per_centroid: int | None = 256) -> ProductQuantizer:
        """Learn the sub-codebooks: one ``kmeans`` per sub-space, as faiss's ``ProductQuantizer.train``.

        Args:
            x: (n, d) training vectors, n >= 2**nbits.
            iters: k-means iterations per sub-space.
            seed: k-means seed, the same for every sub-space (as faiss, whose default is 1234).
            init: ``"random"`` or ``"kmeans++"``.
            init_centroids: (M, ksub, dsub) warm start (faiss's ``Train_hot_start``), or None.
            max_points_per_centroid: faiss's subsampling of large training sets (256); None: use all.
        """
        x = as_vectors("x", x, self.d)
        check_choice("init", init, INITS)
        if len(x) < self.ksub:
            raise ParameterError(f"training needs at least ksub=2**nbits={self.ksub} vectors to place {self.ksub} "
                                 f"centroids per sub-space; got {len(x)} (lower nbits or pass more vectors)")
        if init_centroids is not None:
            init_centroids = np.asarray(init_centroids, dtype=np.float32)
            if init_centroids.size != self.M * self.ksub * self.dsub:
                raise ParameterError(f"init_centroids must have shape ({self.M}, {self.ksub}, {self.dsub}) "
                                     f"(M, ksub, dsub); got {init_centroids.shape}")
            init_centroids = init_centroids.reshape(self.M, self.ksub, self.dsub)
        centroids = np.empty((self.M, self.ksub, self.dsub), dtype=np.float32)
        objectives = []
        for m in range(self.M):
            result = kmeans(x[:, m * self.dsub:(m + 1) * self.dsub], self.ksub, iters=iters, seed=seed, init=init,
                            init_centroids=None if init_centroids is None else init_centroids[m],
                            max_points_per_centroid=max_points_per_centroid)
            centroids[m] = result.centroids
            objectives.append(result.objective)
        self.centroids = centroids
        width = max(len(o) for o in objectives)
        self.train_objective = np.stack([np.pad(o, (0, width - len(o)), mode="edge") for o in objectives])
        return self

    def _subvectors(self, x) -> torch.Tensor:
        x = torch.from_numpy(as_vectors("x", x, self.d))
        return x.view(len(x), self.M, self.dsub).transpose(0, 1)  # (M, n, dsub)

    def encode(self, x) -> np.ndarray:
        """Nearest centroid of every sub-vector. Returns (n, M) uint8 (nbits <= 8) or uint16 codes."""
        centroids = torch.from_numpy(self._require_trained("encode"))
        xs = self._subvectors(x)  # (M, n, dsub)
        c_norms = (centroids * centroids).sum(-1).unsqueeze(1)  # (M, 1, ksub)
        codes = np.empty((xs.shape[1], self.M), dtype=np.int64)
        step = max(1, BLOCK_FLOATS // (self.M * self.ksub))
        for i0 in range(0, xs.shape[1], step):
            # |x - c|^2 = |x|^2 + |c|^2 - 2 <x, c>; |x|^2 does not change the argmin
            dis = torch.baddbmm(c_norms, xs[:, i0:i0 + step], centroids.transpose(1, 2), alpha=-2.0)  # (M, b, ksub)
            codes[i0:i0 + step] = dis.numpy().argmin(-1).T  # (b, M); NumPy's SIMD argmin, first minimum on ties
        return codes.astype(self.code_dtype)

    def decode(self, codes) -> np.ndarray:
        """Replace every code by its centroid. Args: codes (n, M). Returns (n, d) float32."""
        centroids = self._require_trained("decode")
        codes = as_codes(codes, self.M, self.ksub).astype(np.int64)
        return centroids[np.arange(self.M), codes].reshape(len(codes), self.d)  # (n, M, dsub) -> (n, d)

    def compute_distance_tables(self, q) -> np.ndarray:
        """Squared L2 distance of each query sub-vector to each centroid.

        Args:
            q: (nq, d) queries.

        Returns:
            (nq, M, ksub) float32 tables ``T[i, m, j] = |q_i,m - c_m,j|^2``.
        """
        return self._tables(self._subvectors(q)).contiguous().numpy()

    def _tables(self, qs: torch.Tensor) -> torch.Tensor:
        """(M, nq, dsub) query sub-vectors -> (nq, M, ksub) ADC tables."""
        centroids = torch.from_numpy(self._require_trained("compute distance tables"))
        base = (qs * qs).sum(-1, keepdim=True) + (centroids * centroids).sum(-1).unsqueeze(1)  # (M, nq, ksub)
        tables = torch.baddbmm(base, qs, centroids.transpose(1, 2), alpha=-2.0).clamp_(min=0.0)  # (M, nq, ksub)
        return tables.transpose(0, 1)  # (nq, M, ksub)

    def sdc_table(self) -> np.ndarray:
        """Centroid-to-centroid squared distances of every sub-space: (M, ksub, ksub) float32."""
        c = torch.from_numpy(self._require_trained("compute SDC tables"))
        return self._tables(c).transpose(0, 1).contiguous().numpy()  # (ksub, M, ksub) -> (M, ksub, ksub)

    def search(self, q, codes, k: int, *, mode: str = "adc", query_batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """k nearest codes of every query, by ADC (query vs. centroids) or SDC (query code vs. centroids).

        The distance of a query to all codes is one ``embedding_bag`` (a fused gather-and-sum over the M
        table entries a code selects); queries go in batches of ``query_batch`` and the database in blocks,
        so memory stays bounded whatever the sizes.

        Args:
            q: (nq, d) queries.
            codes: (n, M) database codes from ``encode``.
            k: neighbours per query, 1 <= k <= n.
            mode: ``"adc"`` or ``"sdc"``.
            query_batch: queries per batch.

        Returns:
            distances (nq, k) float32, increasing, and ids (nq, k) int64 (rows of ``codes``).
        """
        check_choice("mode", mode, MODES)
        self._require_trained("search")
        qs = self._subvectors(q)  # (M, nq, dsub)
        codes = as_codes(codes, self.M, self.ksub)
        k = check_int("k", k, minimum=1)
        query_batch = check_int("query_batch", query_batch, minimum=1)
        if k > len(codes):
            raise ParameterError(f"k={k} neighbours were asked for, but the database holds only {len(codes)} codes")
        offsets = torch.arange(self.M) * self.ksub  # (M,) row of sub-space m's first centroid in the flat tables
        flat = torch.from_numpy(codes.astype(np.int64)) + offsets  # (n, M)
        if mode == "sdc":
            qcodes = torch.from_numpy(self.encode(q).astype(np.int64))  # (nq, M)
            sdc = torch.from_numpy(self.sdc_table())  # (M, ksub, ksub)
        nq, n = qs.shape[1], len(codes)
        block = max(k, BLOCK_FLOATS // min(query_batch, max(nq, 1)))
        distances = np.empty((nq, k), dtype=np.float32)
        ids = np.empty((nq, k), dtype=np.int64)
        for q0 in range(0, nq, query_batch):
            if mode == "adc":
                tables = self._tables(qs[:, q0:q0 + query_batch])  # (b, M, ksub)
            else:
                tables = sdc[torch.arange(self.M), qcodes[q0:q0 + query_batch]]  # (b, M, ksub)
            weight = tables.permute(1, 2, 0).reshape(self.M * self.ksub, -1)  # (M * ksub, b)
            best = None
            for i0 in range(0, n, block):
                dist = F.embedding_bag(flat[i0:i0 + block], weight, mode="sum")  # (nb, b)
                best = smallest_k(dist, None if i0 == 0 else torch.arange(i0, min(i0 + block, n)), k, best)
            distances[q0:q0 + query_batch], ids[q0:q0 + query_batch] = best[0].numpy(), best[1].numpy()
        return distances, ids

    # --- faiss interoperability -------------------------------------------------------------------

    @classmethod
    def from_faiss(cls, pq) -> ProductQuantizer:
        """Copy a trained ``faiss.ProductQuantizer`` (or the ``pq`` of a ``faiss.IndexPQ``)."""
        import faiss

        pq = getattr(pq, "pq", pq)
        ours = cls(pq.d, pq.M, pq.nbits)
        return ours.set_centroids(faiss.vector_to_array(pq.centroids))  # flat (M * ksub * dsub,)

    def to_faiss(self):
        """A ``faiss.ProductQuantizer`` holding these centroids."""
        import faiss

        pq = faiss.ProductQuantizer(self.d, self.M, self.nbits)
        faiss.copy_array_to_vector(self._require_trained("export").ravel(), pq.centroids)
        return pq

    def to_faiss_index(self, codes=None):
        """A ``faiss.IndexPQ`` with these centroids and, if given, these (n, M) database codes."""
        import faiss

        index = faiss.IndexPQ(self.d, self.M, self.nbits)
        faiss.copy_array_to_vector(self._require_trained("export").ravel(), index.pq.centroids)
        index.is_trained = True
        if codes is not None:
            codes = as_codes(codes, self.M, self.ksub)
            faiss.copy_array_to_vector(pack_codes(codes, self.nbits).ravel(), index.codes)
            index.ntotal = len(codes)
        return index
