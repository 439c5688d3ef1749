"""Our OPQ against faiss's OPQMatrix + IndexPQ (IndexPreTransform) on PCA-64 Fashion-MNIST."""

from __future__ import annotations

import numpy as np
import pytest

from vislearn.config import ParameterError
from vislearn.methods.opq import OPQ, procrustes, random_rotation
from vislearn.methods.pq import ProductQuantizer, unpack_codes
from vislearn.methods.pq_data import exact_knn, fashion_mnist_pca, recall_at

from .threads import single_thread

faiss = pytest.importorskip("faiss")
D, M, NBITS, NITER, NITER_PQ_0 = 64, 8, 6, 20, 20  # a shortened faiss schedule (50 and 40) keeps the test short


one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)   # before the data fixtures


@pytest.fixture(scope="module")
def trained():
    """5,000 PCA-64 base vectors, 10,000 queries, their true nearest neighbours, faiss's OPQ and ours."""
    base, queries = fashion_mnist_pca(dim=64, n_base=15000, n_query=10000)
    base = base[:5000]
    _, gt = exact_knn(queries, base, 1)
    start = faiss.OPQMatrix(D, M)
    start.niter = 0  # faiss's random initial rotation only
    start.train(base)
    init = faiss.vector_to_array(start.A).reshape(D, D)

    opq = faiss.OPQMatrix(D, M)
    opq.niter, opq.niter_pq_0 = NITER, NITER_PQ_0
    inner = faiss.ProductQuantizer(D, M, NBITS)  # faiss's OPQ trains with nbits=8 unless given a PQ
    opq.pq = inner
    index = faiss.IndexPreTransform(opq, faiss.IndexPQ(D, M, NBITS))
    index.train(base)
    index.add(base)
    _, faiss_ids = index.search(queries, 10)

    ours = OPQ(D, M, NBITS).train(base, niter=NITER, niter_pq_0=NITER_PQ_0, seed=1234, init_rotation=init)
    return dict(base=base, queries=queries, gt=gt, index=index, opq=opq, inner=inner, ours=ours, faiss_ids=faiss_ids,
                init=init)


def test_recall_equals_faiss_and_beats_pq(trained):
    base, queries, gt, ours = trained["base"], trained["queries"], trained["gt"], trained["ours"]
    _, ids = ours.search(queries, ours.encode(base), 10)
    r_ours, r_faiss = recall_at(ids, gt, 10), recall_at(trained["faiss_ids"], gt, 10)
    assert r_ours == pytest.approx(r_faiss, abs=0.01)
    pq = ProductQuantizer(D, M, NBITS).train(base, seed=1234)
    _, pq_ids = pq.search(queries, pq.encode(base), 10)
    r_pq = recall_at(pq_ids, gt, 10)
    assert r_ours > r_pq + 0.05  # PCA output: PQ's first sub-space holds most of the variance
    own = OPQ(D, M, NBITS).train(base, niter=10, niter_pq_0=10, seed=0)  # our own random rotation, shorter
    _, own_ids = own.search(queries, own.encode(base), 10)
    assert recall_at(own_ids, gt, 10) > r_pq + 0.05  # another start, another local optimum: still far above PQ


def test_rotation_is_orthogonal_and_lowers_the_error(trained):
    ours, base = trained["ours"], trained["base"]
    R = ours.rotation
    np.testing.assert_allclose(R @ R.T, np.eye(D), atol=1e-4)
    assert ours.train_error[-1] < 0.8 * ours.train_error[0]
    assert np.all(np.diff(ours.train_error) <= 1e-3 * ours.train_error[0])  # alternating minimisation
    mse_rotated = ((ours.decode(ours.encode(base)) - base) ** 2).sum(1).mean()
    pq = ProductQuantizer(D, M, NBITS).train(base, seed=1234)
    assert mse_rotated < 0.8 * ((pq.decode(pq.encode(base)) - base) ** 2).sum(1).mean()


def test_first_iteration_equals_faiss(trained):
    base, init = trained["base"], trained["init"]
    opq = faiss.OPQMatrix(D, M)
    opq.niter, opq.niter_pq_0 = 1, 10
    faiss.copy_array_to_vector(init.ravel(), opq.A)  # faiss starts from a given A when there is one
    inner = faiss.ProductQuantizer(D, M, NBITS)
    opq.pq = inner
    opq.train(base)
    ours = OPQ(D, M, NBITS).train(base, niter=1, niter_pq_0=10, seed=1234, init_rotation=init, pq_iters=1)
    # the same centring, PQ training (seed 1234, 1000 points per centroid) and Procrustes orientation
    np.testing.assert_allclose(ours.rotation, faiss.vector_to_array(opq.A).reshape(D, D), atol=1e-4)


def test_from_faiss_transforms_encodes_and_searches_like_faiss(trained):
    index, queries, base = trained["index"], trained["queries"][:200], trained["base"]
    copy = OPQ.from_faiss(trained["opq"], faiss.downcast_index(index.index))
    np.testing.assert_allclose(copy.transform(queries), trained["opq"].apply(queries), rtol=1e-5, atol=1e-5)
    codes = copy.encode(base)
    packed = copy.pq.to_faiss().compute_codes(trained["opq"].apply(base))
    np.testing.assert_array_equal(codes, unpack_codes(packed, M, NBITS))
    dist, ids = copy.search(queries, codes, 10)
    dist_f, ids_f = index.search(queries, 10)
    np.testing.assert_allclose(dist, dist_f, rtol=1e-4, atol=1e-5)
    recon = copy.decode(codes)  # back in the original space: a rotation keeps distances
    for found, reported in ((ids, dist), (ids_f, dist_f)):  # ids that differ are ties (near-duplicate images)
        true = ((recon[found] - queries[:, None, :]) ** 2).sum(-1)
        np.testing.assert_allclose(reported, true, rtol=1e-4, atol=1e-4)
    assert (ids == ids_f).mean() > 0.95


def test_procrustes_recovers_a_rotation():
    x = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
    R = random_rotation(16, seed=3)
    np.testing.assert_allclose(R @ R.T, np.eye(16), atol=1e-5)
    np.testing.assert_allclose(procrustes(x, x @ R.T), R, atol=1e-4)
    assert not np.allclose(random_rotation(16, seed=4), R)


def test_errors():
    x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    with pytest.raises(ParameterError, match="not divisible"):
        OPQ(16, 3)
    with pytest.raises(ParameterError, match="before it is trained"):
        OPQ(16, 4).transform(x)
    with pytest.raises(ParameterError, match="orthogonal"):
        OPQ(16, 4, 4).train(x, niter=1, init_rotation=np.ones((16, 16)))
    with pytest.raises(ParameterError, match="shape \\(16, 16\\)"):
        OPQ(16, 4, 4).train(x, niter=1, init_rotation=np.eye(8))
    with pytest.raises(ParameterError, match="at least ksub=2\\*\\*nbits=512"):
        OPQ(16, 4, 9).train(x)
