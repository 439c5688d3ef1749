"""Real photos that installed packages ship, so every notebook has real images offline.

scikit-image's ``skimage.data`` (astronaut, chelsea, coffee, rocket, horse and the textures grass,
gravel, brick) and scikit-learn's sample images (china, flower). ``photo_batch`` prepares them as
a timm model expects (its eval transform). Built in notebook 01; textures make the scenes of 05.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..config import check_choice

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


def photo_batch(model: nn.Module, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bundled photos prepared as ``model`` expects them (timm's eval transform: resize, centre crop,
    normalize): (B, 3, 224, 224) inputs, and the same crops in [0, 1] for display."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    data_cfg = resolve_data_config({}, model=model)
    transform = create_transform(**data_cfg)
    x = torch.stack([transform(Image.fromarray(photo(n))) for n in names])                # (B, 3, S, S)
    mean = torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(data_cfg["std"]).view(1, 3, 1, 1)
    return x, (x * std + mean).clamp(0, 1)
