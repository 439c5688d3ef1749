"""Brute force, IVF-PQ and k-NN graphs of vislearn.methods.search against faiss on the same data and centroids."""

from __future__ import annotations

import numpy as np
import pytest

from vislearn.config import ParameterError
from vislearn.methods.pq_data import exact_knn, fashion_mnist_pca, recall_at
from vislearn.methods.search import IVFPQ, MISSING, graph_recall, knn_graph, knn_search

from .threads import single_thread

faiss = pytest.importorskip("faiss")

one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)   # before the data fixtures


@pytest.fixture(scope="module")
def fmnist():
    """PCA-64 Fashion-MNIST: 5,000 base vectors (train split) and 500 queries (test split)."""
    base, queries = fashion_mnist_pca(dim=64, n_base=15000, n_query=10000)
    return base[:5000], queries[:500]


@pytest.fixture(scope="module")
def trained(fmnist):
    base, _ = fmnist
    index = IVFPQ(64, 64, 8, 8).train(base, iters=10)
    index.add(base)
    return index


@pytest.mark.parametrize("metric,faiss_index", [("l2", "IndexFlatL2"), ("ip", "IndexFlatIP")])
def test_brute_force_equals_faiss_flat(fmnist, metric, faiss_index):
    base, queries = fmnist
    D, I = knn_search(queries, base, 10, metric=metric, batch_size=100, block_size=1234)  # 5 blocks, 5 batches
    index = getattr(faiss, faiss_index)(64)
    index.add(base)
    Df, If = index.search(queries, 10)
    rel = np.abs(D - Df) / np.maximum(np.abs(Df), 1e-12)
    assert rel.max() < 1e-4  # measured: 8.1e-5 (L2), 7.9e-7 (IP)
    differ = I != If
    assert differ.mean() < 0.001  # measured: 0 (L2), 0.0004 (IP)
    # where ids differ it is a tie: the true score of our id equals faiss's reported one
    pairs = queries[:, None, :], base[I]  # (nq, 1, d), (nq, k, d)
    scores = (pairs[0] * pairs[1]).sum(-1) if metric == "ip" else ((pairs[0] - pairs[1]) ** 2).sum(-1)
    np.testing.assert_allclose(scores[differ], Df[differ], rtol=1e-4)
    assert (np.diff(D, axis=1) >= 0).all() if metric == "l2" else (np.diff(D, axis=1) <= 0).all()


def test_brute_force_one_block_equals_many(fmnist):
    base, queries = fmnist
    D1, I1 = knn_search(queries[:50], base, 5)
    D2, I2 = knn_search(queries[:50], base, 5, batch_size=7, block_size=3)  # blocks smaller than k
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_allclose(D1, D2, rtol=1e-4)  # BLAS sums in another order


@pytest.mark.parametrize("nprobe", [1, 4, 16])
def test_ivfpq_recall_equals_faiss_from_our_centroids(fmnist, trained, nprobe):
    base, queries = fmnist
    gt = exact_knn(queries, base, 1)[1]
    index = trained.to_faiss(with_lists=False)
    index.add(base)  # faiss encodes the base itself
    index.nprobe = nprobe
    Df, If = index.search(queries, 10)
    D, I = trained.search(queries, 10, nprobe=nprobe)
    ours, theirs = recall_at(I, gt, 10), recall_at(If, gt, 10)
    assert abs(ours - theirs) <= 0.01  # measured: 0.762 / 0.762, 0.970 / 0.970, 0.976 / 0.976
    assert ours > {1: 0.6, 4: 0.9, 16: 0.95}[nprobe]
    assert (I == If).mean() > 0.99
    np.testing.assert_allclose(D, Df, rtol=1e-3, atol=1e-3 * float(np.median(Df)))
    assert len(queries) == len(I)


def test_from_faiss_round_trip(fmnist, trained):
    base, queries = fmnist
    index = trained.to_faiss()  # our codes copied into faiss's lists
    assert index.ntotal == trained.ntotal == len(base)
    copy = IVFPQ.from_faiss(index)
    np.testing.assert_array_equal(copy.centroids, trained.centroids)
    np.testing.assert_array_equal(copy.pq.centroids, trained.pq.centroids)
    for a, b, ca, cb in zip(copy.list_ids, trained.list_ids, copy.list_codes, trained.list_codes, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ca, cb)
    index.nprobe = 4
    _, If = index.search(queries, 10)
    _, I = copy.search(queries, 10, nprobe=4)
    assert (I == If).mean() > 0.99


def test_fewer_candidates_than_k_are_padded(fmnist):
    base, queries = fmnist
    index = IVFPQ(64, 4, 8, 4).train(base[:300], iters=3)
    index.add(base[:20])
    D, I = index.search(queries[:3], 25, nprobe=4)
    assert (I[:, 20:] == -1).all() and (D[:, 20:] == MISSING).all() and (I[:, :20] >= 0).all()


def test_knn_graph(fmnist):
    base = fmnist[0][:1500]
    exact = knn_graph(base, 10)
    assert exact.shape == (1500, 10)
    assert not (exact == np.arange(1500)[:, None]).any()
    np.testing.assert_array_equal(exact, exact_knn(base, base, 11)[1][:, 1:])
    assert graph_recall(exact, exact) == 1.0
    index = IVFPQ(64, 16, 8, 6).train(base, iters=5)
    index.add(base)
    approx = knn_graph(base, 10, index=index, nprobe=2)
    recall = graph_recall(approx, exact)
    assert 0.3 < recall < 1.0  # measured: 0.62 on 2,000 points


def test_knn_graph_with_duplicates():
    x = np.zeros((4, 2), np.float32)
    graph = knn_graph(x, 3)
    for i, row in enumerate(graph):
        assert sorted(row.tolist()) == sorted(set(range(4)) - {i})


def test_errors(fmnist, trained):
    base, queries = fmnist
    with pytest.raises(ParameterError, match="k=5001 neighbours"):
        knn_search(queries, base, 5001)
    with pytest.raises(ParameterError, match="metric='cos'"):
        knn_search(queries, base, 1, metric="cos")
    with pytest.raises(ParameterError, match="expected d=64"):
        knn_search(queries[:, :32], base, 1)
    with pytest.raises(ParameterError, match="nprobe=65 must be an integer <= 64"):
        trained.search(queries, 1, nprobe=65)
    with pytest.raises(ParameterError, match="nprobe=0"):
        trained.search(queries, 1, nprobe=0)
    with pytest.raises(ParameterError, match="k=0"):
        trained.search(queries, 0)
    with pytest.raises(ParameterError, match="before the index is trained"):
        IVFPQ(64, 8, 8).search(queries, 1)
    with pytest.raises(ParameterError, match="not divisible by M=7"):
        IVFPQ(64, 8, 7)
    with pytest.raises(ParameterError, match="at most k=3"):
        knn_graph(base[:4], 4)
    with pytest.raises(ParameterError, match="same \\(n, k\\) shape"):
        graph_recall(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ParameterError, match="trained faiss.IndexIVFPQ"):
        IVFPQ.from_faiss(faiss.IndexFlatL2(64))
