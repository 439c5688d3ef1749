"""PatchConvNet: augmenting convolutional networks with attention-based aggregation (Touvron et al., 2021),
from scratch.

PatchConvNet keeps a transformer's outline (a stem that makes patch tokens, a deep stack of residual
blocks with LayerScale, a class token at the end) but its trunk has no attention at all: every block
is x + gamma * conv_mix(norm(x)), where conv_mix is a 1x1 convolution, a depthwise 3x3 convolution
(the only spatial mixing), a squeeze-excitation gate and another 1x1 convolution. Global
information enters once, at the end: instead of average pooling, a single-head *class attention*
block (CaiT's) lets a learned [CLS] token take a weighted average of the patches. Its weights
are an interpretable attention map per image, for the price of one block.

There is no PatchConvNet in timm. The reference is the official ``patchconvnet_models.py`` of
facebookresearch/deit: module and parameter names follow it (``patch_embed.proj``, ``blocks.i.attn.qkv_pos``,
``gamma_1``, ``blocks_token_only``), so its checkpoints load. The tests prove the pooling block equal
to timm's ``LayerScaleBlockClassAttn`` with one head, the trunk mixer equal to the official layer
sequence (with timm's ``SqueezeExcite``), and S60's size (25.2 M parameters) equal to the paper's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..config import ParameterError, check_choice, check_int
from .cait import LayerScaleBlockClassAttn
from .layers import DropPath, TokenClassifier, init_weights, maybe

PATCH_SIZES = (2, 4, 8, 16)  # the stem is 1 to 4 stride-2 3x3 convolutions (the paper: 16)


@dataclass
class PatchConvNetConfig:
    img_size: int = 28            # nominal input size (any size works: each stride-2 conv rounds up)
    patch_size: int = 4           # 2, 4, 8 or 16: the stem halves the resolution 1 to 4 times
    in_chans: int = 1             # 1 for Fashion-MNIST, 3 for photos
    num_classes: int = 10         # 0: no head, forward returns pooled features
    embed_dim: int = 64           # width D of every patch token (the stem's widths are D / 8, D / 4, D / 2, D)
    depth: int = 6                # convolutional trunk blocks
    num_heads: int = 1            # heads of the attention-pooling block (the paper: 1)
    mlp_ratio_clstk: float = 3.0  # MLP hidden width / embed_dim in the pooling block (official name)
    depth_token_only: int = 1     # class-attention (pooling) blocks
    qkv_bias: bool = True         # bias on the pooling block's query/key/value projections
    se_ratio: float = 0.25        # squeeze-excitation bottleneck width / embed_dim
    init_values: float = 1e-4     # LayerScale gammas start here (official init_scale: 1e-4 for S60, 1e-6 deeper)
    drop_path_rate: float = 0.0   # stochastic depth, the same in every trunk block (official dpr_constant)
    norm_eps: float = 1e-6        # LayerNorm epsilon

    def __post_init__(self):
        check_choice("patch_size", self.patch_size, PATCH_SIZES)
        check_int("depth", self.depth, minimum=0)
        check_int("depth_token_only", self.depth_token_only, minimum=1)
        first = self.patch_size // 2  # the stem's first width is embed_dim / (patch_size / 2)
        if self.embed_dim % first or self.embed_dim % self.num_heads:
            raise ParameterError(f"embed_dim={self.embed_dim} must be a multiple of patch_size / 2 = {first} (the "
                                 f"stem halves the width per convolution) and of num_heads={self.num_heads}")

    def to_dict(self) -> dict:
        return asdict(self)


# the official models (patchconvnet_models.py): all 16 px patches, 1 head, pooling MLP ratio 3, eps 1e-6
SIZES = {
    "S60": dict(embed_dim=384, depth=60, init_values=1e-4),
    "S120": dict(embed_dim=384, depth=120, init_values=1e-6),
    "B60": dict(embed_dim=768, depth=60, init_values=1e-6),
    "B120": dict(embed_dim=768, depth=120, init_values=1e-6),
    "L60": dict(embed_dim=1024, depth=60, init_values=1e-6),
    "L120": dict(embed_dim=1024, depth=120, init_values=1e-6),
}


def patchconvnet_config(size: str, **overrides) -> PatchConvNetConfig:
    """An official size (``SIZES``) on ImageNet-shaped input (224 px, 3 channels, 1000 classes), with overrides."""
    check_choice("size", size, SIZES)
    return PatchConvNetConfig(**{"img_size": 224, "patch_size": 16, "in_chans": 3, "num_classes": 1000,
                                 **SIZES[size], **overrides})


def _conv3x3(in_chs: int, out_chs: int) -> nn.Sequential:
    # wrapped in a Sequential as in the official code, so its parameter names (proj.0.0.weight) match
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=2, padding=1, bias=False))


class ConvStem(nn.Module):
    """log2(patch_size) stride-2 3x3 convolutions (no bias, no norm), GELU between them; tokens out."""

    def __init__(self, *, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        convs = int(math.log2(patch_size))
        widths = [in_chans] + [embed_dim // 2 ** (convs - 1 - j) for j in range(convs)]  # 16 px: D/8, D/4, D/2, D
        layers: list[nn.Module] = []
        for j in range(convs):
            layers += [_conv3x3(widths[j], widths[j + 1])] + ([nn.GELU()] if j < convs - 1 else [])
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)                       # (B, D, g, g)
        return x.flatten(2).transpose(1, 2)    # (B, g * g, D)


class SqueezeExcite(nn.Module):
    """Scale each channel by a gate computed from the whole image (Hu et al., 2018): mean over the
    positions -> 1x1 conv down -> ReLU -> 1x1 conv up -> sigmoid. timm's ``SqueezeExcite`` (names too)."""

    def __init__(self, dim: int, rd_ratio: float = 0.25):
        super().__init__()
        rd = round(dim * rd_ratio)
        self.conv_reduce = nn.Conv2d(dim, rd, kernel_size=1)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(rd, dim, kernel_size=1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)                          # (B, C, 1, 1)
        return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(s))))


class ConvMixer(nn.Module):
    """The trunk's token mixer (official ``Conv_blocks_se``): 1x1 conv, GELU, depthwise 3x3 conv, GELU,
    squeeze-excitation, 1x1 conv, on the tokens seen as a (D, g, g) image."""

    def __init__(self, dim: int, *, grid: int, se_ratio: float = 0.25):
        super().__init__()
        self.grid = grid
        self.qkv_pos = nn.Sequential(   # the official name, kept so checkpoints load
            nn.Conv2d(dim, dim, kernel_size=1),
            nn.GELU(),
            nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim),
            nn.GELU(),
            SqueezeExcite(dim, rd_ratio=se_ratio),
            nn.Conv2d(dim, dim, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        x = x.transpose(1, 2).reshape(B, D, self.grid, self.grid)  # (B, D, g, g)
        x = self.qkv_pos(x)
        return x.reshape(B, D, N).transpose(1, 2)                  # (B, N, D)


class ConvBlock(nn.Module):
    """x + gamma_1 * conv_mix(norm(x)): the only sublayer (no MLP: the 1x1 convs are the channel MLP)."""

    def __init__(self, dim: int, *, grid: int, se_ratio: float, init_values: float, drop_path: float = 0.0,
                 norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = ConvMixer(dim, grid=grid, se_ratio=se_ratio)   # "attn": the official name of the mixer
        self.drop_path = maybe(DropPath(drop_path), drop_path > 0)
        self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))


class PatchConvNet(TokenClassifier):
    """Image -> conv stem -> convolutional trunk -> [CLS] pools the patches by class attention -> head."""

    def __init__(self, cfg: PatchConvNetConfig | None = None, **overrides):
        super().__init__()
        cfg = cfg or PatchConvNetConfig(**overrides)
        self.cfg = cfg
        D = cfg.embed_dim
        self.patch_embed = ConvStem(patch_size=cfg.patch_size, in_chans=cfg.in_chans, embed_dim=D)
        grid = cfg.img_size
        for _ in range(int(math.log2(cfg.patch_size))):
            grid = (grid - 1) // 2 + 1          # a 3x3, stride-2, padding-1 conv rounds up
        self.grid = grid
        self.num_prefix_tokens = 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.blocks = nn.ModuleList([
            ConvBlock(D, grid=grid, se_ratio=cfg.se_ratio, init_values=cfg.init_values,
                      drop_path=cfg.drop_path_rate, norm_eps=cfg.norm_eps)
            for _ in range(cfg.depth)])
        self.blocks_token_only = nn.ModuleList([
            LayerScaleBlockClassAttn(D, cfg.num_heads, mlp_ratio=cfg.mlp_ratio_clstk, qkv_bias=cfg.qkv_bias,
                                     init_values=cfg.init_values, norm_eps=cfg.norm_eps)
            for _ in range(cfg.depth_token_only)])
        self.norm = nn.LayerNorm(D, eps=cfg.norm_eps)
        self.head = nn.Linear(D, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.apply(init_weights)   # the official init: trunc-normal Linear (std 0.02), unit LayerNorms
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward_features(self, x: torch.Tensor, return_attention: bool = False):
        """Images (B, C, H, W) -> normalized tokens (B, 1 + N, D) [, pooling attention].

        The attention is a list, one (B, heads, 1, 1 + N) map per pooling block: how [CLS] weighs
        itself (index 0) and each patch.
        """
        x = self.patch_embed(x)                          # (B, N, D)
        for block in self.blocks:
            x = block(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        attentions = []
        for block in self.blocks_token_only:
            if return_attention:
                cls, attn = block(x, cls, return_attention=True)
                attentions.append(attn)
            else:
                cls = block(x, cls)
        x = self.norm(torch.cat([cls, x], dim=1))        # (B, 1 + N, D)
        return (x, attentions) if return_attention else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, 1 + N, D) -> logits (B, classes), or the [CLS] features (B, D) if pre_logits."""
        x = x[:, 0]
        return x if pre_logits else self.head(x)

    @torch.no_grad()
    def pooling_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Where the last pooling block's [CLS] looks, as an image: (B, g, g), heads averaged.

        The weights over the patches; with the weight [CLS] gives itself they sum to 1.
        """
        attn = self.attention_maps(x)[-1]                # (B, heads, 1, 1 + N)
        return attn[:, :, 0, 1:].mean(dim=1).reshape(-1, self.grid, self.grid)

