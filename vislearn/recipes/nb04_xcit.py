"""Recipes of notebook 04 (XCiT): an XCiT and a ViT of similar size at 32 px, the "w/o LPI" ablation,
and both models trained on randomly zoomed images."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import apply_zoom, zoom_params
from ..data.fmnist import TRAIN_SIZE_32, fashion_mnist_32
from ..methods.lpi import switch_off_lpi_
from ..models.vit import ViTConfig
from ..models.xcit import XCiTConfig
from ..train import distributed
from ..train.loop import TrainConfig
from ..train.recipe import Recipe

NOTEBOOK = "04_xcit_cross_covariance"


def _lpi_off_loss(device: torch.device):
    """Cross-entropy on an XCiT whose LPI branches are switched off (re-zeroed before every step)."""
    del device

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        switch_off_lpi_(distributed.unwrap(model))   # idempotent and cheap; zero gradients keep the zeros anyway
        return F.cross_entropy(model(x), y)

    return loss_fn


def _zoom_loss(device: torch.device):
    """Cross-entropy on randomly zoomed images (``random_zoom``, its own seeded generator).

    Under torchrun ``x`` is this process's shard: every process draws the zooms of the whole global
    batch and applies its slice, so the images are those one process would see."""
    del device
    generator = torch.Generator().manual_seed(0)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        theta = distributed.shard(zoom_params(len(x) * distributed.world_size(), generator))   # (B_shard, 2, 3)
        return F.cross_entropy(model(apply_zoom(x, theta)), y)

    return loss_fn


# The same budget for every model, and no translations or flips (at this size and budget the models
# underfit, see notebook 01). A recipe's only other hook into training is its objective, so the zoom
# augmentation lives there (``_zoom_loss``): training sees zoomed images, evaluation the images as they are.
# Trained before the course adopted timm's weight-decay rule: tokens, position tables and XCiT's
# temperatures were decayed too (wd_skip=()); kept so the recipes reproduce their bundled checkpoints.
FMNIST32_FULL = TrainConfig(epochs=10, batch_size=128, lr=1e-3, weight_decay=0.05, warmup_epochs=1, augment=False,
                            wd_skip=())
FMNIST32_PRESETS = {
    "smoke": replace(FMNIST32_FULL, epochs=1, train_limit=2048, test_limit=1000, warmup_epochs=0.2),
    "classroom": replace(FMNIST32_FULL, epochs=2, warmup_epochs=0.3),
    "full": FMNIST32_FULL,
}
# Two models of similar size: 6 attention blocks of width 64 with 4 heads, MLP ratio 2, 8 x 8 px patches.
XCIT_FMNIST32 = XCiTConfig(img_size=TRAIN_SIZE_32, patch_size=8, in_chans=1, num_classes=10, embed_dim=64, depth=4,
                           num_heads=4, mlp_ratio=2.0, cls_attn_layers=2, tokens_norm=False)
VIT_FMNIST32 = ViTConfig(img_size=TRAIN_SIZE_32, patch_size=8, in_chans=1, num_classes=10, embed_dim=64, depth=6,
                         num_heads=4, mlp_ratio=2.0)

RECIPES = (
    Recipe(name="xcit_fmnist32", arch="xcit", model=XCIT_FMNIST32.to_dict(), presets=FMNIST32_PRESETS,
           notebook=NOTEBOOK, data=fashion_mnist_32,
           description="The XCiT of notebook 04 (conv stem to 4x4 patches of 8x8 px, D=64, 4 XCA blocks + "
                       "2 class-attention blocks, 4 heads) on Fashion-MNIST padded to 32 px."),
    Recipe(name="vit_fmnist32", arch="vit", model=VIT_FMNIST32.to_dict(), presets=FMNIST32_PRESETS,
           notebook=NOTEBOOK, data=fashion_mnist_32,
           description="A plain ViT of similar size for notebook 04 (4x4 patches of 8x8 px, D=64, 6 blocks, "
                       "4 heads) on Fashion-MNIST padded to 32 px."),
    Recipe(name="xcit_fmnist32_nolpi", arch="xcit", model=XCIT_FMNIST32.to_dict(), presets=FMNIST32_PRESETS,
           notebook=NOTEBOOK, data=fashion_mnist_32, make_loss=_lpi_off_loss,
           description="xcit_fmnist32 trained with its local patch interaction switched off (the paper's "
                       "'w/o LPI' ablation)."),
    Recipe(name="xcit_fmnist32_zoom", arch="xcit", model=XCIT_FMNIST32.to_dict(), presets=FMNIST32_PRESETS,
           notebook=NOTEBOOK, data=fashion_mnist_32, make_loss=_zoom_loss,
           description="xcit_fmnist32 trained on randomly zoomed images (x0.75 to x2), as ImageNet models see "
                       "objects at many sizes."),
    Recipe(name="vit_fmnist32_zoom", arch="vit", model=VIT_FMNIST32.to_dict(), presets=FMNIST32_PRESETS,
           notebook=NOTEBOOK, data=fashion_mnist_32, make_loss=_zoom_loss,
           description="vit_fmnist32 trained on randomly zoomed images (x0.75 to x2)."),
)
