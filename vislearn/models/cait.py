"""CaiT: Class-Attention in Image Transformers (Touvron et al., 2021, "Going deeper with Image
Transformers"), from scratch.

Two ideas let CaiT go deep. LayerScale multiplies each residual branch by a learned per-channel
gamma (initialised tiny), so a new block starts close to the identity. Class attention separates
two jobs a ViT's [CLS] token mixes up: the self-attention blocks only process patches (no [CLS]
among them), then a few class-attention blocks let the [CLS] token alone query the frozen patches.
The self-attention is talking-heads attention: the heads' scores are mixed by a learned heads x
heads matrix before the softmax (``proj_l``) and again after it (``proj_w``).

Matches timm's ``Cait`` (parameter names ``gamma_1``, ``blocks_token_only``, ``proj_l``,
``proj_w`` ...): ``vislearn.from_timm`` converts a timm model and the tests assert equal outputs.
Built in ``notebooks/03_cait_class_attention.ipynb``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..config import check_choice
from .layers import ClassAttention, ClassAttentionClassifier, DropPath, Mlp, PatchEmbed, init_weights, maybe
from .timm_checks import is_gelu_mlp, is_layernorm, unsupported

POOLS = ("token", "avg")


@dataclass
class CaiTConfig:
    img_size: int = 28            # input images are img_size x img_size
    patch_size: int = 4           # side of a square patch; img_size must be a multiple
    in_chans: int = 1             # 1 for Fashion-MNIST, 3 for photos
    num_classes: int = 10         # 0: no head, forward returns pooled features
    embed_dim: int = 64           # width D of every token
    depth: int = 6                # self-attention (talking-heads) blocks over the patches
    num_heads: int = 4            # attention heads in every block; embed_dim must be a multiple
    mlp_ratio: float = 2.0        # MLP hidden width / embed_dim in the self-attention blocks
    depth_token_only: int = 2     # class-attention blocks, where only [CLS] is updated
    mlp_ratio_token_only: float = 2.0  # MLP hidden width / embed_dim in the class-attention blocks
    qkv_bias: bool = True         # bias on the query/key/value projections
    init_values: float = 1e-4     # LayerScale gammas start here (timm: 1e-5 or 1e-6 for deep models)
    global_pool: str = "token"    # "token": read [CLS]; "avg": mean of the patch tokens
    drop_path_rate: float = 0.0   # stochastic depth, the same in every self-attention block (as timm)
    norm_eps: float = 1e-6        # LayerNorm epsilon

    def __post_init__(self):
        check_choice("global_pool", self.global_pool, POOLS)

    def to_dict(self) -> dict:
        return asdict(self)


class TalkingHeadsAttention(nn.Module):
    """Self-attention whose heads talk (Shazeer et al., 2020): scores are mixed across heads.

    ``proj_l`` mixes the heads' logits before the softmax, ``proj_w`` mixes the probabilities after
    it, both linear maps over the head axis applied at every (query, key) pair. The returned
    weights are the softmax output (rows sum to 1); the values are averaged with their ``proj_w``
    mixture, whose rows need not sum to 1.
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_l = nn.Linear(num_heads, num_heads)  # mixes heads' logits, before the softmax
        self.proj_w = nn.Linear(num_heads, num_heads)  # mixes heads' weights, after the softmax

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """
        Args:
            x: patch tokens (B, N, D).
            return_attention: also return the post-softmax weights (B, heads, N, N).
        """
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)  # (B, N, 3, h, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                      # 3 x (B, h, N, d)
        logits = (q * self.scale) @ k.transpose(-2, -1)                     # (B, h, N, N)
        # a Linear acts on the last axis, so move the heads there and back
        logits = self.proj_l(logits.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, h, N, N)
        attn = logits.softmax(dim=-1)                                       # (B, h, N, N)
        mixed = self.proj_w(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)   # (B, h, N, N)
        out = (mixed @ v).transpose(1, 2).reshape(B, N, D)                  # (B, N, D)
        out = self.proj(out)
        return (out, attn) if return_attention else out


class LayerScaleBlock(nn.Module):
    """x + gamma_1 * attn(norm(x)), then x + gamma_2 * mlp(norm(x)): timm's ``LayerScaleBlock``."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float, qkv_bias: bool,
                 init_values: float, drop_path: float = 0.0, norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = TalkingHeadsAttention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))  # LayerScale of the attention
        self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))  # LayerScale of the MLP
        self.drop_path = maybe(DropPath(drop_path), drop_path > 0)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if return_attention:
            y, attn = self.attn(self.norm1(x), return_attention=True)
        else:
            y, attn = self.attn(self.norm1(x)), None
        x = x + self.drop_path(self.gamma_1 * y)
        x = x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))
        return (x, attn) if return_attention else x


class LayerScaleBlockClassAttn(nn.Module):
    """Update the class token only: the patches are keys and values, never changed here.

    timm's ``LayerScaleBlockClassAttn``: u = [cls, patches]; cls + gamma_1 * class_attn(norm(u)),
    then cls + gamma_2 * mlp(norm(cls)).
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float, qkv_bias: bool,
                 init_values: float, norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = ClassAttention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))
        self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor, cls: torch.Tensor, return_attention: bool = False):
        """
        Args:
            x: patch tokens (B, N, D), the output of the self-attention blocks.
            cls: the class token (B, 1, D).
            return_attention: also return the class token's attention (B, heads, 1, 1 + N).
        """
        u = self.norm1(torch.cat([cls, x], dim=1))  # (B, 1 + N, D)
        if return_attention:
            y, attn = self.attn(u, return_attention=True)
        else:
            y, attn = self.attn(u), None
        cls = cls + self.gamma_1 * y                               # (B, 1, D)
        cls = cls + self.gamma_2 * self.mlp(self.norm2(cls))       # (B, 1, D)
        return (cls, attn) if return_attention else cls


class CaiT(ClassAttentionClassifier):
    """Image -> patches (+ positions) -> LayerScale blocks -> [CLS] via class attention -> head."""

    def __init__(self, cfg: CaiTConfig | None = None, **overrides):
        super().__init__()
        cfg = cfg or CaiTConfig(**overrides)
        self.cfg = cfg
        D = cfg.embed_dim
        self.patch_embed = PatchEmbed(img_size=cfg.img_size, patch_size=cfg.patch_size,
                                      in_chans=cfg.in_chans, embed_dim=D)
        self.num_prefix_tokens = 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        # positions for the patches only: [CLS] never enters the self-attention blocks
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, D))
        self.blocks = nn.ModuleList([
            LayerScaleBlock(D, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias,
                            init_values=cfg.init_values, drop_path=cfg.drop_path_rate, norm_eps=cfg.norm_eps)
            for _ in range(cfg.depth)])
        self.blocks_token_only = nn.ModuleList([
            LayerScaleBlockClassAttn(D, cfg.num_heads, mlp_ratio=cfg.mlp_ratio_token_only,
                                     qkv_bias=cfg.qkv_bias, init_values=cfg.init_values,
                                     norm_eps=cfg.norm_eps)
            for _ in range(cfg.depth_token_only)])
        self.norm = nn.LayerNorm(D, eps=cfg.norm_eps)
        self.head = nn.Linear(D, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.apply(init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward_features(self, x: torch.Tensor, return_attention: bool = False):
        """Images (B, C, H, W) -> normalized tokens (B, 1 + N, D) [, attention weights].

        The attention weights are a list in block order: ``depth`` talking-heads maps
        (B, heads, N, N), then ``depth_token_only`` class-attention maps (B, heads, 1, 1 + N).
        """
        x = self.patch_embed(x) + self.pos_embed       # (B, N, D)
        attentions = []
        for block in self.blocks:
            if return_attention:
                x, attn = block(x, return_attention=True)
                attentions.append(attn)
            else:
                x = block(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        for block in self.blocks_token_only:
            if return_attention:
                cls, attn = block(x, cls, return_attention=True)
                attentions.append(attn)
            else:
                cls = block(x, cls)
        x = self.norm(torch.cat([cls, x], dim=1))      # (B, 1 + N, D)
        return (x, attentions) if return_attention else x


# --- timm -> vislearn ------------------------------------------------------------------------------

def _refuse(what: str) -> None:
    unsupported("Cait", "CaiT", what)


def config_from_timm(model) -> CaiTConfig:
    """Read a CaiTConfig off a timm ``Cait``; raise on anything we do not implement."""
    from timm.layers import PatchEmbed as TimmPatchEmbed
    from timm.models.cait import ClassAttn, LayerScaleBlockClassAttn, TalkingHeadAttn
    from timm.models.cait import LayerScaleBlock as TimmBlock

    pe, D = model.patch_embed, model.embed_dim
    if model.blocks_token_only is None or model.cls_token is None:
        _refuse("no class token or class-attention blocks (pruned by prune_intermediate_layers)")
    blocks, cls_blocks = list(model.blocks), list(model.blocks_token_only)
    if not blocks:
        _refuse("depth=0 (no self-attention blocks)")
    first, eps = blocks[0], getattr(model.norm, "eps", None)
    drop_path = float(getattr(first.drop_path, "drop_prob", 0.0))
    checks = [  # (what we would not reproduce, whether this model has it)
        (f"global_pool={model.global_pool!r}", model.global_pool not in POOLS),
        (f"a patch embedding other than timm's PatchEmbed ({type(pe).__name__})",
         type(pe) is not TimmPatchEmbed),
        ("a normalized patch embedding", not isinstance(getattr(pe, "norm", None), nn.Identity)),
        ("non-square, padded, dynamic or bias-free patches", pe.patch_size[0] != pe.patch_size[1]
         or pe.img_size is None or pe.img_size[0] != pe.img_size[1] or not pe.flatten
         or pe.dynamic_img_pad or pe.proj.bias is None),
        ("a final norm other than LayerNorm", not is_layernorm(model.norm, eps)),
    ]
    for b in blocks:
        width = (b.attn.num_heads, b.mlp.fc1.out_features)
        checks += [
            (f"a custom block type {type(b).__name__}", type(b) is not TimmBlock),
            (f"a custom attention {type(b.attn).__name__}", type(b.attn) is not TalkingHeadAttn),
            (f"an MLP other than Linear-GELU-Linear ({type(b.mlp).__name__})", not is_gelu_mlp(b.mlp)),
            ("a norm other than LayerNorm with the final norm's eps",
             not (is_layernorm(b.norm1, eps) and is_layernorm(b.norm2, eps))),
            ("self-attention blocks of different widths",
             width != (first.attn.num_heads, first.mlp.fc1.out_features)),
            ("different drop_path rates per block",
             float(getattr(b.drop_path, "drop_prob", 0.0)) != drop_path),
            ("qkv_bias differing between blocks", (b.attn.qkv.bias is None) != (first.attn.qkv.bias is None)),
        ]
    for b in cls_blocks:
        checks += [
            (f"a custom class-attention block {type(b).__name__}", type(b) is not LayerScaleBlockClassAttn),
            (f"a custom class attention {type(b.attn).__name__}", type(b.attn) is not ClassAttn),
            (f"an MLP other than Linear-GELU-Linear ({type(b.mlp).__name__})", not is_gelu_mlp(b.mlp)),
            ("a norm other than LayerNorm with the final norm's eps",
             not (is_layernorm(b.norm1, eps) and is_layernorm(b.norm2, eps))),
            ("class-attention blocks of different widths",
             b.mlp.fc1.out_features != cls_blocks[0].mlp.fc1.out_features),
            ("stochastic depth in the class-attention blocks", not isinstance(b.drop_path, nn.Identity)),
            ("class attention with its own head count or qkv_bias", b.attn.num_heads != first.attn.num_heads
             or (b.attn.q.bias is None) != (first.attn.qkv.bias is None)),
        ]
    for what, bad in checks:
        if bad:
            _refuse(what)
    return CaiTConfig(
        img_size=pe.img_size[0], patch_size=pe.patch_size[0], in_chans=pe.proj.in_channels,
        num_classes=model.num_classes, embed_dim=D, depth=len(blocks), num_heads=first.attn.num_heads,
        mlp_ratio=first.mlp.fc1.out_features / D, depth_token_only=len(cls_blocks),
        mlp_ratio_token_only=cls_blocks[0].mlp.fc1.out_features / D if cls_blocks else 4.0,
        qkv_bias=first.attn.qkv.bias is not None, init_values=float(first.gamma_1.detach().flatten()[0]),
        global_pool=model.global_pool, drop_path_rate=drop_path, norm_eps=eps,
    )


def cait_from_timm(model) -> CaiT:
    """Our CaiT with the weights of a timm ``Cait``."""
    ours = CaiT(config_from_timm(model))
    ours.load_state_dict(model.state_dict(), strict=True)
    return ours
