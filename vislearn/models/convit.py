"""ConViT: improving Vision Transformers with soft convolutional inductive biases (d'Ascoli et al., 2021),
from scratch.

A convolution knows from the start that nearby pixels matter; a ViT must learn it from data. ConViT
gives attention that prior softly. Its first blocks use *gated positional self-attention* (GPSA):
every head mixes two attention maps, the usual content map softmax(q k^T / sqrt(d)) and a
positional map softmax(v_pos . r_ij) computed from the offset r_ij = (dx, dy, dx^2 + dy^2) between
query patch i and key patch j alone. A learned gate per head, lambda = sigmoid(gating_param), sets
the blend: (1 - lambda) * content + lambda * position, renormalized. At initialization
(``local_init``) each head's positional map is a Gaussian bump centred on a different neighbouring
offset, sharper with a larger ``locality_strength``, so the heads together act like a 2 x 2 (or 3 x 3)
convolution; training can open the gate towards content and escape locality where data says so.
After ``local_up_to_layer`` GPSA blocks, the class token joins and ordinary self-attention blocks
follow.

Matches timm's ``ConVit`` (``attn.qk``, ``attn.pos_proj``, ``attn.gating_param`` ...):
``vislearn.from_timm`` converts a timm model and the tests assert equal outputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..config import ParameterError, check_choice, check_int
from .layers import Block, DropPath, Mlp, PatchEmbed, TokenClassifier, init_weights, maybe
from .timm_checks import is_gelu_mlp, is_layernorm, unsupported

POOLS = ("token", "avg")


@dataclass
class ConViTConfig:
    img_size: int = 28            # input images are img_size x img_size
    patch_size: int = 4           # side of a square patch; img_size must be a multiple
    in_chans: int = 1             # 1 for Fashion-MNIST, 3 for photos
    num_classes: int = 10         # 0: no head, forward returns pooled features
    embed_dim: int = 64           # width D of every token (timm's embed_dim is per head: D / num_heads)
    depth: int = 6                # blocks in all: GPSA first, then ordinary self-attention
    num_heads: int = 4            # heads in every block; a square number lets local_init tile a k x k window
    mlp_ratio: float = 2.0        # MLP hidden width / embed_dim (timm: 4)
    local_up_to_layer: int = 4    # blocks 0 .. local_up_to_layer - 1 are GPSA; [CLS] joins after them
    locality_strength: float = 1.0  # sharpness of the initial positional attention (local_init)
    qkv_bias: bool = False        # bias on the query/key/value projections (timm: False)
    use_pos_embed: bool = True    # add learned absolute position embeddings to the patches
    global_pool: str = "token"    # "token": read [CLS]; "avg": mean of the patch tokens
    drop_path_rate: float = 0.0   # stochastic depth, rising linearly from 0 to this over the blocks (as timm)
    norm_eps: float = 1e-6        # LayerNorm epsilon

    def __post_init__(self):
        check_choice("global_pool", self.global_pool, POOLS)
        check_int("depth", self.depth, minimum=1)
        check_int("local_up_to_layer", self.local_up_to_layer, minimum=0, maximum=self.depth - 1)
        if self.embed_dim % self.num_heads:
            raise ParameterError(f"embed_dim={self.embed_dim} is not a multiple of num_heads={self.num_heads}")

    def to_dict(self) -> dict:
        return asdict(self)


def relative_offsets(grid: int) -> torch.Tensor:
    """r_ij for every pair of patches of a grid x grid map (row-major): (dx, dy, dx^2 + dy^2), key - query.

    Returns:
        long tensor (N, N, 3), N = grid * grid (integers: exact in any dtype; ``randomize_`` leaves them).
    """
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()           # (N,) each
    dx = cols[None, :] - cols[:, None]                    # (N, N): column of key j - column of query i
    dy = rows[None, :] - rows[:, None]                    # (N, N): row offset
    return torch.stack([dx, dy, dx ** 2 + dy ** 2], dim=-1)


class GPSA(nn.Module):
    """Gated positional self-attention: content and position attention, blended per head by a gate."""

    def __init__(self, dim: int, num_heads: int, *, grid: int, qkv_bias: bool = False, locality_strength: float = 1.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.locality_strength = locality_strength
        self.qk = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.pos_proj = nn.Linear(3, num_heads)               # v_pos of each head: (dx, dy, d^2) -> a score
        self.gating_param = nn.Parameter(torch.ones(num_heads))  # lambda = sigmoid(1) ~ 0.73 at init: mostly position
        self.register_buffer("rel_indices", relative_offsets(grid), persistent=False)

    @torch.no_grad()
    def local_init(self) -> None:
        """timm's (and the paper's) initialization: values pass through (v = identity), and head
        (h1, h2) of a k x k window (k = floor(sqrt(heads))) gets a positional score
        -locality_strength * (d^2 - 2 (h2 - c) dx - 2 (h1 - c) dy), peaked at offset dx = h2 - c,
        dy = h1 - c. Heads beyond k * k keep their random init."""
        self.v.weight.copy_(torch.eye(self.v.weight.shape[0]))
        k = int(self.num_heads ** 0.5)
        center = (k - 1) / 2 if k % 2 == 0 else k // 2
        for h1 in range(k):
            for h2 in range(k):
                head = h1 + k * h2
                self.pos_proj.weight[head] = torch.tensor([2 * (h2 - center), 2 * (h1 - center), -1.0])
        self.pos_proj.weight.mul_(self.locality_strength)

    def gate(self) -> torch.Tensor:
        """lambda per head (heads,): the weight of the positional map in the blend."""
        return torch.sigmoid(self.gating_param)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """
        Args:
            x: patch tokens (B, N, D), no class token.
            return_attention: also return the blended weights (B, heads, N, N).
        """
        B, N, D = x.shape
        h, d = self.num_heads, self.head_dim
        q, k = self.qk(x).reshape(B, N, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, h, N, d)
        content = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)         # (B, h, N, N)
        position = self.pos_proj(self.rel_indices.to(x.dtype))                     # (N, N, h)
        position = position.permute(2, 0, 1).softmax(dim=-1)                       # (h, N, N), the same for every image
        gate = self.gate().view(h, 1, 1)                                           # (h, 1, 1)
        attn = (1.0 - gate) * content + gate * position                            # (B, h, N, N)
        attn = attn / attn.sum(dim=-1, keepdim=True)
        v = self.v(x).reshape(B, N, h, d).transpose(1, 2)                          # (B, h, N, d)
        out = self.proj((attn @ v).transpose(1, 2).reshape(B, N, D))               # (B, N, D)
        return (out, attn) if return_attention else out


class GPSABlock(nn.Module):
    """Pre-norm block around GPSA: x + gpsa(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, *, grid: int, mlp_ratio: float, qkv_bias: bool,
                 locality_strength: float, drop_path: float = 0.0, norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = GPSA(dim, num_heads, grid=grid, qkv_bias=qkv_bias, locality_strength=locality_strength)
        self.drop_path = maybe(DropPath(drop_path), drop_path > 0)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if return_attention:
            y, attn = self.attn(self.norm1(x), return_attention=True)
        else:
            y, attn = self.attn(self.norm1(x)), None
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return (x, attn) if return_attention else x


class ConViT(TokenClassifier):
    """Image -> patches (+ positions) -> GPSA blocks -> [CLS] joins -> self-attention blocks -> head."""

    def __init__(self, cfg: ConViTConfig | None = None, **overrides):
        super().__init__()
        cfg = cfg or ConViTConfig(**overrides)
        self.cfg = cfg
        D = cfg.embed_dim
        self.patch_embed = PatchEmbed(img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans,
                                      embed_dim=D)
        self.num_prefix_tokens = 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        if cfg.use_pos_embed:  # positions for the patches only: [CLS] joins after the GPSA blocks
            self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, D))
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        common = dict(mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, norm_eps=cfg.norm_eps)
        self.blocks = nn.ModuleList([
            GPSABlock(D, cfg.num_heads, grid=self.patch_embed.grid_size, locality_strength=cfg.locality_strength,
                      drop_path=rates[i], **common)
            if i < cfg.local_up_to_layer else Block(D, cfg.num_heads, drop_path=rates[i], **common)
            for i in range(cfg.depth)])
        self.norm = nn.LayerNorm(D, eps=cfg.norm_eps)
        self.head = nn.Linear(D, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.apply(init_weights)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if cfg.use_pos_embed:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, GPSA):
                m.local_init()

    def forward_features(self, x: torch.Tensor, return_attention: bool = False):
        """Images (B, C, H, W) -> normalized tokens (B, 1 + N, D) [, attention weights].

        The weights are a list in block order: ``local_up_to_layer`` GPSA maps over the patches
        (B, heads, N, N), then self-attention maps over [CLS, patches] (B, heads, 1 + N, 1 + N).
        """
        x = self.patch_embed(x)                                  # (B, N, D)
        if self.cfg.use_pos_embed:
            x = x + self.pos_embed
        attentions = []
        for i, block in enumerate(self.blocks):
            if i == self.cfg.local_up_to_layer:
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, D)
            if return_attention:
                x, attn = block(x, return_attention=True)
                attentions.append(attn)
            else:
                x = block(x)
        x = self.norm(x)
        return (x, attentions) if return_attention else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, 1 + N, D) -> logits (B, classes), or pooled features (B, D) if pre_logits."""
        x = x[:, 0] if self.cfg.global_pool == "token" else x[:, 1:].mean(dim=1)  # (B, D)
        return x if pre_logits else self.head(x)

    @torch.no_grad()
    def gates(self) -> torch.Tensor:
        """lambda = sigmoid(gating_param) of every GPSA block: (local_up_to_layer, heads). 1: the head
        attends by position only (a convolution-like head), 0: by content only (a plain ViT head)."""
        return torch.stack([b.attn.gate() for b in self.blocks[:self.cfg.local_up_to_layer]])


# --- timm -> vislearn ------------------------------------------------------------------------------

def _refuse(what: str) -> None:
    unsupported("ConVit", "ConViT", what)


def _qkv_bias(attn: nn.Module) -> bool:
    """Whether timm's GPSA (``qk``) or MHSA (``qkv``) has biases on its projections."""
    layer = attn.qk if hasattr(attn, "qk") else attn.qkv
    return layer.bias is not None


def config_from_timm(model) -> ConViTConfig:
    """Read a ConViTConfig off a timm ``ConVit``; raise on anything we do not implement."""
    from timm.layers import PatchEmbed as TimmPatchEmbed
    from timm.models.convit import GPSA as TimmGPSA
    from timm.models.convit import MHSA

    pe, blocks, eps = model.patch_embed, list(model.blocks), getattr(model.norm, "eps", None)
    if not blocks:
        _refuse("depth=0 (no blocks)")
    local, first = model.local_up_to_layer, blocks[0]
    rates = [float(getattr(b.drop_path, "drop_prob", 0.0)) for b in blocks]
    checks = [
        (f"global_pool={model.global_pool!r}", model.global_pool not in POOLS),
        ("no class token (pruned by prune_intermediate_layers)", model.cls_token is None),
        (f"a patch embedding other than timm's PatchEmbed ({type(pe).__name__})", type(pe) is not TimmPatchEmbed),
        ("a normalized patch embedding", not isinstance(getattr(pe, "norm", None), nn.Identity)),
        ("non-square, padded, dynamic or bias-free patches", pe.patch_size[0] != pe.patch_size[1]
         or pe.img_size is None or pe.img_size[0] != pe.img_size[1] or not pe.flatten
         or pe.dynamic_img_pad or pe.proj.bias is None),
        ("a final norm other than LayerNorm", not is_layernorm(model.norm, eps)),
        (f"local_up_to_layer={local} with {len(blocks)} blocks ([CLS] would never join)", not 0 <= local < len(blocks)),
        ("a drop-path schedule other than linear from 0", any(
            abs(r - t) > 1e-7 for r, t in zip(rates, torch.linspace(0, rates[-1], len(rates)).tolist(), strict=True))),
    ]
    for i, b in enumerate(blocks):
        attn_type = TimmGPSA if i < local else MHSA
        checks += [
            (f"block {i} with {type(b.attn).__name__} where ConViT has {attn_type.__name__}",
             type(b.attn) is not attn_type),
            (f"an MLP other than Linear-GELU-Linear ({type(b.mlp).__name__})", not is_gelu_mlp(b.mlp)),
            ("a norm other than LayerNorm with the final norm's eps",
             not (is_layernorm(b.norm1, eps) and is_layernorm(b.norm2, eps))),
            ("blocks of different widths", (b.attn.num_heads, b.mlp.fc1.out_features)
             != (first.attn.num_heads, first.mlp.fc1.out_features)),
            ("qkv_bias differing between blocks", _qkv_bias(b.attn) != _qkv_bias(first.attn)),
        ]
    for what, bad in checks:
        if bad:
            _refuse(what)
    D = model.embed_dim
    locality = float(first.attn.locality_strength) if local else model.locality_strength
    return ConViTConfig(
        img_size=pe.img_size[0], patch_size=pe.patch_size[0], in_chans=pe.proj.in_channels,
        num_classes=model.num_classes, embed_dim=D, depth=len(blocks), num_heads=first.attn.num_heads,
        mlp_ratio=first.mlp.fc1.out_features / D, local_up_to_layer=local, locality_strength=locality,
        qkv_bias=_qkv_bias(first.attn), use_pos_embed=model.use_pos_embed, global_pool=model.global_pool,
        drop_path_rate=rates[-1], norm_eps=eps,
    )


def convit_from_timm(model) -> ConViT:
    """Our ConViT with the weights of a timm ``ConVit``."""
    ours = ConViT(config_from_timm(model))
    ours.load_state_dict(model.state_dict(), strict=True)
    return ours
