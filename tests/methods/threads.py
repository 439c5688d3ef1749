"""One torch and faiss thread for a test module: 2 shared cores, stable timings, faiss-equal results."""

from __future__ import annotations

import torch


def single_thread():
    """A fixture body: ``one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)``."""
    import faiss

    threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(faiss_threads)
