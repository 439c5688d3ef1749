"""Our product quantizer against faiss's ProductQuantizer and IndexPQ on the same centroids."""

from __future__ import annotations

import numpy as np
import pytest

import vislearn.methods.pq as pq_module
from vislearn.config import ParameterError
from vislearn.methods.pq import ProductQuantizer, pack_codes, unpack_codes
from vislearn.methods.pq_data import exact_knn, fashion_mnist_pca, fit_pca, recall_at

from .threads import single_thread

faiss = pytest.importorskip("faiss")


one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)   # before the data fixtures


def anisotropic(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * np.linspace(0.5, 2.0, d)).astype(np.float32)


@pytest.fixture(scope="module")
def fmnist():
    """PCA-64 Fashion-MNIST: 5,000 base vectors (train split) and 500 queries (test split)."""
    base, queries = fashion_mnist_pca(dim=64, n_base=15000, n_query=10000)
    return base[:5000], queries[:500]


def pq_from_points(x: np.ndarray, M: int, nbits: int, seed: int = 0) -> ProductQuantizer:
    """A quantizer whose centroids are random training points (distinct; no training needed)."""
    pq = ProductQuantizer(x.shape[1], M, nbits)
    rows = np.random.default_rng(seed).choice(len(x), pq.ksub, replace=len(x) < pq.ksub)
    noise = np.random.default_rng(seed + 1).standard_normal((pq.ksub, x.shape[1])).astype(np.float32) * 0.01
    return pq.set_centroids((x[rows] + noise).reshape(pq.ksub, M, pq.dsub).transpose(1, 0, 2))


def check_search(pq, q, codes, D, I, Df, If) -> float:
    """Distances equal; each side's ids really are at the distances it reports (so any id that differs is a
    tie); returns the fraction of identical ids."""
    scale = float(np.median(Df))
    np.testing.assert_allclose(D, Df, rtol=1e-4, atol=1e-6 * scale)
    recon = pq.decode(codes)
    for ids, dist in ((I, D), (If, Df)):
        true = ((recon[ids] - q[:, None, :]) ** 2).sum(-1)  # (nq, k)
        np.testing.assert_allclose(dist, true, rtol=1e-4, atol=1e-5 * scale)
    return float((I == If).mean())


@pytest.mark.parametrize("M,nbits", [(8, 8), (4, 4), (8, 6), (4, 10), (2, 16)])
def test_codes_and_decode_equal_faiss(M, nbits):
    x = anisotropic(500 if nbits == 16 else 3000)
    pq = pq_from_points(anisotropic(70000 if nbits == 16 else 4000, seed=1), M, nbits)
    fpq = pq.to_faiss()
    codes, packed = pq.encode(x), fpq.compute_codes(x)
    assert codes.dtype == (np.uint8 if nbits <= 8 else np.uint16) and codes.shape == (len(x), M)
    np.testing.assert_array_equal(codes, unpack_codes(packed, M, nbits))
    np.testing.assert_array_equal(pack_codes(codes, nbits), packed)
    np.testing.assert_array_equal(pq.decode(codes), fpq.decode(packed))


def test_codes_equal_faiss_on_fashion_mnist(fmnist):
    base, _ = fmnist
    pq = ProductQuantizer(64, 8, 8).train(base, iters=10)
    np.testing.assert_array_equal(pq.encode(base), pq.to_faiss().compute_codes(base))


def test_distance_tables_equal_faiss():
    x, q = anisotropic(4000), anisotropic(50, seed=2)
    pq = pq_from_points(x, 8, 8)
    tables = pq.compute_distance_tables(q)
    assert tables.shape == (50, 8, 256)
    theirs = np.empty((50, 8 * 256), dtype=np.float32)
    pq.to_faiss().compute_distance_tables(50, faiss.swig_ptr(q), faiss.swig_ptr(theirs))
    np.testing.assert_allclose(tables, theirs.reshape(50, 8, 256), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("M,nbits,min_equal", [(8, 8, 0.999), (16, 8, 0.999), (4, 4, 0.5), (8, 6, 0.99)])
def test_adc_search_equals_faiss_indexpq(M, nbits, min_equal):
    x, q = anisotropic(5000), anisotropic(200, seed=3)
    pq = ProductQuantizer(32, M, nbits).train(x, iters=8)
    codes = pq.encode(x)
    D, I = pq.search(q, codes, 20)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (200, 20)
    assert np.all(np.diff(D, axis=1) >= 0)
    Df, If = pq.to_faiss_index(codes).search(q, 20)
    assert check_search(pq, q, codes, D, I, Df, If) >= min_equal  # 4 bits x 4: many equal codes, many ties


def test_adc_search_equals_faiss_on_fashion_mnist(fmnist):
    base, queries = fmnist
    pq = ProductQuantizer(64, 8, 8).train(base, iters=10)
    codes = pq.encode(base)
    D, I = pq.search(queries, codes, 100)
    Df, If = pq.to_faiss_index(codes).search(queries, 100)
    assert check_search(pq, queries, codes, D, I, Df, If) >= 0.99
    _, gt = exact_knn(queries, base, 1)
    for r in (1, 10, 100):
        assert recall_at(I, gt, r) == pytest.approx(recall_at(If, gt, r), abs=0.002)


@pytest.mark.parametrize("M", [8, 16])
def test_sdc_search_equals_faiss(M):
    x, q = anisotropic(5000), anisotropic(200, seed=4)
    pq = ProductQuantizer(32, M, 8).train(x, iters=8)
    codes = pq.encode(x)
    D, I = pq.search(q, codes, 10, mode="sdc")
    index = pq.to_faiss_index(codes)
    index.search_type = faiss.IndexPQ.ST_SDC
    index.pq.compute_sdc_table()
    Df, If = index.search(q, 10)
    scale = float(np.median(Df))
    np.testing.assert_allclose(D, Df, rtol=1e-4, atol=1e-5 * scale)
    qrecon = pq.decode(pq.encode(q))  # SDC: distance between the two reconstructions
    true = ((pq.decode(codes)[I] - qrecon[:, None, :]) ** 2).sum(-1)
    np.testing.assert_allclose(D, true, rtol=1e-4, atol=1e-5 * scale)
    assert (I == If).mean() >= 0.99
    table = pq.sdc_table()
    assert table.shape == (M, 256, 256)
    np.testing.assert_allclose(table, table.transpose(0, 2, 1), atol=1e-5 * scale)


@pytest.mark.parametrize("M,nbits", [(8, 8), (4, 6)])
def test_training_equals_faiss_training(M, nbits):
    x = anisotropic(8000)
    fpq = faiss.ProductQuantizer(32, M, nbits)
    fpq.cp.niter = 10
    fpq.train(x)  # faiss: seed 1234, at most 256 points per centroid
    ours = ProductQuantizer(32, M, nbits).train(x, iters=10, seed=1234)
    theirs = ProductQuantizer.from_faiss(fpq)
    # the same subsample, initial points and Lloyd steps: equal centroids, except where a point lies so close to
    # a Voronoi boundary (~1e-6 relative) that float rounding sends it the other way in one implementation
    same = np.abs(ours.centroids - theirs.centroids).max(-1) < 1e-4  # (M, ksub)
    assert same.mean() >= 0.98 and same.all(1).mean() >= 0.5
    mse = [((q.decode(q.encode(x)) - x) ** 2).sum(1).mean() for q in (ours, theirs)]
    assert mse[0] == pytest.approx(mse[1], rel=2e-3)
    assert ours.train_objective.shape == (M, 10)


def test_faiss_round_trip_and_layout():
    pq = pq_from_points(anisotropic(4000), 8, 8)
    back = ProductQuantizer.from_faiss(pq.to_faiss())
    np.testing.assert_array_equal(back.centroids, pq.centroids)
    fpq = pq.to_faiss()
    flat = faiss.vector_to_array(fpq.centroids)
    np.testing.assert_array_equal(flat[:4], pq.centroids[0, 0, :4])  # faiss: m-major, then centroid, then dim
    np.testing.assert_array_equal(flat[4 * 256:4 * 256 + 4], pq.centroids[1, 0])
    assert ProductQuantizer.from_faiss(pq.to_faiss_index()).centroids.shape == (8, 256, 4)


def test_search_batches_and_blocks_do_not_change_results(monkeypatch):
    x, q = anisotropic(3000), anisotropic(37, seed=5)
    pq = ProductQuantizer(32, 8, 8).train(x, iters=5)
    codes = pq.encode(x)
    D, I = pq.search(q, codes, 15)
    monkeypatch.setattr(pq_module, "BLOCK_FLOATS", 2000)  # database blocks of ~285 codes: merged top-k
    D2, I2 = pq.search(q, codes, 15, query_batch=7)
    np.testing.assert_allclose(D2, D, rtol=1e-6)
    assert (I2 == I).mean() > 0.99
    encoded_in_blocks = pq.encode(x)
    np.testing.assert_array_equal(encoded_in_blocks, codes)


def test_errors_name_the_bad_value():
    with pytest.raises(ParameterError, match="not divisible by M=5"):
        ProductQuantizer(32, 5)
    for nbits in (0, 17):
        with pytest.raises(ParameterError, match="1..16"):
            ProductQuantizer(32, 4, nbits)
    pq = ProductQuantizer(32, 4, 8)
    x = anisotropic(300)
    for action in (lambda: pq.encode(x), lambda: pq.search(x, np.zeros((3, 4), np.uint8), 1),
                   lambda: pq.decode(np.zeros((3, 4), np.uint8)), lambda: pq.compute_distance_tables(x)):
        with pytest.raises(ParameterError, match="before the quantizer is trained"):
            action()
    with pytest.raises(ParameterError, match="at least ksub=2\\*\\*nbits=256"):
        pq.train(x[:100])
    with pytest.raises(ParameterError, match="expected d=32"):
        pq.train(x[:, :16])
    with pytest.raises(ParameterError, match="2-D"):
        pq.train(x.ravel())
    pq.train(x, iters=2)
    codes = pq.encode(x)
    with pytest.raises(ParameterError, match="width 8.*M=4"):
        pq.search(x[:5], np.zeros((10, 8), np.uint8), 1)
    with pytest.raises(ParameterError, match="width 8"):
        pq.decode(np.zeros((10, 8), np.uint8))
    with pytest.raises(ParameterError, match="0..255"):
        pq.decode(np.full((2, 4), 256))
    with pytest.raises(ParameterError, match="integers"):
        pq.decode(codes.astype(np.float32))
    with pytest.raises(ParameterError, match="'adc', 'sdc'"):
        pq.search(x[:5], codes, 1, mode="ivf")
    with pytest.raises(ParameterError, match="only 300 codes"):
        pq.search(x[:5], codes, 301)
    with pytest.raises(ParameterError, match="centroids must have shape"):
        pq.set_centroids(np.zeros((4, 10, 8)))


def test_pca_benchmark_data(fmnist):
    base, queries = fmnist
    assert base.dtype == queries.dtype == np.float32 and base.shape[1] == queries.shape[1] == 64
    again, _ = fashion_mnist_pca(dim=64, n_base=15000, n_query=10000)
    np.testing.assert_array_equal(again[:5000], base)  # deterministic
    full, _ = fashion_mnist_pca(dim=64, n_base=15000, n_query=10000)
    variances = full.var(0)
    assert np.all(np.diff(variances) <= 1e-3 * variances[0])  # decreasing variance: fitted on the base
    np.testing.assert_allclose(full.mean(0), 0, atol=1e-3)  # base is centred; queries were not used
    pca = fit_pca(np.random.default_rng(0).standard_normal((500, 6)) @ np.diag([3, 2, 1, 1, 1, 1]), 2)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(2), atol=1e-10)


def test_exact_knn_and_recall(fmnist):
    base, queries = fmnist
    D, I = exact_knn(queries, base, 10)
    index = faiss.IndexFlatL2(64)
    index.add(base)
    Df, If = index.search(queries, 10)
    np.testing.assert_allclose(D, Df, rtol=1e-4, atol=1e-3)
    assert (I[:, 0] == If[:, 0]).mean() >= 0.998
    ids = np.array([[3, 1, 2], [0, 5, 6], [9, 9, 9]])
    assert recall_at(ids, np.array([1, 7, 9]), 1) == pytest.approx(1 / 3)
    assert recall_at(ids, np.array([[1, 3], [7, 0], [9, 8]]), 2) == pytest.approx(2 / 3)
    with pytest.raises(ParameterError, match="R@4"):
        recall_at(ids, np.array([1, 7, 9]), 4)


def test_pca_inverts_and_the_pixels_behind_the_vectors_match():
    """pq_data's PCA maps back to pixels exactly at full rank, and fashion_mnist_pixels are the rows that
    fashion_mnist_pca projects (the same subset, in the same order)."""
    from vislearn.methods.pq_data import fashion_mnist_pixels

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12))
    full = fit_pca(x, 12)
    np.testing.assert_allclose(full.invert(full.apply(x)), x, atol=1e-4)
    half = fit_pca(x, 6)                                   # a projection: inverting twice changes nothing more
    once = half.invert(half.apply(x))
    np.testing.assert_allclose(half.invert(half.apply(once)), once, atol=1e-4)
    from vislearn.data import DataNotFoundError

    try:
        base, queries, pca = fashion_mnist_pca(dim=16, n_base=500, n_query=50, seed=3, return_pca=True)
    except DataNotFoundError as err:                         # no Fashion-MNIST on this machine
        pytest.skip(f"Fashion-MNIST not available ({err})")
    pixels, labels = fashion_mnist_pixels("train", 500, 3)
    assert pixels.shape == (500, 784) and labels.shape == (500,) and 0 <= pixels.min() and pixels.max() <= 1
    np.testing.assert_allclose(pca.apply(pixels), base, atol=1e-4)
    np.testing.assert_allclose(pca.apply(fashion_mnist_pixels("test", 50, 4)[0]), queries, atol=1e-4)
