"""The Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words"), from scratch.

Matches timm's ``VisionTransformer`` (parameter names, class token or average pooling, final norm
or ``fc_norm``): ``vislearn.from_timm`` converts a timm model and the tests assert equal outputs.
Built step by step in ``notebooks/01_vit_from_scratch.ipynb``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..config import check_choice
from .layers import Block, PatchEmbed, TokenClassifier, init_weights, maybe, resize_pos_embed
from .timm_checks import unsupported

POOLS = ("token", "avg")


@dataclass
class ViTConfig:
    img_size: int = 28            # input images are img_size x img_size
    patch_size: int = 4           # side of a square patch; img_size must be a multiple
    in_chans: int = 1             # 1 for Fashion-MNIST, 3 for photos
    num_classes: int = 10         # 0: no head, forward returns pooled features
    embed_dim: int = 64           # width D of every token
    depth: int = 6                # number of transformer blocks
    num_heads: int = 4            # attention heads per block; embed_dim must be a multiple
    mlp_ratio: float = 2.0        # hidden width of the MLP, as a multiple of embed_dim
    qkv_bias: bool = True         # bias on the query/key/value projection
    class_token: bool = True      # prepend a learnable [CLS] token
    global_pool: str = "token"    # "token": read the [CLS] token; "avg": mean of patch tokens
    init_values: float | None = None  # LayerScale init (None: no LayerScale)
    drop_path_rate: float = 0.0   # stochastic depth at the last block (linear in depth)
    norm_eps: float = 1e-6        # LayerNorm epsilon (timm's ViTs use 1e-6)

    def __post_init__(self):
        check_choice("global_pool", self.global_pool, POOLS)
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool='token' needs class_token=True")

    def to_dict(self) -> dict:
        return asdict(self)


class VisionTransformer(TokenClassifier):
    """Image -> patches -> tokens (+[CLS], + positions) -> blocks -> norm -> pool -> head."""

    def __init__(self, cfg: ViTConfig | None = None, **overrides):
        super().__init__()
        cfg = cfg or ViTConfig(**overrides)
        self.cfg = cfg
        D = cfg.embed_dim
        self.patch_embed = PatchEmbed(img_size=cfg.img_size, patch_size=cfg.patch_size,
                                      in_chans=cfg.in_chans, embed_dim=D)
        self.num_prefix_tokens = int(cfg.class_token)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.class_token else None
        num_tokens = self.patch_embed.num_patches + self.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.randn(1, num_tokens, D) * 0.02)
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.ModuleList([
            Block(D, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias,
                  init_values=cfg.init_values, drop_path=rates[i], norm_eps=cfg.norm_eps)
            for i in range(cfg.depth)])
        use_fc_norm = cfg.global_pool == "avg"  # timm: average pooling normalizes after pooling
        self.norm = maybe(nn.LayerNorm(D, eps=cfg.norm_eps), not use_fc_norm)
        self.fc_norm = maybe(nn.LayerNorm(D, eps=cfg.norm_eps), use_fc_norm)
        self.head = nn.Linear(D, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.apply(init_weights)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)

    def positions(self, grid: int) -> torch.Tensor:
        """The position table for a grid x grid patch grid (1, prefix + grid^2, D): the learned one, or,
        for inputs of another size (DINO's local crops), the learned one resized as DINO's
        ``interpolate_pos_encoding`` does (bicubic, no antialiasing, ``scale_factor=(grid + 0.1) / g``)."""
        if grid == self.patch_embed.grid_size:
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, grid, self.num_prefix_tokens, antialias=False, scale_offset=0.1)

    def prefix_tokens(self, batch: int) -> list[torch.Tensor]:
        """The learned tokens put before the patches: [CLS] (or none), each (B, 1, D)."""
        return [] if self.cls_token is None else [self.cls_token.expand(batch, -1, -1)]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> tokens (B, prefix + N, D) with position embeddings added.

        Any size that is a whole number of patches works: the position table is resized to its grid.
        """
        grid = x.shape[-1] // self.cfg.patch_size
        x = self.patch_embed(x)                                       # (B, N, D)
        x = torch.cat([*self.prefix_tokens(x.shape[0]), x], dim=1)    # (B, prefix + N, D)
        return x + self.positions(grid)

    def forward_features(self, x: torch.Tensor, return_attention: bool = False):
        """Images (B, C, H, W) -> normalized tokens (B, 1 + N, D) [, list of (B, h, 1 + N, 1 + N)]."""
        x = self.embed(x)
        attentions = []
        for block in self.blocks:
            if return_attention:
                x, attn = block(x, return_attention=True)
                attentions.append(attn)
            else:
                x = block(x)
        x = self.norm(x)
        return (x, attentions) if return_attention else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, 1 + N, D) -> logits (B, classes), or pooled features (B, D) if pre_logits."""
        if self.cfg.global_pool == "token":
            x = x[:, 0]                                   # (B, D): the [CLS] token
        else:
            x = x[:, self.num_prefix_tokens:].mean(dim=1)  # (B, D): mean over patch tokens
        x = self.fc_norm(x)
        return x if pre_logits else self.head(x)



# --- timm -> vislearn ------------------------------------------------------------------------------

def _refuse(what: str) -> None:
    unsupported("VisionTransformer", "ViT", what)


def config_from_timm(model) -> ViTConfig:
    """Read a ViTConfig off a timm ``VisionTransformer``; raise on anything we do not implement."""
    from timm.layers import Mlp as TimmMlp
    from timm.models.vision_transformer import Attention as TimmAttention
    from timm.models.vision_transformer import Block as TimmBlock

    pe = model.patch_embed
    checks = {
        "register tokens": getattr(model, "reg_token", None) is not None,
        "no_embed_class=True": getattr(model, "no_embed_class", False),
        "dynamic_img_size": getattr(model, "dynamic_img_size", False),
        "pre_norm (norm_pre)": not isinstance(model.norm_pre, nn.Identity),
        "no position embedding": model.pos_embed is None,
        f"global_pool={model.global_pool!r}": model.global_pool not in POOLS or model.attn_pool is not None,
        "a normalized patch embedding": not isinstance(pe.norm, nn.Identity),
        "non-square or padded patches": pe.patch_size[0] != pe.patch_size[1] or pe.img_size[0] != pe.img_size[1]
        or getattr(pe, "dynamic_img_pad", False) or pe.proj.bias is None,
        "patch dropout": not isinstance(model.patch_drop, nn.Identity),
        "a final norm disabled or moved (final_norm/fc_norm)":
            isinstance(model.norm, nn.Identity) == isinstance(model.fc_norm, nn.Identity)
            or isinstance(model.fc_norm, nn.Identity) != (model.global_pool == "token"),
    }
    for i, b in enumerate(model.blocks):
        a = b.attn
        checks.update({
            f"a custom block type {type(b).__name__}": type(b) is not TimmBlock,
            f"a custom attention {type(a).__name__}": type(a) is not TimmAttention,
            "qk_norm or scale_norm or gated attention":
                not (isinstance(a.q_norm, nn.Identity) and isinstance(a.norm, nn.Identity))
                or getattr(a, "gate", None) is not None,
            "attention without output-projection bias": a.proj.bias is None,
            f"an MLP other than Linear-GELU-Linear ({type(b.mlp).__name__})":
                type(b.mlp) is not TimmMlp or not isinstance(b.mlp.act, nn.GELU)
                or b.mlp.act.approximate != "none" or not isinstance(b.mlp.norm, nn.Identity)
                or b.mlp.fc1.bias is None,
            "a non-LayerNorm norm layer": type(b.norm1) not in (nn.LayerNorm,) and
                type(b.norm1).__name__ != "LayerNorm",
            "LayerScale on one branch only": isinstance(b.ls1, nn.Identity) != isinstance(b.ls2, nn.Identity),
        })
        if i == 0:
            first = a
    for what, bad in checks.items():
        if bad:
            _refuse(what)
    b0 = model.blocks[0]
    init_values = None if isinstance(b0.ls1, nn.Identity) else float(b0.ls1.gamma.detach().flatten()[0])
    return ViTConfig(
        img_size=pe.img_size[0], patch_size=pe.patch_size[0], in_chans=pe.proj.in_channels,
        num_classes=model.num_classes, embed_dim=model.embed_dim, depth=len(model.blocks),
        num_heads=first.num_heads, mlp_ratio=b0.mlp.fc1.out_features / model.embed_dim,
        qkv_bias=first.qkv.bias is not None, class_token=model.cls_token is not None,
        global_pool=model.global_pool, init_values=init_values, norm_eps=b0.norm1.eps,
    )


def vit_from_timm(model) -> VisionTransformer:
    """Our VisionTransformer with the weights of a timm ``VisionTransformer``."""
    ours = VisionTransformer(config_from_timm(model))
    ours.load_state_dict(model.state_dict(), strict=True)
    return ours
