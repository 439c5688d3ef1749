"""k-selection: the k smallest entries of every row, five ways, and a simulation of WarpSelect.

Johnson, Douze & Jégou, "Billion-scale similarity search with GPUs" (IEEE Trans. Big Data 2019,
arXiv:1702.08734), sections 4.3-4.4. After a distance matrix is computed, search needs the k smallest
entries of each of its rows. Every function here takes an (nq, n) array or tensor and returns
``(values, indices)``, each (nq, k), ascending, with ties broken by index (the order of a stable
``np.argsort``), so all of them return exactly the same thing for any input:

* ``full_sort``: sort the whole row (n log n);
* ``partial_sort``: ``np.argpartition`` finds the k-th value in linear time, then only the k are sorted;
* ``heap_select``: a max-heap of the k best so far (``heapq``, one row at a time: slow, but the textbook one);
* ``topk_select``: ``torch.topk``, on whatever device the tensor lives;
* ``warp_select``: the paper's WarpSelect simulated step by step: a warp of 32 lanes reads 32 values at a
  time; each lane keeps a sorted *thread queue* of ``t`` values and the warp a sorted *warp queue* of k.
  A value enters its lane's thread queue only if it beats the warp queue's largest (the threshold).
  When any thread queue is full, the warp sorts all 32 t thread-queue entries and merges them into the
  warp queue with Batcher's odd-even merge network, and the threshold is updated.

It matches faiss's GPU WarpSelect (faiss/gpu/utils/WarpSelectKernel.cuh, Select.cuh; BlockSelect is the
same with one warp queue per warp of a block) in what decides the work: the strided reading (lane j
reads items j, j + 32, ...), the insertion test against a threshold that only changes at merges, the
warp-wide "any queue full" vote, and the final merge. ``insertion_analysis`` compares the measured
insertions with the count for a threshold that is always exact, ``sum_i min(1, k / i)`` for a random
order (element i enters when it is among the k smallest of the first i: probability k / i), i.e. about
``k (1 + ln(n / k))``. Notebook 07_similarity_search builds this file.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..config import ParameterError, check_choice, check_int

LANES = 32  # threads in a warp
ORDERS = ("random", "ascending", "descending")


def _rows(x, k) -> tuple[np.ndarray, int]:
    """Validate an (nq, n) array or tensor and 1 <= k <= n; return it as a NumPy array and k."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ParameterError(f"k-selection needs a 2-D (nq, n) array; got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ParameterError(f"k-selection needs real numbers; got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
        raise ParameterError("k-selection got NaN values; they have no order (replace them, e.g. by +inf)")
    k = check_int("k", k, minimum=1)
    if k > x.shape[1]:
        raise ParameterError(f"k={k} is larger than the row length n={x.shape[1]}; choose 1 <= k <= n")
    return x, k


def _like(x, values: np.ndarray, indices: np.ndarray):
    """Return NumPy results as tensors on x's device when x is a tensor."""
    if isinstance(x, torch.Tensor):
        return torch.from_numpy(values).to(x.device), torch.from_numpy(indices).to(x.device)
    return values, indices


def full_sort(x, k: int):
    """Sort every row (stable) and keep the first k."""
    a, k = _rows(x, k)
    idx = np.argsort(a, axis=1, kind="stable")[:, :k]  # (nq, k)
    return _like(x, np.take_along_axis(a, idx, 1), idx)


def _ties_by_index(less: np.ndarray, equal: np.ndarray, k: int) -> np.ndarray:
    """Mask of the k selected entries: all those below the k-th value, then the lowest-index ties."""
    need = k - less.sum(1, keepdims=True)  # (nq, 1) ties to take
    chosen = less | (equal & (np.cumsum(equal, 1) <= need))  # (nq, n), exactly k per row
    return np.nonzero(chosen)[1].reshape(len(chosen), k)  # (nq, k), ascending index


def partial_sort(x, k: int):
    """``np.argpartition`` (introselect) for the k-th value, then sort only the k chosen."""
    a, k = _rows(x, k)
    kth_pos = np.argpartition(a, k - 1, axis=1)[:, k - 1:k]  # (nq, 1)
    kth = np.take_along_axis(a, kth_pos, 1)  # (nq, 1)
    idx = _ties_by_index(a < kth, a == kth, k)  # (nq, k)
    vals = np.take_along_axis(a, idx, 1)
    order = np.argsort(vals, axis=1, kind="stable")  # idx ascending, so stable = ties by index
    return _like(x, np.take_along_axis(vals, order, 1), np.take_along_axis(idx, order, 1))


def heap_select(x, k: int):
    """A max-heap of the k smallest (value, index) pairs seen so far, one row at a time (pure Python)."""
    a, k = _rows(x, k)
    values, indices = np.empty((len(a), k), a.dtype), np.empty((len(a), k), np.int64)
    for r, row in enumerate(a.tolist()):
        heap = [(-v, -i) for i, v in enumerate(row[:k])]  # heapq is a min-heap: negate for a max-heap
        heapq.heapify(heap)
        for i in range(k, len(row)):
            key = (-row[i], -i)
            if key > heap[0]:  # (v, i) < the largest kept pair
                heapq.heapreplace(heap, key)
        best = sorted((-v, -i) for v, i in heap)
        values[r], indices[r] = [v for v, _ in best], [i for _, i in best]
    return _like(x, values, indices)


def topk_select(x, k: int):
    """``torch.topk`` (on x's device when x is a tensor). topk's choice among ties is unspecified, so its
    k-th value is kept and the ties at the boundary are then taken by index."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    _rows(t[:1] if len(t) else t, k)  # shape / dtype / k checks without copying the whole tensor
    if t.is_floating_point() and torch.isnan(t).any():
        raise ParameterError("k-selection got NaN values; they have no order (replace them, e.g. by +inf)")
    kth = torch.topk(t, k, dim=1, largest=False, sorted=True).values[:, -1:]  # (nq, 1)
    less, equal = t < kth, t == kth
    need = k - less.sum(1, keepdim=True)  # (nq, 1)
    chosen = less | (equal & (torch.cumsum(equal.int(), 1) <= need))  # (nq, n), k per row
    idx = torch.nonzero(chosen)[:, 1].reshape(len(t), k)  # (nq, k) ascending index
    vals = t.gather(1, idx)
    vals, order = torch.sort(vals, dim=1, stable=True)
    idx = idx.gather(1, order)
    return (vals, idx) if isinstance(x, torch.Tensor) else (vals.numpy(), idx.numpy())


# --- WarpSelect ---------------------------------------------------------------------------------------

@dataclass
class WarpSelectStats:
    """Work counted by ``warp_select``, one entry per row.

    Attributes:
        insertions: (nq,) values that entered a thread queue.
        merges: (nq,) warp-queue rebuilds (sort of the thread queues + odd-even merge), final one included.
        comparisons: (nq,) comparisons: threshold tests, thread-queue insertion steps, network comparators.
    """

    insertions: np.ndarray
    merges: np.ndarray
    comparisons: np.ndarray


@lru_cache(maxsize=32)
def odd_even_stages(n: int, merge_only: bool = False) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Batcher's odd-even merge sort network on n = 2**p wires, as stages of disjoint comparators (lo, hi).

    With ``merge_only`` only the last level: the odd-even merge of two sorted halves of n / 2.
    """
    stages, p = [], 1
    while p < n:
        if not merge_only or 2 * p == n:
            q = p
            while q >= 1:
                lo = [i + j for j in range(q % p, n - q, 2 * q) for i in range(min(q, n - j - q))
                      if (i + j) // (2 * p) == (i + j + q) // (2 * p)]
                lo = np.asarray(lo, dtype=np.int64)
                stages.append((lo, lo + q))
                q //= 2
        p *= 2
    return tuple(stages)


def _network(vals: np.ndarray, ids: np.ndarray, stages) -> int:
    """Run a comparator network in place on (value, index) keys; return the number of comparators."""
    count = 0
    for lo, hi in stages:
        swap = (vals[lo] > vals[hi]) | ((vals[lo] == vals[hi]) & (ids[lo] > ids[hi]))
        a, b = lo[swap], hi[swap]
        vals[a], vals[b] = vals[b], vals[a].copy()
        ids[a], ids[b] = ids[b], ids[a].copy()
        count += len(lo)
    return count


def _pow2(m: int) -> int:
    return 1 << max(0, (m - 1).bit_length())


def _warp_select_row(row: np.ndarray, k: int, t: int) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    n = len(row)
    sentinel = n  # index of the +inf padding: after every real index, so real +inf values still win
    steps = -(-n // LANES)
    vals = np.full(steps * LANES, np.inf)
    vals[:n] = row
    vals = vals.reshape(steps, LANES)  # (steps, 32): step s, lane j reads item s * 32 + j
    width = _pow2(max(k, LANES * t))  # wires of each half of the merge network
    sort_net, merge_net = odd_even_stages(width), odd_even_stages(2 * width, merge_only=True)
    warp_v, warp_i = np.full(k, np.inf), np.full(k, sentinel, np.int64)  # sorted warp queue
    tq_v, tq_i = np.full((LANES, t), np.inf), np.full((LANES, t), sentinel, np.int64)  # sorted thread queues
    fill = np.zeros(LANES, np.int64)
    lanes = np.arange(LANES)
    insertions = merges = comparisons = 0

    def merge():
        nonlocal warp_v, warp_i, comparisons
        cand_v, cand_i = np.full(width, np.inf), np.full(width, sentinel, np.int64)
        cand_v[:LANES * t], cand_i[:LANES * t] = tq_v.ravel(), tq_i.ravel()
        comparisons += _network(cand_v, cand_i, sort_net)  # sort the 32 t thread-queue entries
        all_v, all_i = np.full(2 * width, np.inf), np.full(2 * width, sentinel, np.int64)
        all_v[:k], all_i[:k] = warp_v, warp_i
        all_v[width:], all_i[width:] = cand_v, cand_i
        comparisons += _network(all_v, all_i, merge_net)  # odd-even merge of two sorted halves
        warp_v, warp_i = all_v[:k].copy(), all_i[:k].copy()
        tq_v.fill(np.inf)
        tq_i.fill(sentinel)
        fill.fill(0)

    for s in range(steps):
        v, i = vals[s], s * LANES + lanes  # (32,)
        threshold_v, threshold_i = warp_v[-1], warp_i[-1]
        comparisons += LANES
        enter = ((v < threshold_v) | ((v == threshold_v) & (i < threshold_i))) & (i < n)  # (32,)
        if enter.any():
            lane = lanes[enter]
            pos = fill[lane]
            tq_v[lane, pos], tq_i[lane, pos] = v[enter], i[enter]  # append, then bubble down (insertion sort)
            moving = np.ones(len(lane), bool)  # still sinking: every comparison so far was a swap
            for j in range(t - 1, 0, -1):
                sel = moving & (pos >= j)
                at = lane[sel]
                if len(at) == 0:
                    continue
                comparisons += len(at)
                a, b = tq_v[at, j - 1], tq_v[at, j]
                swap = (b < a) | ((b == a) & (tq_i[at, j] < tq_i[at, j - 1]))
                moving[np.flatnonzero(sel)[~swap]] = False
                at = at[swap]
                tq_v[at, j - 1], tq_v[at, j] = tq_v[at, j], tq_v[at, j - 1].copy()
                tq_i[at, j - 1], tq_i[at, j] = tq_i[at, j], tq_i[at, j - 1].copy()
            fill[lane] += 1
            insertions += len(lane)
        if (fill == t).any():  # the warp votes: one full queue forces a merge
            merge()
            merges += 1
    if (fill > 0).any() or merges == 0:
        merge()
        merges += 1
    return warp_v, warp_i, insertions, merges, comparisons


def warp_select(x, k: int, *, t: int = 2, return_stats: bool = False):
    """WarpSelect, simulated on the CPU lane by lane (slow: for understanding, not for speed).

    Args:
        x: (nq, n) array or tensor.
        k: how many smallest to keep, 1 <= k <= n.
        t: thread-queue length (faiss uses 2..8 depending on k).
        return_stats: also return a ``WarpSelectStats``.

    Returns:
        values (nq, k) and indices (nq, k), ascending, ties by index; then the stats if asked.
    """
    a, k = _rows(x, k)
    t = check_int("t", t, minimum=1)
    nq = len(a)
    values, indices = np.empty((nq, k), a.dtype), np.empty((nq, k), np.int64)
    counts = np.zeros((3, nq), np.int64)
    for r in range(nq):
        v, i, ins, mer, cmp = _warp_select_row(a[r].astype(np.float64), k, t)
        values[r], indices[r], counts[:, r] = v.astype(a.dtype), i, (ins, mer, cmp)
    out = _like(x, values, indices)
    return (*out, WarpSelectStats(*counts)) if return_stats else out


def predicted_insertions(n: int, k: int) -> float:
    """Expected insertions for a random order with an exact threshold: ``sum_{i=1..n} min(1, k / i)``,
    i.e. ``k + k (H_n - H_k)``, about ``k (1 + ln(n / k))``."""
    n, k = check_int("n", n, minimum=1), check_int("k", k, minimum=1)
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(np.minimum(1.0, k / i).sum())


def insertion_analysis(n: int, k: int, *, t: int = 2, order: str = "random", trials: int = 4,
                       seed: int = 0) -> dict[str, float]:
    """Measured WarpSelect work on n distinct values in the given order, against the random-order prediction.

    Returns a dict: ``measured_insertions`` and ``merges`` (means over ``trials`` rows), ``predicted_insertions``
    (``predicted_insertions(n, k)``), ``ratio`` (measured / predicted), ``merge_bound`` (``ceil(n / 32) // t + 1``:
    a lane gains at most one entry per step, so merges are at least t steps apart, plus the final one).
    """
    n, k = check_int("n", n, minimum=1), check_int("k", k, minimum=1)
    trials = check_int("trials", trials, minimum=1)
    check_choice("order", order, ORDERS)
    rng = np.random.default_rng(seed)
    base = np.arange(n, dtype=np.float64)
    if order == "random":
        rows = np.stack([rng.permutation(base) for _ in range(trials)])  # (trials, n)
    else:
        rows = np.tile(base if order == "ascending" else base[::-1], (trials, 1))  # (trials, n)
    _, _, stats = warp_select(rows, k, t=t, return_stats=True)
    predicted = predicted_insertions(n, k)
    measured = float(stats.insertions.mean())
    return {"measured_insertions": measured, "predicted_insertions": predicted, "ratio": measured / predicted,
            "merges": float(stats.merges.mean()), "merge_bound": float(-(-n // LANES) // t + 1),
            "comparisons": float(stats.comparisons.mean())}


METHODS = {"full_sort": full_sort, "partial_sort": partial_sort, "heap": heap_select, "topk": topk_select,
           "warp_select": warp_select}


def kselect(x, k: int, method: str = "topk"):
    """The k smallest of every row by the named method (one of ``METHODS``)."""
    return METHODS[check_choice("method", method, tuple(METHODS))](x, k)
