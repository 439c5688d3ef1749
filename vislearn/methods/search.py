"""Similarity search at scale, in miniature: exact brute force, IVF-PQ, and k-NN graphs.

Johnson, Douze & Jégou, "Billion-scale similarity search with GPUs" (arXiv:1702.08734), sections 5-6.

* ``knn_search``: exact k-NN. Squared L2 distances come from one matrix multiply,
  ``|q|^2 - 2 <q, x> + |x|^2`` (section 5.1), inner products directly; queries go in batches and the base
  in blocks, each block's k best merged into the running k best, so memory stays bounded by the batch
  sizes. It runs on any torch device and matches ``faiss.IndexFlatL2`` / ``faiss.IndexFlatIP``.
* ``IVFPQ``: the inverted file with product-quantized residuals (Jégou et al., TPAMI 2011; section 5.2).
  A coarse k-means (``kmeans``) cuts space into ``nlist`` cells; a vector is stored in its cell's list
  as the PQ code of its residual ``x - c``; a query visits its ``nprobe`` nearest cells and scores each
  list by ADC on the tables of its own residual ``q - c``. It matches ``faiss.IndexIVFPQ``
  (faiss/IndexIVFPQ.cpp, and its GPU twin faiss/gpu/impl/IVFPQ.cu) given the same centroids, and
  ``IVFPQ.from_faiss`` / ``to_faiss`` copy an index in either direction.
* ``knn_graph``: every point's k nearest other points (the paper's k-NN graphs of Yfcc100M and Deep1B),
  and ``graph_recall`` to compare an approximate graph with the exact one.

The k-selection behind every top-k is ``torch.topk`` (faiss's GPU code uses WarpSelect / BlockSelect,
faiss/gpu/utils/WarpSelectKernel.cuh; ``kselect.py`` simulates it). Notebook 07_similarity_search
builds this file.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ParameterError, check_choice, check_int
from .kmeans import as_vectors, kmeans
from .pq import ProductQuantizer, as_codes, pack_codes, unpack_codes

METRICS = ("l2", "ip")
MISSING = float(np.finfo(np.float32).max)  # faiss's distance of an absent result


def _merge_topk(best, vals: torch.Tensor, ids: torch.Tensor, k: int, largest: bool):
    """Merge (b, k') candidates into the running (b, k) best."""
    if best is not None:
        vals, ids = torch.cat([best[0], vals], 1), torch.cat([best[1], ids], 1)  # (b, k + k')
    vals, order = torch.topk(vals, min(k, vals.shape[1]), dim=1, largest=largest)
    return vals, ids.gather(1, order)


def knn_search(queries, base, k: int, *, metric: str = "l2", batch_size: int = 1024, block_size: int = 65536,
               device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by brute force, like ``faiss.IndexFlatL2`` (``metric="l2"``) or
    ``faiss.IndexFlatIP`` (``metric="ip"``).

    Args:
        queries: (nq, d). base: (n, d).
        k: neighbours per query, 1 <= k <= n.
        metric: ``"l2"`` (squared distances, increasing) or ``"ip"`` (inner products, decreasing).
        batch_size: queries per batch; block_size: base vectors per block. At most
            ``batch_size * block_size`` distances exist at once.
        device: where the matrix multiplies run (``"cuda"`` on a GPU).

    Returns:
        distances (nq, k) float32 and ids (nq, k) int64.
    """
    check_choice("metric", metric, METRICS)
    b = torch.from_numpy(as_vectors("base", base))
    q = torch.from_numpy(as_vectors("queries", queries, b.shape[1]))
    k = check_int("k", k, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    block_size = check_int("block_size", block_size, minimum=1)
    if k > len(b):
        raise ParameterError(f"k={k} neighbours were asked for, but the base holds only {len(b)} vectors")
    device = torch.device(device)
    largest = metric == "ip"
    distances, ids = np.empty((len(q), k), np.float32), np.empty((len(q), k), np.int64)
    blocks = [b[i0:i0 + block_size].to(device) for i0 in range(0, len(b), block_size)]
    norms = [(x * x).sum(1) for x in blocks]  # (nb,) each
    for q0 in range(0, len(q), batch_size):
        qb = q[q0:q0 + batch_size].to(device)
        q_norms = (qb * qb).sum(1, keepdim=True)  # (bq, 1)
        best, i0 = None, 0
        for xb, xn in zip(blocks, norms, strict=True):
            if largest:
                dis = qb @ xb.t()  # (bq, nb)
            else:
                dis = torch.addmm(q_norms + xn, qb, xb.t(), alpha=-2.0).clamp_(min=0.0)  # (bq, nb)
            vals, pos = torch.topk(dis, min(k, len(xb)), dim=1, largest=largest)  # (bq, k')
            best = _merge_topk(best, vals, pos + i0, k, largest)
            i0 += len(xb)
        distances[q0:q0 + batch_size], ids[q0:q0 + batch_size] = best[0].cpu().numpy(), best[1].cpu().numpy()
    return distances, ids


class IVFPQ:
    """An inverted file of PQ-coded residuals (faiss's ``IndexIVFPQ``, L2, ``by_residual``).

    Args:
        d: dimension. nlist: number of coarse cells. M, nbits: the residual product quantizer.

    Attributes:
        centroids: (nlist, d) coarse centroids after ``train``.
        pq: the ``ProductQuantizer`` of the residuals.
        list_ids: nlist arrays (n_l,) int64 of the stored vectors' ids.
        list_codes: nlist arrays (n_l, M) of their codes.
    """

    def __init__(self, d: int, nlist: int, M: int, nbits: int = 8):
        self.d = check_int("d", d, minimum=1)
        self.nlist = check_int("nlist", nlist, minimum=1)
        self.pq = ProductQuantizer(d, M, nbits)
        self.centroids: np.ndarray | None = None
        self.reset()

    def __repr__(self) -> str:
        return f"IVFPQ(d={self.d}, nlist={self.nlist}, M={self.pq.M}, nbits={self.pq.nbits}, ntotal={self.ntotal})"

    def reset(self) -> None:
        """Empty the lists (keep the centroids)."""
        self.list_ids = [np.zeros(0, np.int64) for _ in range(self.nlist)]
        self.list_codes = [np.zeros((0, self.pq.M), self.pq.code_dtype) for _ in range(self.nlist)]

    @property
    def ntotal(self) -> int:
        return sum(len(i) for i in self.list_ids)

    @property
    def is_trained(self) -> bool:
        return self.centroids is not None and self.pq.is_trained

    def _require_trained(self, action: str) -> np.ndarray:
        if not self.is_trained:
            raise ParameterError(f"cannot {action} before the index is trained: call train(x) or from_faiss")
        return self.centroids

    def set_centroids(self, centroids) -> IVFPQ:
        """Use these (nlist, d) coarse centroids."""
        c = as_vectors("centroids", centroids, self.d)
        if len(c) != self.nlist:
            raise ParameterError(f"centroids has {len(c)} rows; this index has nlist={self.nlist} cells")
        self.centroids = c.copy()
        return self

    def train(self, x, *, iters: int = 20, seed: int = 0) -> IVFPQ:
        """Coarse k-means on x, then the PQ on the residuals of x to their nearest centroid."""
        x = as_vectors("x", x, self.d)
        if len(x) < max(self.nlist, self.pq.ksub):
            raise ParameterError(f"training needs at least max(nlist, 2**nbits)={max(self.nlist, self.pq.ksub)} "
                                 f"vectors; got {len(x)}")
        coarse = kmeans(x, self.nlist, iters=iters, seed=seed, max_points_per_centroid=256)
        self.centroids = coarse.centroids
        self.pq.train(x - self.centroids[coarse.assignments], iters=iters, seed=seed)
        return self

    def assign(self, x, nprobe: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The nprobe nearest cells of each vector: squared distances and cell ids, each (n, nprobe)."""
        c = self._require_trained("assign")
        nprobe = check_int("nprobe", nprobe, minimum=1, maximum=self.nlist)
        return knn_search(x, c, nprobe)

    def add(self, x, ids=None) -> None:
        """Encode (n, d) vectors into their cells' lists, with ids ``ntotal .. ntotal + n - 1`` unless given."""
        x = as_vectors("x", x, self.d)
        ids = np.arange(self.ntotal, self.ntotal + len(x)) if ids is None else np.asarray(ids, np.int64)
        if ids.shape != (len(x),):
            raise ParameterError(f"ids must have shape ({len(x)},), one per vector; got {ids.shape}")
        cells = self.assign(x)[1][:, 0]  # (n,)
        codes = self.pq.encode(x - self.centroids[cells])  # (n, M)
        for cell in np.unique(cells):
            rows = np.flatnonzero(cells == cell)
            self.list_ids[cell] = np.concatenate([self.list_ids[cell], ids[rows]])
            self.list_codes[cell] = np.concatenate([self.list_codes[cell], codes[rows]])

    def _list_terms(self) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """The query-independent part of a search, once per call: every list's codes as rows of the flat
        PQ codebook (n_l, M) and terms ``|r|^2 + 2 <c, r>`` (n_l,), r the residual a code stands for and c
        its cell's centroid (faiss's precomputed table of the cell, summed over the code); and the ids
        padded to (nlist, longest) with -1. One float per stored vector: the index stays codes."""
        M, ksub, dsub = self.pq.M, self.pq.ksub, self.pq.dsub
        pq_c = torch.from_numpy(self.pq.centroids)  # (M, ksub, dsub)
        coarse = torch.from_numpy(self.centroids).view(self.nlist, M, dsub)  # (nlist, M, dsub)
        term1 = torch.einsum("lmd,mjd->lmj", coarse, pq_c).mul_(2.0).add_((pq_c * pq_c).sum(-1))  # (nlist, M, ksub)
        sizes = np.array([len(i) for i in self.list_ids])
        starts = np.cumsum(sizes) - sizes
        cells = np.repeat(np.arange(self.nlist), sizes)  # (n,) cell of every stored vector
        codes = torch.from_numpy(np.concatenate(self.list_codes).astype(np.int64)) + torch.arange(M) * ksub  # (n, M)
        shifted = codes + torch.from_numpy(cells * (M * ksub))[:, None]  # (n, M) rows of the flat term1
        terms = F.embedding_bag(shifted, term1.reshape(-1, 1), mode="sum")[:, 0]  # (n,)
        ids = torch.full((self.nlist, max(1, int(sizes.max()))), -1, dtype=torch.int64)
        if len(cells):
            slots = np.arange(len(cells)) - np.repeat(starts, sizes)  # (n,) place in its list
            ids[torch.from_numpy(cells), torch.from_numpy(slots)] = torch.from_numpy(np.concatenate(self.list_ids))
        return [(codes[s:s + n], terms[s:s + n]) for s, n in zip(starts.tolist(), sizes.tolist(), strict=True)], ids

    def search(self, queries, k: int, *, nprobe: int = 1, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """k nearest stored vectors (ADC distances, increasing) among the nprobe nearest cells.

        No residual table is built per (query, cell). As with faiss's precomputed tables,
        ``|q - c - r|^2 = |q - c|^2 + (|r|^2 + 2 <c, r>) - 2 <q, r>`` for the decoded residual r of a code:
        the first term is the coarse distance, the second depends only on the cell and the code (once per
        stored vector and call, ``_list_terms``), the third is the ADC sum ``sum_m -2 <q_m, r_m>``, here one
        matrix product with the list's residuals, decoded from its codes when it is scanned (the index itself
        holds only codes). Queries go in batches of ``batch_size``; in a batch the (query, cell) pairs are
        grouped by cell, so each probed list is scanned once, by one ``addmm`` of all the batch's queries
        that probe it with the list's residuals (plus its terms); then one ``topk`` per batch.
        Like faiss, missing results (fewer than k candidates) are id -1 at distance ``MISSING`` (float32's largest).

        Returns:
            distances (nq, k) float32 and ids (nq, k) int64.
        """
        q = as_vectors("queries", queries, self.d)
        k = check_int("k", k, minimum=1)
        nprobe = check_int("nprobe", nprobe, minimum=1, maximum=self.nlist)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        self._require_trained("search")
        lists, list_ids = self._list_terms()  # nlist ((n_l, M), (n_l,)), (nlist, longest)
        flat = torch.from_numpy(self.pq.centroids).view(-1, self.pq.dsub)  # (M * ksub, dsub): decodes a probed list
        sizes = [len(i) for i in self.list_ids]
        longest = list_ids.shape[1]
        kk = min(k, nprobe * longest)
        distances, ids = np.empty((len(q), k), np.float32), np.empty((len(q), k), np.int64)
        for q0 in range(0, len(q), batch_size):
            qb = q[q0:q0 + batch_size]  # (b, d)
            b = len(qb)
            coarse_d, probes = self.assign(qb, nprobe)  # (b, nprobe) each
            pairs = probes.ravel()  # (b * nprobe,) pair p: query p // nprobe, its probe p % nprobe
            order = np.argsort(pairs, kind="stable")  # pairs grouped by cell
            cells, counts = np.unique(pairs, return_counts=True)
            left = torch.from_numpy(qb).index_select(0, torch.from_numpy(order // nprobe)).mul_(-2.0)  # (b * nprobe, d)
            dis = torch.full((b * nprobe, longest), float("inf"))  # (b * nprobe, longest), sorted pair order
            s = 0
            for cell, r in zip(cells.tolist(), counts.tolist(), strict=True):
                if sizes[cell]:
                    codes, terms = lists[cell]
                    residuals = flat.index_select(0, codes.view(-1)).view(sizes[cell], self.d)  # (n_l, d), this list
                    dis[s:s + r, :sizes[cell]] = torch.addmm(terms, left[s:s + r], residuals.t())  # (r, n_l)
                s += r
            inverse = torch.from_numpy(np.argsort(order))
            dis = dis.index_select(0, inverse).add_(torch.from_numpy(coarse_d).view(-1, 1))  # pair order
            vals, pos = torch.topk(dis.view(b, nprobe * longest), kk, dim=1, largest=False)  # (b, kk)
            found = list_ids.index_select(0, torch.from_numpy(pairs)).view(b, -1).gather(1, pos)
            vals[found < 0] = MISSING  # padding of short lists
            distances[q0:q0 + b], ids[q0:q0 + b] = MISSING, -1
            distances[q0:q0 + b, :kk], ids[q0:q0 + b, :kk] = vals.numpy(), found.numpy()
        return distances, ids

    # --- faiss interoperability -------------------------------------------------------------------

    @classmethod
    def from_faiss(cls, index) -> IVFPQ:
        """Copy a trained ``faiss.IndexIVFPQ``: coarse centroids, PQ centroids and inverted lists."""
        import faiss

        if not isinstance(index, faiss.IndexIVFPQ) or not index.is_trained:
            raise ParameterError(f"from_faiss needs a trained faiss.IndexIVFPQ; got {type(index).__name__}")
        if not index.by_residual or index.metric_type != faiss.METRIC_L2:
            raise ParameterError("from_faiss supports only L2 indexes with by_residual=True (faiss's default)")
        ours = cls(index.d, index.nlist, index.pq.M, index.pq.nbits)
        ours.set_centroids(index.quantizer.reconstruct_n(0, index.nlist))
        ours.pq = ProductQuantizer.from_faiss(index.pq)
        invlists = index.invlists
        for cell in range(index.nlist):
            size = invlists.list_size(cell)
            if size == 0:
                continue
            ids = faiss.rev_swig_ptr(invlists.get_ids(cell), size).copy()
            packed = faiss.rev_swig_ptr(invlists.get_codes(cell), size * index.code_size).copy()
            ours.list_ids[cell] = ids.astype(np.int64)
            codes = unpack_codes(packed.reshape(size, index.code_size), ours.pq.M, ours.pq.nbits)  # (size, M)
            ours.list_codes[cell] = codes.astype(ours.pq.code_dtype)
        return ours

    def to_faiss(self, with_lists: bool = True):
        """A ``faiss.IndexIVFPQ`` with these centroids (and, if ``with_lists``, these lists, codes copied)."""
        import faiss

        centroids = self._require_trained("export")
        quantizer = faiss.IndexFlatL2(self.d)
        quantizer.add(centroids)
        index = faiss.IndexIVFPQ(quantizer, self.d, self.nlist, self.pq.M, self.pq.nbits)
        index.own_fields = True
        quantizer.this.disown()
        faiss.copy_array_to_vector(self.pq.centroids.ravel(), index.pq.centroids)
        index.is_trained = True
        index.precompute_table()
        if with_lists:
            for cell in range(self.nlist):
                if len(self.list_ids[cell]):
                    codes = pack_codes(as_codes(self.list_codes[cell], self.pq.M, self.pq.ksub), self.pq.nbits)
                    index.invlists.add_entries(cell, len(codes), faiss.swig_ptr(self.list_ids[cell]),
                                               faiss.swig_ptr(np.ascontiguousarray(codes)))
            index.ntotal = self.ntotal
        return index


def knn_graph(x, k: int, *, index: IVFPQ | None = None, nprobe: int = 1, **search_options) -> np.ndarray:
    """Each point's k nearest other points (itself excluded): (n, k) int64 ids.

    Exact by default (``knn_search``); approximate with an ``index`` holding x with ids 0..n-1.
    """
    x = as_vectors("x", x)
    k = check_int("k", k, minimum=1)
    if k >= len(x):
        raise ParameterError(f"a k-NN graph of {len(x)} points has at most k={len(x) - 1} neighbours; got k={k}")
    if index is None:
        ids = knn_search(x, x, k + 1, **search_options)[1]  # (n, k + 1)
    else:
        if index.ntotal != len(x):
            raise ParameterError(f"the index holds {index.ntotal} vectors; add the {len(x)} points first")
        ids = index.search(x, k + 1, nprobe=nprobe, **search_options)[1]  # (n, k + 1)
    own = ids == np.arange(len(x))[:, None]  # (n, k + 1)
    drop = np.where(own.any(1), own.argmax(1), k)  # itself, or the last one when a duplicate pushed it out
    keep = np.ones_like(own)
    keep[np.arange(len(x)), drop] = False
    return ids[keep].reshape(len(x), k)  # (n, k)


def graph_recall(approx, exact) -> float:
    """Mean fraction of each point's exact neighbours found in its approximate list (both (n, k))."""
    approx, exact = np.asarray(approx), np.asarray(exact)
    if approx.ndim != 2 or approx.shape != exact.shape:
        raise ParameterError(f"graphs must have the same (n, k) shape; got {approx.shape} and {exact.shape}")
    hits = (approx[:, :, None] == exact[:, None, :]).any(1)  # (n, k)
    return float(hits.mean())
