"""DeiT's distilled Vision Transformer (Touvron et al., 2021, "Training data-efficient image
transformers & distillation through attention"), from scratch.

DeiT is our ViT plus one more learned token: the distillation token [DIST] sits next to [CLS],
attends and is attended to like any other token, and feeds its own head, trained to match a
teacher's predictions. Matches timm's ``VisionTransformerDistilled`` (parameter names
``dist_token``, ``head_dist``; the ``distilled_training`` switch): ``vislearn.from_timm`` converts a
timm model and the tests assert equal outputs. Built in ``notebooks/02_deit_distillation.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import check_choice
from .layers import init_weights
from .vit import VisionTransformer, ViTConfig
from .vit import config_from_timm as vit_config_from_timm


@dataclass
class DeiTConfig(ViTConfig):
    """ViTConfig's fields, unchanged: the distillation token is what the model class adds.

    A DeiT without it would be a plain ViT, so there is no switch for it. Both heads read a token,
    so ``class_token`` must stay True and ``global_pool`` must stay ``"token"``.
    """

    def __post_init__(self):
        super().__post_init__()
        check_choice("global_pool", self.global_pool, ("token",))
        if not self.class_token:
            raise ValueError("DeiT needs class_token=True: its head reads the [CLS] token")


class DistilledVisionTransformer(VisionTransformer):
    """ViT with tokens [CLS, DIST, patches], both extra tokens with position embeddings.

    ``forward`` returns the average of the two heads' logits, as timm does at inference and in
    ordinary training. After ``set_distilled_training(True)`` and in training mode it returns the
    pair (cls_logits, dist_logits) instead, so each head can get its own loss (label vs teacher).
    """

    def __init__(self, cfg: DeiTConfig | None = None, **overrides):
        cfg = cfg or DeiTConfig(**overrides)
        super().__init__(cfg)
        D = cfg.embed_dim
        self.num_prefix_tokens = 2  # [CLS] and [DIST]
        self.dist_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 2, D))
        self.head_dist = nn.Linear(D, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.head_dist.apply(init_weights)
        nn.init.trunc_normal_(self.dist_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.distilled_training = False  # True: forward returns both heads while training (timm's name)

    def set_distilled_training(self, enable: bool = True) -> None:
        """Return (cls_logits, dist_logits) from ``forward`` in training mode; eval still averages."""
        self.distilled_training = enable

    def prefix_tokens(self, batch: int) -> list[torch.Tensor]:
        """[CLS] and [DIST], each (B, 1, D): ``embed`` makes tokens [CLS, DIST, patches] + positions."""
        return [self.cls_token.expand(batch, -1, -1), self.dist_token.expand(batch, -1, -1)]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        """Tokens (B, 2 + N, D) -> logits (B, classes), or a pair of them (see the class docstring).

        With ``pre_logits`` it returns the mean of the two tokens' features (B, D).
        """
        cls, dist = x[:, 0], x[:, 1]                       # (B, D) each
        if pre_logits:
            return (cls + dist) / 2
        cls, dist = self.head(cls), self.head_dist(dist)   # (B, classes) each
        if self.distilled_training and self.training:
            return cls, dist
        return (cls + dist) / 2

    def forward(self, x: torch.Tensor):
        """Images (B, C, H, W) -> averaged logits (B, classes), or (cls_logits, dist_logits)."""
        return self.forward_head(self.forward_features(x))


# --- timm -> vislearn ------------------------------------------------------------------------------

def config_from_timm(model) -> DeiTConfig:
    """Read a DeiTConfig off a timm ``VisionTransformerDistilled``; raise on what we do not implement.

    The backbone checks are the ViT's (``vislearn.vit.config_from_timm``): a distilled model is a
    timm VisionTransformer with one more token and one more head.
    """
    if getattr(model, "dist_token", None) is None or model.num_prefix_tokens != 2:
        raise NotImplementedError("from_timm: this VisionTransformerDistilled has no distillation token "
                                  f"(num_prefix_tokens={model.num_prefix_tokens}); vislearn's DeiT needs "
                                  "exactly [CLS] and [DIST]")
    if isinstance(model.head, nn.Linear) != isinstance(model.head_dist, nn.Linear):
        raise NotImplementedError("from_timm: this VisionTransformerDistilled has only one of head and "
                                  "head_dist; vislearn's DeiT has both or neither")
    return DeiTConfig(**vit_config_from_timm(model).to_dict())


def deit_from_timm(model) -> DistilledVisionTransformer:
    """Our DistilledVisionTransformer with the weights (and distilled_training flag) of timm's."""
    ours = DistilledVisionTransformer(config_from_timm(model))
    ours.load_state_dict(model.state_dict(), strict=True)
    ours.set_distilled_training(model.distilled_training)
    return ours
