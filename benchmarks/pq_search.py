"""Queries per second of our PQ search (ADC) vs faiss.IndexPQ vs nanopq, on the same codes.

PCA-64 Fashion-MNIST (60,000 base vectors from the train split, 10,000 queries from the test split).
Our ``ProductQuantizer`` is trained once (faiss's seed, so faiss would learn the same codebooks); faiss
and nanopq get copies of its centroids and search the very same codes, so recalls must agree and only
speed differs. Everything runs on one thread (torch and faiss's OpenMP). Timings alternate between
implementations in rounds, so a background load hits all alike; the median is reported.

    source scripts/env.sh                   # the course's environment (nanopq included: the pure-NumPy reference)
    python benchmarks/pq_search.py          # M = 8 and 16, nbits = 8, k = 100
    python benchmarks/pq_search.py --M 8 --n-base 20000 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import faiss
import nanopq
import numpy as np
import torch

from vislearn.methods.pq import ProductQuantizer
from vislearn.methods.pq_data import exact_knn, fashion_mnist_pca, recall_at

RECALLS = (1, 10, 100)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def nanopq_search(npq, queries: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """nanopq's documented search: a distance table per query, ``adist`` over all codes, then top-k."""
    ids = np.empty((len(queries), k), dtype=np.int64)
    for i, q in enumerate(queries):
        dist = npq.dtable(q).adist(codes)  # (n,)
        top = np.argpartition(dist, k)[:k]
        ids[i] = top[np.argsort(dist[top])]
    return ids


def fmt_recalls(ids, gt) -> str:
    return "  ".join(f"R@{r}={recall_at(ids, gt, r):.4f}" for r in RECALLS)


def bench(M: int, base, queries, gt, args) -> dict:
    print(f"\n=== M={M}, nbits=8 ({M} bytes per vector), k={args.k} ===")
    pq, t_train = timed(lambda: ProductQuantizer(base.shape[1], M, 8).train(base, seed=1234))
    fpq = faiss.ProductQuantizer(base.shape[1], M, 8)
    _, t_train_faiss = timed(lambda: fpq.train(base))
    print(f"train (25 k-means iterations per sub-space): ours {t_train:.2f} s, faiss {t_train_faiss:.2f} s")

    codes = pq.encode(base)
    ours_fpq = pq.to_faiss()
    same = (codes == ours_fpq.compute_codes(base)).mean()
    index = pq.to_faiss_index(codes)
    npq = nanopq.PQ(M=M, Ks=256, verbose=False)
    npq.Ds, npq.codewords = base.shape[1] // M, pq.centroids.copy()  # (M, Ks, Ds): the same layout as ours
    sub = queries[:args.nanopq_queries]

    t = {"ours": [], "faiss": [], "nanopq": [], "enc_ours": [], "enc_faiss": []}
    for _ in range(args.rounds):
        (_, ids_ours), dt = timed(lambda: pq.search(queries, codes, args.k))
        t["ours"].append(dt)
        (_, ids_faiss), dt = timed(lambda: index.search(queries, args.k))
        t["faiss"].append(dt)
        ids_nano, dt = timed(lambda: nanopq_search(npq, sub, codes, args.k))
        t["nanopq"].append(dt)
        t["enc_ours"].append(timed(lambda: pq.encode(base))[1])
        t["enc_faiss"].append(timed(lambda: ours_fpq.compute_codes(base))[1])
    med = {key: statistics.median(v) for key, v in t.items()}
    qps = {"ours": len(queries) / med["ours"], "faiss": len(queries) / med["faiss"],
           "nanopq": len(sub) / med["nanopq"]}
    enc = {"ours": len(base) / med["enc_ours"], "faiss": len(base) / med["enc_faiss"]}

    print(f"codes identical to faiss compute_codes: {same:.6f} ({int(round((1 - same) * codes.size))} of {codes.size})")
    print(f"ours   ADC : {qps['ours']:9.0f} q/s   {fmt_recalls(ids_ours, gt)}")
    print(f"faiss  PQ  : {qps['faiss']:9.0f} q/s   {fmt_recalls(ids_faiss, gt)}")
    print(f"nanopq ADC : {qps['nanopq']:9.0f} q/s   {fmt_recalls(ids_nano, gt[:len(sub)])}"
          f"   (first {len(sub)} queries; ours on them: {fmt_recalls(ids_ours[:len(sub)], gt[:len(sub)])})")
    print(f"search ratio ours/faiss = {qps['ours'] / qps['faiss']:.2f}x (target >= 0.5x)   "
          f"ours/nanopq = {qps['ours'] / qps['nanopq']:.1f}x (target >= 10x)")
    print(f"encode: ours {enc['ours']:,.0f} vec/s, faiss {enc['faiss']:,.0f} vec/s, "
          f"ratio ours/faiss = {enc['ours'] / enc['faiss']:.2f}x")
    return {"M": M, **{f"qps_{key}": v for key, v in qps.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--M", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--n-base", type=int, default=60000)
    parser.add_argument("--n-query", type=int, default=10000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nanopq-queries", type=int, default=300, help="nanopq is slow: time it on this many")
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)

    (base, queries), t_data = timed(lambda: fashion_mnist_pca(64, args.n_base, args.n_query))
    (_, gt), t_gt = timed(lambda: exact_knn(queries, base, 1))
    print(f"PCA-64 Fashion-MNIST: base {base.shape}, queries {queries.shape} ({t_data:.1f} s); "
          f"exact ground truth {t_gt:.1f} s; torch {torch.__version__}, faiss {faiss.__version__}, 1 thread")
    rows = [bench(M, base, queries, gt, args) for M in args.M]
    print("\nsummary (q/s):")
    for row in rows:
        print(f"  M={row['M']:2d}: ours {row['qps_ours']:7.0f}  faiss {row['qps_faiss']:7.0f}  "
              f"nanopq {row['qps_nanopq']:6.0f}  ours/faiss {row['qps_ours'] / row['qps_faiss']:.2f}x  "
              f"ours/nanopq {row['qps_ours'] / row['qps_nanopq']:.1f}x")


if __name__ == "__main__":
    main()
