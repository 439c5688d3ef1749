"""A small convolutional network: the teacher of DeiT's distillation (notebook 02).

DeiT (Touvron et al., 2021) distills a convnet into a transformer: the convnet's inductive biases
(locality, translation equivariance, pooling) are what the ViT lacks, and the paper finds a convnet
teacher beats a transformer teacher. Ours is the smallest thing that deserves the name on
Fashion-MNIST: ``stages`` x (3x3 conv, BatchNorm, ReLU, 2x2 max-pool), global average pooling, a
linear head. Built in ``notebooks/02_deit_distillation.ipynb``; the recipe is ``convnet_fmnist`` in
``vislearn.distill``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class ConvNetConfig:
    in_chans: int = 1         # 1 for Fashion-MNIST, 3 for photos
    num_classes: int = 10
    width: int = 32           # channels of the first stage; each later stage doubles them
    stages: int = 3           # conv-BN-ReLU-maxpool stages: 28 -> 14 -> 7 -> 3 pixels
    drop: float = 0.1         # dropout before the classifier

    def __post_init__(self):
        if self.width < 1 or self.stages < 1:
            raise ValueError(f"ConvNetConfig needs width >= 1 and stages >= 1, got width={self.width}, "
                             f"stages={self.stages}")

    def to_dict(self) -> dict:
        return asdict(self)


class ConvNet(nn.Module):
    """Images (B, C, H, W) -> ``stages`` x (conv, BN, ReLU, max-pool) -> global average -> logits."""

    def __init__(self, cfg: ConvNetConfig | None = None, **overrides):
        super().__init__()
        cfg = cfg or ConvNetConfig(**overrides)
        self.cfg = cfg
        layers, c_in = [], cfg.in_chans
        for s in range(cfg.stages):
            c_out = cfg.width * 2 ** s
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.num_features = c_in
        self.drop = nn.Dropout(cfg.drop)
        self.head = nn.Linear(c_in, cfg.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> pooled features (B, width * 2^(stages - 1))."""
        return self.features(x).mean(dim=(2, 3))               # (B, C', h, w) -> (B, C')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.forward_features(x)))  # (B, classes)
