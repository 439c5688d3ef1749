"""DeepCluster's pieces: faiss's PCA whitening and k-means, the uniform sampler, the fresh head, NMI."""

import math

import numpy as np
import pytest
import torch

from vislearn.config import ParameterError
from vislearn.methods.deepcluster import cluster, new_classifier, nmi, preprocess, uniform_sampler

faiss = pytest.importorskip("faiss")


def blobs(n_per: int = 60, k: int = 4, d: int = 12, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 4
    x = torch.cat([centres[c] + torch.randn(n_per, d, generator=g) for c in range(k)])
    return x, np.repeat(np.arange(k), n_per)


def test_preprocess_is_faiss_pca_whitening_then_l2():
    x, _ = blobs()
    ours = preprocess(x, dim=6)
    pca = faiss.PCAMatrix(x.shape[1], 6, -0.5)                              # eigen_power -0.5: whitening
    pca.train(x.numpy())
    ref = pca.apply(x.numpy())
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    assert ours.shape == (240, 6)
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(240))
    # components are defined up to sign: compare what k-means sees, the dot products between images
    np.testing.assert_allclose((ours @ ours.T).numpy(), ref @ ref.T, atol=2e-4)


def test_cluster_equals_faiss_kmeans_on_the_preprocessed_features():
    x, truth = blobs(seed=1)
    ours = cluster(x, 4, dim=8, iters=20, seed=3)
    km = faiss.Kmeans(8, 4, niter=20, seed=3, max_points_per_centroid=10_000_000)
    data = preprocess(x, 8).numpy().astype(np.float32)
    km.train(data)
    _, ref = km.index.search(data, 1)
    np.testing.assert_array_equal(ours.labels, ref.ravel())
    np.testing.assert_allclose(ours.objective, km.obj, rtol=1e-4)
    assert nmi(ours.labels, truth) == pytest.approx(1.0)                    # well-separated blobs are found
    assert sorted(len(m) for m in ours.members) == [60] * 4 and ours.empty == 0


def test_empty_clusters_are_reseeded_like_faiss():
    # 60 copies of 4 distinct points, 6 clusters: at least two start empty and k-means re-seeds them
    base = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    x = base.repeat(15, 1)
    clusters = cluster(x, 6, dim=3, iters=10, seed=0)
    km = faiss.Kmeans(3, 6, niter=10, seed=0, max_points_per_centroid=10_000_000)
    data = preprocess(x, 3).numpy().astype(np.float32)
    km.train(data)
    _, ref = km.index.search(data, 1)
    assert km.iteration_stats[0]["nsplit"] == 2 and clusters.resplit >= 2    # both re-seed 2 at the first step
    # exact duplicates tie between a re-seeded centroid and its donor: which of the two wins is float
    # rounding, so compare the partitions up to the clusters' names
    assert nmi(clusters.labels, ref.ravel()) == pytest.approx(1.0)
    assert clusters.empty == 6 - 4                                          # 4 distinct points fill 4 clusters


def test_uniform_sampler_draws_every_cluster_equally():
    members = [np.arange(0, 90), np.arange(90, 99), np.array([], dtype=int), np.array([99])]   # 90, 9, 0, 1
    order = uniform_sampler(members, 100, np.random.default_rng(0))
    assert order.shape == (100,) and order.dtype == np.int64
    per = int(100 / 3) + 1                                                  # 34 draws per non-empty cluster
    counts = [np.isin(order, m).sum() for m in members]
    assert sum(counts) == 100 and counts[2] == 0
    assert all(abs(c - per) <= 2 for i, c in enumerate(counts) if i != 2)   # 102 drawn, cut to 100
    assert len(np.unique(order[np.isin(order, members[0])])) == counts[0]   # big cluster: no repeats
    with pytest.raises(ParameterError, match="every cluster is empty"):
        uniform_sampler([np.array([], dtype=int)], 5, np.random.default_rng(0))


def test_uniform_sampler_wraps_when_it_draws_too_few():
    order = uniform_sampler([np.array([7])], 1, np.random.default_rng(0))
    assert order.tolist() == [7]
    order = uniform_sampler([np.arange(3)], 10, np.random.default_rng(1))     # 11 drawn, cut to 10
    assert len(order) == 10 and set(order.tolist()) <= {0, 1, 2}


def test_new_classifier_is_small_and_unbiased():
    torch.manual_seed(0)
    layer = new_classifier(256, 100)
    assert layer.weight.shape == (100, 256) and torch.all(layer.bias == 0)
    assert layer.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_nmi_known_values():
    assert nmi([0, 0, 1, 1], [5, 5, 9, 9]) == pytest.approx(1.0)            # a relabelling
    assert nmi([0, 1, 0, 1], [0, 0, 1, 1]) == pytest.approx(0.0)            # independent
    # [0,0,1,1] vs [0,0,0,1]: H(a) = log 2, H(b) = H(1/4), I = H(b) - H(b|a) = H(1/4) - 1/2 log 2
    hb = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    expected = (hb - 0.5 * math.log(2)) / ((math.log(2) + hb) / 2)
    assert nmi([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(expected)
    assert nmi([3, 3], [1, 1]) == 1.0
    with pytest.raises(ParameterError, match="same non-empty set"):
        nmi([0, 1], [0])
