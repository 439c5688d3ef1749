"""Data for the course, all offline: Fashion-MNIST, real photos, objects in scenes, augmentations.

- ``fmnist``: the Fashion-MNIST finder/loader (``$VISLEARN_DATA``, the repository's ``data/``, Debian's
  package, torchvision's download), normalization, and the 32 px variants of notebook 04;
- ``photos``: photos that scikit-image and scikit-learn ship;
- ``scenes``: Fashion-MNIST items pasted on textured photos, with masks (notebook 05);
- ``augment``: batched augmentations (translations and flips, zoom, DINO's multi-crop);
- ``attacks``: the edits a watermark must survive (real JPEG, rotation, crops, resizing, blur, colour; notebook 08).
"""

from .fmnist import (
    DATA_ENV,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    DataError,
    DataNotFoundError,
    denormalize,
    fashion_mnist,
    fashion_mnist_32,
    fashion_mnist_at,
    find_fashion_mnist,
    load_fashion_mnist_arrays,
    normalize,
    pad_to_32,
    read_idx,
    resize_images,
)
from .photos import PHOTO_NAMES, TEXTURE_NAMES, photo

__all__ = [
    "DATA_ENV", "FASHION_MNIST_CLASSES", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "DataError", "DataNotFoundError",
    "denormalize", "fashion_mnist", "fashion_mnist_32", "fashion_mnist_at", "find_fashion_mnist",
    "load_fashion_mnist_arrays", "normalize", "pad_to_32", "read_idx", "resize_images", "PHOTO_NAMES", "TEXTURE_NAMES",
    "photo",
]
