"""Fashion-MNIST: finding it, reading it without pickle, normalizing it.

Fashion-MNIST (Xiao et al., 2017) is looked for, in order, in
    1. ``$VISLEARN_DATA``,
    2. the repository's ``data/`` folder,
    3. ``/usr/share/datasets/fashion-mnist/`` (Debian's ``dataset-fashion-mnist`` package),
and is otherwise downloaded with torchvision into ``~/.cache/vislearn/data`` (when online).
Each folder may hold the four idx files (optionally gzipped) directly, in ``fashion-mnist/``,
or in torchvision's ``FashionMNIST/raw/`` layout. We read the idx files ourselves: no pickle,
no torchvision needed for local files.

``fashion_mnist_at`` gives the same images padded to 32 px and resized to any size (notebook 04).
Built in notebook 01.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ..config import check_choice, check_int

DATA_ENV = "VISLEARN_DATA"
REPO_DATA = Path(__file__).resolve().parents[2] / "data"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_ROOT = Path.home() / ".cache" / "vislearn" / "data"

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_MEAN = 0.2860  # mean pixel of the training images, scaled to [0, 1]
FASHION_MNIST_STD = 0.3530   # their standard deviation
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLITS = tuple(FASHION_MNIST_FILES)


class DataNotFoundError(FileNotFoundError):
    """A data set could not be found locally nor downloaded; the message says how to fix it."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[31mDataNotFoundError\x1b[0m: {self}"]


class DataError(ValueError):
    """A data file exists but cannot be read (truncated, empty, not an idx file); the message names it."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[31mDataError\x1b[0m: {self}"]


def _idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _complete_folder(root: Path) -> Path | None:
    """The folder under ``root`` that holds all four Fashion-MNIST files, if any."""
    for folder in (root, root / "fashion-mnist", root / "FashionMNIST" / "raw"):
        names = [n for pair in FASHION_MNIST_FILES.values() for n in pair]
        if all(_idx_file(folder, n) for n in names):
            return folder
    return None


def candidate_roots() -> list[Path]:
    """The local places searched for Fashion-MNIST, in order."""
    roots = []
    if os.environ.get(DATA_ENV):
        roots.append(Path(os.environ[DATA_ENV]).expanduser())
    return roots + [REPO_DATA, DEBIAN_FASHION_MNIST]


def _torchvision_download(root: Path) -> None:
    from torchvision.datasets import FashionMNIST

    for train in (True, False):
        FashionMNIST(root=str(root), train=train, download=True)


def find_fashion_mnist(download: bool = True,
                       downloader: Callable[[Path], None] = _torchvision_download) -> Path:
    """Return the folder holding the Fashion-MNIST idx files, downloading them if needed.

    Raises:
        DataNotFoundError: no local copy, and the download failed or was not allowed.
    """
    asked = os.environ.get(DATA_ENV, "").strip()
    if asked:                       # the user named a folder: use it or say what is wrong with it
        root = Path(asked).expanduser()
        if not root.is_dir():
            raise DataNotFoundError(f"${DATA_ENV}={asked} is not a folder; point it at the folder holding "
                                    "train-images-idx3-ubyte(.gz) and the three other idx files, or unset it")
        found = _complete_folder(root)
        if found is None:
            names = [n for pair in FASHION_MNIST_FILES.values() for n in pair]
            missing = [n for n in names if not any(_idx_file(f, n) for f in (root, root / "fashion-mnist",
                                                                              root / "FashionMNIST" / "raw"))]
            raise DataNotFoundError(f"${DATA_ENV}={asked} lacks {', '.join(m + '(.gz)' for m in missing)}; "
                                    "copy the four Fashion-MNIST idx files there, or unset it")
        return found
    searched = candidate_roots() + [DOWNLOAD_ROOT]
    for root in searched:
        found = _complete_folder(root)
        if found is not None:
            return found
    reason = "downloading was not allowed"
    if download:
        try:
            downloader(DOWNLOAD_ROOT)
            found = _complete_folder(DOWNLOAD_ROOT)
            if found is not None:
                return found
            reason = "the download finished but the files are not there"
        except Exception as err:  # offline, DNS failure, HTTP error...: all mean the same to a learner
            reason = f"the download failed ({type(err).__name__}: {str(err)[:120]})"
    places = "\n".join(f"  - {p}" for p in searched)
    raise DataNotFoundError(
        f"Fashion-MNIST was not found and {reason}. Searched:\n{places}\n"
        "Fix it one of three ways:\n"
        f"  1. set ${DATA_ENV} to a folder holding train-images-idx3-ubyte(.gz) and the three other idx files;\n"
        "  2. install Debian's package: sudo apt-get install dataset-fashion-mnist;\n"
        f"  3. connect to the internet once: torchvision then downloads it into {DOWNLOAD_ROOT}."
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format: big-endian magic, dims, then uint8 data)."""
    fix = "delete it and install it again (Debian: apt-get install --reinstall dataset-fashion-mnist)"
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, OSError) as err:        # a truncated or corrupt .gz
        raise DataError(f"{path} cannot be read ({type(err).__name__}: {err}); {fix}") from None
    if len(raw) < 4 or raw[0] * 256 + raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an idx file of unsigned bytes ({len(raw)} bytes, magic {raw[:4].hex()}); "
                        f"{fix}")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated inside its header ({len(raw)} bytes); {fix}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, found {data.size} bytes; {fix}")
    return data.reshape(shape)


def load_fashion_mnist_arrays(split: str = "train", folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of one split."""
    check_choice("split", split, SPLITS)
    folder = folder or find_fashion_mnist()
    image_name, label_name = FASHION_MNIST_FILES[split]
    images = read_idx(_idx_file(folder, image_name))
    labels = read_idx(_idx_file(folder, label_name)).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels in {folder}")
    return images, labels


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28), standardized with the training set's mean/std."""
    return ((images.float() / 255.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD).unsqueeze(1)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``normalize``, back to [0, 1] for display."""
    return (x * FASHION_MNIST_STD + FASHION_MNIST_MEAN).clamp(0, 1)


def fashion_mnist(split: str = "train", limit: int | None = None, *, seed: int = 0,
                  folder: Path | None = None) -> TensorDataset:
    """Fashion-MNIST as a TensorDataset of normalized images (N, 1, 28, 28) and labels (N,).

    Args:
        split: ``train`` (60,000 images) or ``test`` (10,000).
        limit: keep a random, class-balanced-in-expectation subset of this size (seeded), or all.
    """
    if limit is not None:
        limit = check_int("limit", limit, minimum=1)
    images, labels = load_fashion_mnist_arrays(split, folder)
    if limit is not None and limit < len(images):
        keep = np.random.default_rng(seed).permutation(len(images))[:limit]
        keep.sort()
        images, labels = images[keep], labels[keep]
    return TensorDataset(normalize(torch.from_numpy(images.copy())), torch.from_numpy(labels))


# --- At other resolutions (notebook 04) -------------------------------------------------------------

TRAIN_SIZE_32 = 32       # Fashion-MNIST's 28 px padded by 2 px on every side: a 4 x 4 grid of 8 x 8 patches
BACKGROUND = (0.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD  # a black pixel, normalized


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images (N, C, H, W) -> (N, C, size, size), bilinear (antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def pad_to_32(images: torch.Tensor) -> torch.Tensor:
    """Normalized images (N, 1, 28, 28) -> (N, 1, 32, 32), with a 2 px black border (no rescaling)."""
    return F.pad(images, (2, 2, 2, 2), value=BACKGROUND)


def fashion_mnist_at(split: str, limit: int | None = None, seed: int = 0, size: int = TRAIN_SIZE_32) -> TensorDataset:
    """Fashion-MNIST padded to 32 px, then resized to ``size``: images (N, 1, size, size), labels (N,)."""
    images, labels = fashion_mnist(split, limit, seed=seed).tensors
    return TensorDataset(resize_images(pad_to_32(images), size), labels)


def fashion_mnist_32(split: str, limit: int | None, seed: int) -> TensorDataset:
    """A recipe's data function (split, limit, seed): Fashion-MNIST at 32 x 32 px."""
    return fashion_mnist_at(split, limit, seed, TRAIN_SIZE_32)
