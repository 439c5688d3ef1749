"""The tiny backbone of the self-supervised loop tests: a 1-block ViT on 16-px RGB images, no head."""

from __future__ import annotations

from vislearn.models.vit import VisionTransformer, ViTConfig


def tiny_vit(**kw) -> VisionTransformer:
    cfg = dict(img_size=16, patch_size=4, in_chans=3, num_classes=0, embed_dim=16, depth=1, num_heads=2)
    return VisionTransformer(ViTConfig(**{**cfg, **kw}))
