"""Recipes of notebook 09 (beyond plain attention): LeViT, ResMLP, ConViT and PatchConvNet on Fashion-MNIST.

One recipe shape for all four, the ViT of notebook 01's (``vit_fmnist``): 15 epochs of AdamW, batch 128,
learning rate 1e-3 with one warm-up epoch and a cosine decay, weight decay 0.05, no augmentation, the
same 60,000 training images; each model sized to 0.20-0.23 M parameters, like the ViT's 0.21 M. The one
difference: these recipes exempt biases, norms and position tables from weight decay (timm's rule),
which ``vit_fmnist`` predates. LeViT is trained without its distillation head (no teacher here: one
head, plain cross-entropy). Two recipes record what the notebook plots over training: ConViT's gates
and the locality of ResMLP's token-mixing weights, at every epoch.

    python -m vislearn.train convit_fmnist --preset full --out data/checkpoints
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..models.convit import ConViTConfig
from ..models.levit import LeViTConfig
from ..models.patchconvnet import PatchConvNetConfig
from ..models.resmlp import ResMLPConfig
from ..train.loop import TrainConfig
from ..train.recipe import Recipe
from .nb01_vit import VIT_FMNIST_FULL

NOTEBOOK = "09_beyond_attention"
FULL = replace(VIT_FMNIST_FULL, wd_skip=TrainConfig().wd_skip)
PRESETS = {
    "smoke": replace(FULL, epochs=1, train_limit=2048, test_limit=1000, warmup_epochs=0.2),
    "classroom": replace(FULL, epochs=2, warmup_epochs=0.3),
    "full": FULL,
}
LEVIT = LeViTConfig(embed_dim=(32, 48, 64), num_heads=(2, 3, 4), depth=(2, 2, 2), key_dim=16, distilled=False)
RESMLP = ResMLPConfig(embed_dim=64, depth=6, mlp_ratio=4.0)
CONVIT = ConViTConfig(embed_dim=64, depth=6, num_heads=4, mlp_ratio=2.0, local_up_to_layer=4)
PATCHCONVNET = PatchConvNetConfig(embed_dim=80, depth=6)


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)          # under torchrun the model is DDP-wrapped


def convit_gates(model: nn.Module) -> dict[str, Any]:
    """Every GPSA head's gate sigmoid(lambda): 1 attends by position (local), 0 by content."""
    return {"gates": [[round(v, 5) for v in row] for row in _unwrap(model).gates().tolist()]}


@torch.no_grad()
def mixing_distance(maps: torch.Tensor) -> torch.Tensor:
    """How far each block's token mixing reaches: the mean distance (in patches) between an output patch
    and its input patches, weighted by |weight|. ``maps``: (depth, N, g, g) -> (depth,)."""
    depth, n, g, _ = maps.shape
    ys, xs = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], 1).float()          # (N, 2)
    dist = torch.cdist(pos, pos)                                         # (N, N): output i, input j
    w = maps.abs().reshape(depth, n, n)
    return (w * dist).sum((1, 2)) / w.sum((1, 2))


def resmlp_locality(model: nn.Module) -> dict[str, Any]:
    return {"mixing_distance": [round(v, 4) for v in mixing_distance(_unwrap(model).token_mixing_maps()).tolist()]}


RECIPES = (
    Recipe(name="levit_fmnist", arch="levit", model=LEVIT.to_dict(), notebook=NOTEBOOK, presets=PRESETS,
           description="LeViT (conv stem to 7x7, three stages 7x7 -> 4x4 -> 2x2 with attention biases, D=32/48/64, "
                       "no distillation head) on Fashion-MNIST."),
    Recipe(name="resmlp_fmnist", arch="resmlp", model=RESMLP.to_dict(), notebook=NOTEBOOK, presets=PRESETS,
           description="ResMLP (7x7 patches, D=64, 6 blocks: a linear layer mixes the 49 tokens) on Fashion-MNIST.",
           probe=resmlp_locality),
    Recipe(name="convit_fmnist", arch="convit", model=CONVIT.to_dict(), notebook=NOTEBOOK, presets=PRESETS,
           description="ConViT (7x7 patches, D=64, 4 GPSA blocks then 2 self-attention blocks, 4 heads) on "
                       "Fashion-MNIST.", probe=convit_gates),
    Recipe(name="patchconvnet_fmnist", arch="patchconvnet", model=PATCHCONVNET.to_dict(), notebook=NOTEBOOK,
           presets=PRESETS, description="PatchConvNet (conv stem to 7x7, 6 conv blocks with squeeze-excitation, "
                                        "D=80, one attention-pooling block) on Fashion-MNIST."),
)
