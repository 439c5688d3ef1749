"""vislearn.data.fmnist: finding Fashion-MNIST (search order, errors, download path), reading idx files."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from vislearn.config import ParameterError
from vislearn.data import fmnist as data

HAS_DEBIAN_PACKAGE = (data.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists()


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", s) for s in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def make_fake_fmnist(folder: Path, n_train: int = 12, n_test: int = 5, fill: int = 7, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = data.FASHION_MNIST_FILES[split]
        write_idx(folder / images, np.full((n, 28, 28), fill), gz)
        write_idx(folder / labels, np.arange(n) % 10, gz)


@pytest.fixture
def no_local_copies(monkeypatch, tmp_path):
    """Point every search location at empty folders."""
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setattr(data, "REPO_DATA", tmp_path / "repo_data")
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setattr(data, "DOWNLOAD_ROOT", tmp_path / "cache")
    return tmp_path


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    write_idx(tmp_path / "a", arr, gz=False)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an idx file"):
        data.read_idx(tmp_path / "bad")


def test_search_order(no_local_copies, monkeypatch):
    tmp = no_local_copies
    make_fake_fmnist(tmp / "debian", fill=1)
    assert data.find_fashion_mnist(download=False) == tmp / "debian"
    make_fake_fmnist(tmp / "repo_data" / "fashion-mnist", fill=2)        # repo's data/ beats Debian's
    assert data.find_fashion_mnist(download=False) == tmp / "repo_data" / "fashion-mnist"
    make_fake_fmnist(tmp / "mine" / "FashionMNIST" / "raw", fill=3, gz=False)  # $VISLEARN_DATA beats both
    monkeypatch.setenv(data.DATA_ENV, str(tmp / "mine"))
    folder = data.find_fashion_mnist(download=False)
    assert folder == tmp / "mine" / "FashionMNIST" / "raw"
    images, labels = data.load_fashion_mnist_arrays("train", folder)
    assert images.shape == (12, 28, 28) and (images == 3).all()
    assert labels.tolist() == [i % 10 for i in range(12)]


def test_incomplete_folder_is_skipped(no_local_copies):
    tmp = no_local_copies
    make_fake_fmnist(tmp / "debian")
    make_fake_fmnist(tmp / "repo_data")
    next((tmp / "repo_data").glob("t10k-labels*")).unlink()
    assert data.find_fashion_mnist(download=False) == tmp / "debian"


def test_missing_offline_error_names_three_fixes(no_local_copies):
    def offline(root):
        raise OSError("Temporary failure in name resolution")

    with pytest.raises(data.DataNotFoundError) as info:
        data.find_fashion_mnist(downloader=offline)
    msg = str(info.value)
    assert "download failed (OSError" in msg
    assert "VISLEARN_DATA" in msg and "apt-get install dataset-fashion-mnist" in msg and "internet" in msg


def test_download_path_used_when_nothing_local(no_local_copies):
    calls = []

    def fake_download(root):
        calls.append(root)
        make_fake_fmnist(root / "FashionMNIST" / "raw")

    folder = data.find_fashion_mnist(downloader=fake_download)
    assert calls == [no_local_copies / "cache"] and folder == no_local_copies / "cache" / "FashionMNIST" / "raw"


def test_dataset_normalization_and_limit(no_local_copies):
    make_fake_fmnist(no_local_copies / "debian", n_train=50, fill=255)
    ds = data.fashion_mnist("train", limit=20, folder=no_local_copies / "debian")
    x, y = ds.tensors
    assert x.shape == (20, 1, 28, 28) and y.dtype == torch.int64
    expected = (1.0 - data.FASHION_MNIST_MEAN) / data.FASHION_MNIST_STD
    assert torch.allclose(x, torch.full_like(x, expected))
    assert torch.allclose(data.denormalize(x), torch.ones_like(x))
    with pytest.raises(ParameterError, match="split='val'"):
        data.fashion_mnist("val")


@pytest.mark.skipif(not HAS_DEBIAN_PACKAGE, reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    images, labels = data.load_fashion_mnist_arrays("test", data.DEBIAN_FASHION_MNIST)
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    train, _ = data.load_fashion_mnist_arrays("train", data.DEBIAN_FASHION_MNIST)
    assert train.shape == (60_000, 28, 28)
    # the normalization constants are the training set's own statistics
    assert abs(train.mean() / 255 - data.FASHION_MNIST_MEAN) < 1e-4
    assert abs((train / 255).std() - data.FASHION_MNIST_STD) < 1e-4


# --- bad folders, bad files, bad limits: one error that names the file or the value ----------------------


def test_vislearn_data_that_is_missing_empty_or_incomplete_is_an_error(no_local_copies, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(no_local_copies / "nowhere"))
    with pytest.raises(data.DataNotFoundError, match=r"\$VISLEARN_DATA=.*nowhere is not a folder"):
        data.find_fashion_mnist(download=False)
    empty = no_local_copies / "empty"
    empty.mkdir()
    monkeypatch.setenv(data.DATA_ENV, str(empty))
    with pytest.raises(data.DataNotFoundError, match=r"lacks train-images-idx3-ubyte\(.gz\), train-labels"):
        data.find_fashion_mnist(download=False)
    make_fake_fmnist(empty)
    (empty / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DataNotFoundError, match=r"lacks t10k-labels-idx1-ubyte\(.gz\); copy"):
        data.find_fashion_mnist(download=True, downloader=lambda root: pytest.fail("must not download"))


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_bytes(p.read_bytes()[:40]), "cannot be read"),       # a truncated .gz
    (lambda p: p.write_bytes(b""), "cannot be read|not an idx file"),        # a zero-byte file
    (lambda p: p.with_suffix("").write_bytes(b"") or p.unlink(), "not an idx file .*0 bytes"),
    (lambda p: p.with_suffix("").write_bytes(b"\x00\x00\x08\x03\x00") or p.unlink(), "truncated inside its header"),
])
def test_damaged_idx_files_name_the_file(no_local_copies, monkeypatch, damage, words):
    folder = no_local_copies / "mine"
    make_fake_fmnist(folder)
    damage(folder / "t10k-images-idx3-ubyte.gz")
    monkeypatch.setenv(data.DATA_ENV, str(folder))
    with pytest.raises(data.DataError, match=rf"t10k-images-idx3-ubyte.*({words})"):
        data.fashion_mnist("test")


@pytest.mark.parametrize("limit", [0, -5, 2.5, "10", True])
def test_bad_limits(no_local_copies, monkeypatch, limit):
    make_fake_fmnist(no_local_copies / "mine")
    monkeypatch.setenv(data.DATA_ENV, str(no_local_copies / "mine"))
    with pytest.raises(ParameterError, match=r"limit=.* must be an integer"):
        data.fashion_mnist("test", limit)
