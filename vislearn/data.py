"""Data for the course: Fashion-MNIST, and real photos that installed packages ship.

Fashion-MNIST (Xiao et al., 2017) is looked for, in order, in
    1. ``$VISLEARN_DATA``,
    2. the repository's ``data/`` folder,
    3. ``/usr/share/datasets/fashion-mnist/`` (Debian's ``dataset-fashion-mnist`` package),
and is otherwise downloaded with torchvision into ``~/.cache/vislearn/data`` (when online).
Each folder may hold the four idx files (optionally gzipped) directly, in ``fashion-mnist/``,
or in torchvision's ``FashionMNIST/raw/`` layout. We read the idx files ourselves: no pickle,
no torchvision needed for local files.

Photos come from scikit-image (``skimage.data``) and scikit-learn (``load_sample_images``), so
every notebook has real images offline. Built in notebook 01.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .config import check_choice

DATA_ENV = "VISLEARN_DATA"
REPO_DATA = Path(__file__).resolve().parent.parent / "data"
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
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, dtype_code, ndim = raw[0] * 256 + raw[1], raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes (magic {raw[:4].hex()})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {data.size} bytes")
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
    images, labels = load_fashion_mnist_arrays(split, folder)
    if limit is not None and limit < len(images):
        keep = np.random.default_rng(seed).permutation(len(images))[:limit]
        keep.sort()
        images, labels = images[keep], labels[keep]
    return TensorDataset(normalize(torch.from_numpy(images.copy())), torch.from_numpy(labels))


def random_crop_flip(x: torch.Tensor, pad: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Batch augmentation on any device: random translation by up to ``pad`` pixels, random h-flip.

    Args:
        x: images (B, C, H, W).
    """
    B, C, H, W = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="constant", value=float(x.min()))
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=generator).tolist()
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=generator).tolist()
    out = torch.stack([padded[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(B)])  # (B, C, H, W)
    flip = torch.rand(B, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


# --- Real photos ----------------------------------------------------------------------------------

PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "horse", "china", "flower")
TEXTURE_NAMES = ("grass", "gravel", "brick")


def _as_rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return img[..., :3].astype(np.uint8)


def photo(name: str) -> np.ndarray:
    """One real photo as an (H, W, 3) uint8 array, from scikit-image or scikit-learn."""
    check_choice("name", name, PHOTO_NAMES + TEXTURE_NAMES)
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return _as_rgb(load_sample_image(f"{name}.jpg"))
    import skimage.data

    img = getattr(skimage.data, name)()
    if name == "horse":  # a silhouette: True is background
        img = ~img
    return _as_rgb(img)


def photos(names: tuple[str, ...] = PHOTO_NAMES) -> dict[str, np.ndarray]:
    """The bundled photo collection: name -> (H, W, 3) uint8."""
    return {n: photo(n) for n in names}
