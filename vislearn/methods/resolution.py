"""Models at another resolution: XCiT as it is, a plain ViT with interpolated position embeddings.

XCiT's convolutional stem and Fourier positions work at any image size; a ViT's learned position
table is tied to its patch grid and must be resized (``vislearn.models.layers.resize_pos_embed``,
equal to timm's ``resample_abs_pos_embed``). ``accuracy_at`` measures a model on images resized to
another size, the experiment of XCiT's paper (El-Nouby et al., 2021) in notebook 04.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..data.fmnist import resize_images
from ..models.layers import resize_pos_embed
from ..models.vit import VisionTransformer
from ..models.xcit import XCiT


def vit_at_resolution(model: VisionTransformer, img_size: int) -> VisionTransformer:
    """A copy of ``model`` for img_size x img_size inputs: same weights, position embeddings interpolated."""
    cfg = replace(model.cfg, img_size=img_size)
    new = VisionTransformer(cfg)
    state = dict(model.state_dict())
    state["pos_embed"] = resize_pos_embed(state["pos_embed"], img_size // cfg.patch_size, model.num_prefix_tokens)
    new.load_state_dict(state)
    p = next(model.parameters())
    return new.to(p.device).train(model.training)


def at_resolution(model: nn.Module, img_size: int) -> nn.Module:
    """``model`` ready for img_size x img_size inputs: XCiT as is (any size works), a ViT interpolated."""
    if isinstance(model, VisionTransformer):
        return vit_at_resolution(model, img_size)
    if isinstance(model, XCiT):
        return model
    raise TypeError(f"at_resolution: expected a VisionTransformer or an XCiT, got {type(model).__name__}")


@torch.no_grad()
def accuracy_at(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, size: int,
                device: torch.device | str = "cpu", batch_size: int = 2000) -> float:
    """Accuracy of ``model`` on images resized to ``size`` (a ViT gets interpolated position embeddings)."""
    m = at_resolution(model, size).to(device).eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        x = resize_images(images[i:i + batch_size], size).to(device)
        correct += (m(x).argmax(1).cpu() == labels[i:i + batch_size]).sum().item()
    return correct / len(images)
