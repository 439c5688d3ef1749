"""Brute force and IVF-PQ search ours vs faiss, and k-selection ours vs torch.topk vs a heap.

PCA-64 Fashion-MNIST (train split as base, test split as queries). One thread for torch and faiss; the
median of ``--rounds`` timings. IVF-PQ: faiss's IndexIVFPQ is built from our centroids (it encodes the base
itself); both are timed at the smallest nprobe reaching R@10 >= 0.9.

    python benchmarks/search.py
    python benchmarks/search.py --n-base 20000 --n-query 1000 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import faiss
import numpy as np
import torch

from vislearn.methods.kselect import heap_select, partial_sort, topk_select
from vislearn.methods.pq_data import exact_knn, fashion_mnist_pca, recall_at
from vislearn.methods.search import IVFPQ, knn_search


def timed(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-base", type=int, default=60000)
    parser.add_argument("--n-query", type=int, default=2000)
    parser.add_argument("--nlist", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    base, queries = fashion_mnist_pca(dim=64, n_base=args.n_base, n_query=args.n_query)
    nq = len(queries)

    flat = faiss.IndexFlatL2(64)
    flat.add(base)
    ours = timed(lambda: knn_search(queries, base, 10), args.rounds)
    theirs = timed(lambda: flat.search(queries, 10), args.rounds)
    print(f"brute force k=10: ours {nq / ours:9.0f} q/s  faiss {nq / theirs:9.0f} q/s  ours/faiss {theirs / ours:.2f}")

    gt = exact_knn(queries, base, 1)[1]
    index = IVFPQ(64, args.nlist, 8, 8).train(base, iters=10)
    index.add(base)
    fi = index.to_faiss(with_lists=False)
    fi.add(base)
    for nprobe in (1, 2, 4, 8, 16, 32, 64):
        recall = recall_at(index.search(queries, 10, nprobe=nprobe)[1], gt, 10)
        if recall >= 0.9:
            break
    fi.nprobe = nprobe
    ours = timed(lambda: index.search(queries, 10, nprobe=nprobe), args.rounds)
    theirs = timed(lambda: fi.search(queries, 10), args.rounds)
    frecall = recall_at(fi.search(queries, 10)[1], gt, 10)
    print(f"IVF-PQ nprobe={nprobe} R@10 ours {recall:.3f} faiss {frecall:.3f}: ours {nq / ours:8.0f} q/s  "
          f"faiss {nq / theirs:8.0f} q/s  ours/faiss {theirs / ours:.2f}")

    x = np.random.default_rng(0).standard_normal((100, 8192)).astype(np.float32)
    xt = torch.from_numpy(x)
    for k in (1, 10, 100, 1024):
        t_topk = timed(lambda k=k: topk_select(xt, k), args.rounds)
        t_part = timed(lambda k=k: partial_sort(x, k), args.rounds)
        t_heap = timed(lambda k=k: heap_select(x[:10], k), 1) * 10  # pure Python: 10 rows, scaled
        t_raw = timed(lambda k=k: torch.topk(xt, k, largest=False), args.rounds)
        print(f"k-select (100, 8192) k={k:5d}: raw topk {t_raw * 1e3:7.2f} ms  topk_select {t_topk * 1e3:7.2f} ms  "
              f"partial_sort {t_part * 1e3:7.2f} ms  heap {t_heap * 1e3:8.1f} ms  heap/topk {t_heap / t_raw:.0f}x")


if __name__ == "__main__":
    main()
