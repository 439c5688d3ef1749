"""vislearn.data.augment: DINO's multi-crop and its batched augmentations."""

from __future__ import annotations

import torch

from vislearn.data import augment
from vislearn.models.vit import VisionTransformer, ViTConfig


def tiny_vit(**kw) -> VisionTransformer:
    cfg = dict(img_size=16, patch_size=4, in_chans=3, num_classes=0, embed_dim=16, depth=1, num_heads=2)
    return VisionTransformer(ViTConfig(**{**cfg, **kw}))


def test_multicrop_shapes_and_determinism():
    cfg = augment.MultiCropConfig(global_size=16, local_size=8, n_local=3)
    mc = augment.MultiCrop(cfg)
    x = torch.randn(5, 3, 16, 16)
    crops = mc(x, torch.Generator().manual_seed(0))
    assert [tuple(c.shape) for c in crops] == [(5, 3, 16, 16)] * 2 + [(5, 3, 8, 8)] * 3
    again = mc(x, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(crops, again, strict=True))
    assert not torch.equal(crops[0], crops[1])
    assert all(torch.isfinite(c).all() for c in crops)


def test_augmentations_keep_the_range():
    x = torch.rand(6, 3, 8, 8)
    g = torch.Generator().manual_seed(1)
    for y in (augment.color_jitter(x, 1.0, 0.4, 0.4, 0.2, 0.1, g), augment.random_grayscale(x, 1.0, g),
              augment.random_blur(x, 1.0, (0.5, 1.0), g), augment.random_solarize(x, 1.0, g)):
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 + 1e-6
    assert torch.allclose(augment.random_blur(x, 0.0, (0.5, 1.0), g), x)
    assert torch.allclose(augment.color_jitter(x, 1.0, 0.0, 0.0, 0.0, 0.0, g), x, atol=1e-5)
    full = augment.random_resized_crop(x, 8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0, generator=g)
    assert torch.allclose(full, x, atol=1e-5)                       # the whole image, unflipped
    flipped = augment.random_resized_crop(x, 8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=1.0, generator=g)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-5)
