"""Our k-means against faiss.Kmeans: same draws, same iterations, same empty-cluster splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vislearn.config import ParameterError
from vislearn.methods.kmeans import assign, faiss_rand_perm, kmeans, mt19937

from .threads import single_thread

faiss = pytest.importorskip("faiss")
NO_SUBSAMPLING = 10**9  # faiss's max_points_per_centroid large enough to keep every point


one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)   # before the data fixtures


def blobs(seed: int, n: int = 4000, d: int = 8, centers: int = 16) -> np.ndarray:
    """Zero-mean Gaussian blobs, float32 (n, d)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centers, d)) * 3
    x = means[rng.integers(0, centers, n)] + rng.standard_normal((n, d))
    return (x - x.mean(0)).astype(np.float32)


def faiss_kmeans(x, k, init_centroids=None, **params):
    km = faiss.Kmeans(x.shape[1], k, **params)
    km.train(x, init_centroids=init_centroids)
    _, ids = km.assign(x)
    return km, ids


def assert_matches_faiss(ours, km, faiss_ids):
    assert len(ours.objective) == len(km.obj)  # same number of iterations (same early stop)
    np.testing.assert_allclose(ours.objective, km.obj, rtol=1e-4)
    np.testing.assert_array_equal(ours.assignments, faiss_ids)
    np.testing.assert_allclose(ours.centroids, km.centroids, atol=1e-4)
    np.testing.assert_array_equal(ours.nsplit, [s["nsplit"] for s in km.iteration_stats])


def test_mt19937_is_cpp_mersenne_twister():
    assert mt19937(5489, 10000)[-1] == 4123659995  # the C++ standard's check value for std::mt19937
    assert mt19937(1234, 1)[0] == 822569775


@pytest.mark.parametrize("n,seed,m", [(10, 7, None), (1000, 1234, 50), (5000, 3, 5000)])
def test_rand_perm_equals_faiss(n, seed, m):
    perm = np.zeros(n, dtype=np.int32)
    faiss.rand_perm(faiss.swig_ptr(perm), n, seed)
    np.testing.assert_array_equal(faiss_rand_perm(n, seed, m), perm[:m])


@pytest.mark.parametrize("n,d,k,seed", [(5000, 8, 256, 1234), (3000, 16, 64, 0), (2000, 4, 100, 5)])
def test_random_init_equals_faiss(n, d, k, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, d)) * np.linspace(1, 3, d)).astype(np.float32)
    km, ids = faiss_kmeans(x, k, niter=25, seed=seed, max_points_per_centroid=NO_SUBSAMPLING)
    assert_matches_faiss(kmeans(x, k, iters=25, seed=seed), km, ids)


def test_subsampling_equals_faiss():
    x = blobs(1, n=20000)
    km, ids = faiss_kmeans(x, 32, niter=20, seed=42, max_points_per_centroid=64)  # 20000 > 32 * 64: subsample
    ours = kmeans(x, 32, iters=20, seed=42, max_points_per_centroid=64)
    assert_matches_faiss(ours, km, ids)
    without = kmeans(x, 32, iters=20, seed=42)  # all points: a different run, so the subsample mattered
    assert not np.allclose(without.objective[0], ours.objective[0])


@pytest.mark.parametrize("seed", [0, 3, 6])
def test_empty_clusters_split_like_faiss(seed):
    x = blobs(seed)
    rng = np.random.default_rng(seed)
    init = x[rng.choice(len(x), 64, replace=False)].copy()
    init[:4] += 100.0  # four centroids far from every point: empty after the first assignment
    km, ids = faiss_kmeans(x, 64, init, niter=20, seed=seed, max_points_per_centroid=NO_SUBSAMPLING)
    ours = kmeans(x, 64, iters=20, init_centroids=init)
    assert ours.nsplit[0] == 4
    assert_matches_faiss(ours, km, ids)  # the same donors, perturbation and size split, or this fails


def test_kmeans_plus_plus_from_same_start_equals_faiss():
    x = blobs(2)
    start = kmeans(x, 16, iters=0, init="kmeans++", seed=3).centroids  # iters=0: the initial centroids
    assert len({tuple(c) for c in start}) == 16  # distinct training points
    assert all((np.abs(x - c).sum(1) == 0).any() for c in start)
    km, ids = faiss_kmeans(x, 16, start, niter=25, max_points_per_centroid=NO_SUBSAMPLING)
    assert_matches_faiss(kmeans(x, 16, iters=25, init="kmeans++", seed=3), km, ids)


def test_kmeans_plus_plus_starts_lower_than_random():
    x = blobs(4, centers=16)
    pp = [kmeans(x, 16, iters=1, init="kmeans++", seed=s).objective[0] for s in range(5)]
    rand = [kmeans(x, 16, iters=1, init="random", seed=s).objective[0] for s in range(5)]
    assert np.mean(pp) < 0.8 * np.mean(rand)


def test_objective_never_increases_and_stops_early():
    x = blobs(5)
    result = kmeans(x, 16, iters=200, seed=1)
    assert len(result.objective) < 200  # converged: the objective stopped changing
    assert np.all(np.diff(result.objective) <= 1e-6 * result.objective[0])
    assert result.objective[-1] == result.objective[-2]


def test_as_many_points_as_clusters():
    x = blobs(6, n=10)
    result = kmeans(x, 10)
    np.testing.assert_array_equal(result.centroids, x)
    np.testing.assert_array_equal(result.assignments, np.arange(10))


def test_assign_is_the_nearest_centroid():
    rng = np.random.default_rng(0)
    x, c = rng.standard_normal((3000, 12)).astype(np.float32), rng.standard_normal((300, 12)).astype(np.float32)
    ids, dists = assign(x, c)
    exact = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)  # (n, k)
    np.testing.assert_array_equal(ids, exact.argmin(1))
    np.testing.assert_allclose(dists, exact.min(1), rtol=1e-4, atol=1e-5)
    ids_torch, _ = assign(torch.from_numpy(x), torch.from_numpy(c))
    np.testing.assert_array_equal(ids_torch, ids)


def test_errors_name_the_bad_value():
    x = blobs(7, n=100)
    with pytest.raises(ParameterError, match="at least k=200"):
        kmeans(x, 200)
    with pytest.raises(ParameterError, match="kmeans\\+\\+"):
        kmeans(x, 4, init="farthest")
    with pytest.raises(ParameterError, match="2-D"):
        kmeans(x[0], 4)
    with pytest.raises(ParameterError, match="expected k=4"):
        kmeans(x, 4, init_centroids=x[:5])
    with pytest.raises(ParameterError, match="expected d=8"):
        kmeans(x, 4, init_centroids=x[:4, :3])
    with pytest.raises(ParameterError, match="NaN"):
        kmeans(np.full((10, 2), np.nan, dtype=np.float32), 2)
    with pytest.raises(ParameterError, match="k=0"):
        kmeans(x, 0)
    with pytest.raises(ParameterError, match="expected d=8"):
        assign(x[:, :4], x[:3])
