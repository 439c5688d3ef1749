"""XCiT: Cross-Covariance Image Transformers (El-Nouby et al., 2021), from scratch.

Self-attention compares every token with every other: N x N weights, quadratic in the number of
patches. Cross-covariance attention (XCA) transposes the idea: it compares every *channel* with
every other, d x d weights per head computed from the whole image, so the cost is linear in N and
high resolutions are cheap. Each channel's queries and keys are L2-normalized over the tokens and a
learned per-head temperature sharpens the softmax. Because XCA mixes channels, not positions, a
local patch interaction (LPI: two depthwise 3x3 convolutions) lets neighbouring patches talk. The
patches come from a small convolutional stem, positions from a Fourier encoding computed for any
grid size, and the class token joins only at the end, through CaiT's class-attention blocks.

Matches timm's ``Xcit`` (parameter names ``gamma1``/``gamma3``/``gamma2``, ``local_mp``,
``cls_attn_blocks`` ...; the ``tokens_norm`` switch): ``vislearn.from_timm`` converts a timm model
and the tests assert equal outputs. Built in ``notebooks/04_xcit_cross_covariance.ipynb``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_choice
from .layers import ClassAttention, ClassAttentionClassifier, DropPath, Mlp, init_weights, maybe
from .timm_checks import is_batchnorm, is_gelu, is_gelu_mlp, is_layernorm, unsupported

POOLS = ("token", "avg")
PATCH_SIZES = (8, 16)  # the convolutional stem is 3 or 4 stride-2 convolutions


@dataclass
class XCiTConfig:
    img_size: int = 28            # nominal input size (any size works: each stride-2 conv rounds up)
    patch_size: int = 8           # 8 or 16: the stem halves the resolution 3 or 4 times
    in_chans: int = 1             # 1 for Fashion-MNIST, 3 for photos
    num_classes: int = 10         # 0: no head, forward returns pooled features
    embed_dim: int = 64           # width D of every token
    depth: int = 6                # XCA blocks over the patch tokens
    num_heads: int = 4            # heads; each owns embed_dim / num_heads channels
    mlp_ratio: float = 2.0        # MLP hidden width / embed_dim (XCA and class-attention blocks)
    qkv_bias: bool = True         # bias on the query/key/value projections
    cls_attn_layers: int = 2      # class-attention blocks at the end
    tokens_norm: bool = False     # class-attention blocks normalize all tokens (True) or only [CLS]
    use_pos_embed: bool = True    # add the Fourier positional encoding to the patch tokens
    eta: float = 1.0              # LayerScale gammas start here (timm: 1.0, 1e-5 for deep models)
    global_pool: str = "token"    # "token": read [CLS]; "avg": mean of the patch tokens
    drop_path_rate: float = 0.0   # stochastic depth, the same in every XCA block (as timm)
    norm_eps: float = 1e-6        # LayerNorm epsilon

    def __post_init__(self):
        check_choice("global_pool", self.global_pool, POOLS)
        check_choice("patch_size", self.patch_size, PATCH_SIZES)

    def to_dict(self) -> dict:
        return asdict(self)


class ConvPatchEmbed(nn.Module):
    """Patches from a stack of stride-2 3x3 conv + BatchNorm stages with GELUs between them.

    Widths grow D/8 -> D/4 -> D/2 -> D (patch 16) or D/4 -> D/2 -> D (patch 8). The nested
    Sequentials reproduce timm's parameter names (``proj.0.0`` conv, ``proj.0.1`` norm, ``proj.1`` GELU).
    """

    def __init__(self, *, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        check_choice("patch_size", patch_size, PATCH_SIZES)
        self.patch_size = patch_size
        stages = int(math.log2(patch_size))
        widths = [embed_dim // 2 ** i for i in reversed(range(stages))]  # e.g. [D/4, D/2, D]
        layers, c_in = [], in_chans
        for i, c_out in enumerate(widths):
            if i > 0:
                layers.append(nn.GELU())
            layers.append(nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out)))
            c_in = c_out
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Images (B, C, H, W) -> tokens (B, N, D) and the token grid (H/p, W/p), rounded up."""
        x = self.proj(x)                                       # (B, D, H/p, W/p)
        grid = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), grid              # (B, N, D)


class PositionalEncodingFourier(nn.Module):
    """Sines and cosines of each patch's (row, column), projected to D channels by a 1x1 conv.

    Rows and columns are scaled to (0, 2 pi], so the same encoding serves any grid size.
    """

    def __init__(self, dim: int, *, hidden_dim: int = 32, temperature: float = 10000.0):
        super().__init__()
        self.hidden_dim, self.temperature = hidden_dim, temperature  # features per axis, longest period
        self.token_projection = nn.Conv2d(2 * hidden_dim, dim, kernel_size=1)

    def _encode(self, n: int, device: torch.device) -> torch.Tensor:
        """Positions 1..n on one axis -> (n, hidden_dim) features [sin f0, cos f0, sin f1, ...]."""
        pos = torch.arange(1, n + 1, device=device, dtype=torch.float32) / (n + 1e-6) * 2 * math.pi
        freqs = self.temperature ** (torch.arange(0, self.hidden_dim, 2, device=device) / self.hidden_dim)
        angles = pos[:, None] / freqs                                     # (n, hidden/2)
        return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (n, hidden)

    def forward(self, H: int, W: int) -> torch.Tensor:
        """Grid H x W -> positional encodings (1, H * W, D), row-major like the patch tokens."""
        w = self.token_projection.weight
        rows = self._encode(H, w.device)[:, None].expand(H, W, self.hidden_dim)  # (H, W, hidden)
        cols = self._encode(W, w.device)[None, :].expand(H, W, self.hidden_dim)  # (H, W, hidden)
        pos = torch.cat([rows, cols], dim=-1).permute(2, 0, 1)[None]            # (1, 2 hidden, H, W)
        pos = self.token_projection(pos.to(w.dtype))                            # (1, D, H, W)
        return pos.flatten(2).transpose(1, 2)                                   # (1, N, D)


class XCA(nn.Module):
    """Cross-covariance attention: a softmax over channels, d x d per head, linear in N."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))  # learned, per head
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """
        Args:
            x: patch tokens (B, N, D).
            return_attention: also return the channel-to-channel weights (B, heads, d, d).
        """
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)  # (B, N, 3, h, d)
        q, k, v = qkv.permute(2, 0, 3, 4, 1).unbind(0)                      # 3 x (B, h, d, N)
        # unit length along the tokens: q @ k^T is then a cosine similarity between channels
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        # always the explicit softmax: the d x d map is small, so a fused kernel saves little here
        # (timm too uses this path unless its experimental fused attention is switched on)
        attn = (q @ k.transpose(-2, -1)) * self.temperature                 # (B, h, d, d)
        attn = attn.softmax(dim=-1)
        out = attn @ v                                                      # (B, h, d, N)
        out = self.proj(out.permute(0, 3, 1, 2).reshape(B, N, D))          # (B, N, D)
        return (out, attn) if return_attention else out


class LPI(nn.Module):
    """Local patch interaction: depthwise 3x3 conv, GELU, BatchNorm, depthwise 3x3 conv."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(dim, dim, kernel_size, padding=pad, groups=dim)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size, padding=pad, groups=dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, D = x.shape
        x = x.transpose(1, 2).reshape(B, D, H, W)                 # (B, D, H, W)
        x = self.conv2(self.bn(self.act(self.conv1(x))))          # (B, D, H, W)
        return x.reshape(B, D, N).transpose(1, 2)                 # (B, N, D)


class XCABlock(nn.Module):
    """x + gamma1 * XCA, then x + gamma3 * LPI, then x + gamma2 * MLP, each on a LayerNorm of x.

    The numbering (gamma3 before gamma2) is timm's and the official code's, kept for the weights.
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float, qkv_bias: bool, eta: float,
                 drop_path: float = 0.0, norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = XCA(dim, num_heads, qkv_bias=qkv_bias)
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.local_mp = LPI(dim)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma1 = nn.Parameter(eta * torch.ones(dim))  # LayerScale of XCA
        self.gamma3 = nn.Parameter(eta * torch.ones(dim))  # LayerScale of LPI
        self.gamma2 = nn.Parameter(eta * torch.ones(dim))  # LayerScale of the MLP
        self.drop_path = maybe(DropPath(drop_path), drop_path > 0)

    def forward(self, x: torch.Tensor, H: int, W: int, return_attention: bool = False):
        if return_attention:
            y, attn = self.attn(self.norm1(x), return_attention=True)
        else:
            y, attn = self.attn(self.norm1(x)), None
        x = x + self.drop_path(self.gamma1 * y)
        x = x + self.drop_path(self.gamma3 * self.local_mp(self.norm3(x), H, W))
        x = x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))
        return (x, attn) if return_attention else x


class ClassAttentionBlock(nn.Module):
    """CaiT's class attention on [CLS, patches], with the official XCiT code's details kept.

    Unlike CaiT's block, it carries the patch tokens along and, as in the official code and timm:
    the patches receive gamma1 * norm1(patches) in the attention step and are doubled by the MLP
    step's residual (their "update" is themselves); the class token's MLP residual starts from its
    normalized value. ``tokens_norm`` (False in timm's nano models, True in all the others) says
    whether norm2 normalizes every token before that residual or only [CLS]. The class token leaving
    this block is the same either way; the patches differ, which changes what the next
    class-attention block sees and what "avg" pooling reads.
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float, qkv_bias: bool, eta: float,
                 tokens_norm: bool, norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = ClassAttention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma1 = nn.Parameter(eta * torch.ones(dim))
        self.gamma2 = nn.Parameter(eta * torch.ones(dim))
        self.tokens_norm = tokens_norm

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """
        Args:
            x: tokens (B, 1 + N, D), [CLS] first.
            return_attention: also return the class token's attention (B, heads, 1, 1 + N).
        """
        u = self.norm1(x)                                                # (B, 1 + N, D)
        if return_attention:
            cls, attn = self.attn(u, return_attention=True)              # (B, 1, D)
        else:
            cls, attn = self.attn(u), None
        x = x + self.gamma1 * torch.cat([cls, u[:, 1:]], dim=1)          # (B, 1 + N, D)
        if self.tokens_norm:
            x = self.norm2(x)
        else:
            x = torch.cat([self.norm2(x[:, :1]), x[:, 1:]], dim=1)       # (B, 1 + N, D)
        x = x + torch.cat([self.gamma2 * self.mlp(x[:, :1]), x[:, 1:]], dim=1)  # (B, 1 + N, D)
        return (x, attn) if return_attention else x


class XCiT(ClassAttentionClassifier):
    """Image -> conv stem (+ Fourier positions) -> XCA blocks -> [CLS] via class attention -> head."""

    def __init__(self, cfg: XCiTConfig | None = None, **overrides):
        super().__init__()
        cfg = cfg or XCiTConfig(**overrides)
        self.cfg = cfg
        D = cfg.embed_dim
        self.patch_embed = ConvPatchEmbed(patch_size=cfg.patch_size, in_chans=cfg.in_chans, embed_dim=D)
        self.num_prefix_tokens = 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = PositionalEncodingFourier(D) if cfg.use_pos_embed else None
        self.blocks = nn.ModuleList([
            XCABlock(D, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, eta=cfg.eta,
                     drop_path=cfg.drop_path_rate, norm_eps=cfg.norm_eps)
            for _ in range(cfg.depth)])
        self.cls_attn_blocks = nn.ModuleList([
            ClassAttentionBlock(D, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, eta=cfg.eta,
                                tokens_norm=cfg.tokens_norm, norm_eps=cfg.norm_eps)
            for _ in range(cfg.cls_attn_layers)])
        self.norm = nn.LayerNorm(D, eps=cfg.norm_eps)
        self.head = nn.Linear(D, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.apply(init_weights)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward_features(self, x: torch.Tensor, return_attention: bool = False):
        """Images (B, C, H, W) -> normalized tokens (B, 1 + N, D) [, attention weights].

        The attention weights are a list in block order: ``depth`` XCA maps (B, heads, d, d) over
        channels, then ``cls_attn_layers`` class-attention maps (B, heads, 1, 1 + N) over tokens.
        """
        x, (H, W) = self.patch_embed(x)                 # (B, N, D), N = H * W
        if self.pos_embed is not None:
            x = x + self.pos_embed(H, W)                # (B, N, D)
        attentions = []
        for block in self.blocks:
            if return_attention:
                x, attn = block(x, H, W, return_attention=True)
                attentions.append(attn)
            else:
                x = block(x, H, W)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, D)
        for block in self.cls_attn_blocks:
            if return_attention:
                x, attn = block(x, return_attention=True)
                attentions.append(attn)
            else:
                x = block(x)
        x = self.norm(x)
        return (x, attentions) if return_attention else x


# --- timm -> vislearn ------------------------------------------------------------------------------

def _refuse(what: str) -> None:
    unsupported("Xcit", "XCiT", what)


def _is_our_lpi(m: nn.Module, dim: int) -> bool:
    from timm.models.xcit import LPI as TimmLPI

    return (type(m) is TimmLPI and m.conv1.kernel_size == m.conv2.kernel_size == (3, 3)
            and m.conv1.groups == m.conv2.groups == dim and is_gelu(m.act) and is_batchnorm(m.bn))


def config_from_timm(model) -> XCiTConfig:
    """Read an XCiTConfig off a timm ``Xcit``; raise on anything we do not implement."""
    from timm.models.cait import ClassAttn
    from timm.models.xcit import XCA as TimmXCA
    from timm.models.xcit import ClassAttentionBlock as TimmCABlock
    from timm.models.xcit import ConvPatchEmbed as TimmConvPatchEmbed
    from timm.models.xcit import PositionalEncodingFourier as TimmFourier
    from timm.models.xcit import XCABlock as TimmXCABlock

    pe, D, pos = model.patch_embed, model.embed_dim, model.pos_embed
    if model.cls_attn_blocks is None or model.cls_token is None:
        _refuse("no class token or class-attention blocks (pruned by prune_intermediate_layers)")
    blocks, cls_blocks = list(model.blocks), list(model.cls_attn_blocks)
    if not blocks:
        _refuse("depth=0 (no XCA blocks)")
    first, eps = blocks[0], getattr(model.norm, "eps", None)
    drop_path = float(getattr(first.drop_path1, "drop_prob", 0.0))
    stem = list(pe.proj) if isinstance(pe.proj, nn.Sequential) else []
    checks = [  # (what we would not reproduce, whether this model has it)
        (f"global_pool={model.global_pool!r}", model.global_pool not in POOLS),
        (f"a patch embedding other than timm's ConvPatchEmbed ({type(pe).__name__})",
         type(pe) is not TimmConvPatchEmbed),
        (f"patch_size={pe.patch_size} (vislearn's stem: {PATCH_SIZES})", pe.patch_size not in PATCH_SIZES),
        (f"a non-square img_size={pe.img_size}", pe.img_size[0] != pe.img_size[1]),
        ("a stem activation other than GELU", not all(is_gelu(m) for m in stem[1::2])),
        ("a stem BatchNorm other than BatchNorm2d(eps=1e-5) with running statistics",
         not all(is_batchnorm(m[1]) for m in stem[0::2])),
        ("a positional encoding other than PositionalEncodingFourier(hidden_dim=32, temperature=10000)",
         pos is not None and (type(pos) is not TimmFourier or pos.hidden_dim != 32 or pos.temperature != 10000
                              or pos.eps != 1e-6 or pos.scale != 2 * math.pi)),
        ("a final norm other than LayerNorm", not is_layernorm(model.norm, eps)),
    ]
    for b in blocks:
        checks += [
            (f"a custom block type {type(b).__name__}", type(b) is not TimmXCABlock),
            (f"a custom attention {type(b.attn).__name__}", type(b.attn) is not TimmXCA),
            (f"an MLP other than Linear-GELU-Linear ({type(b.mlp).__name__})", not is_gelu_mlp(b.mlp)),
            ("a norm other than LayerNorm with the final norm's eps",
             not all(is_layernorm(n, eps) for n in (b.norm1, b.norm2, b.norm3))),
            ("a local patch interaction other than depthwise conv3x3-GELU-BatchNorm-conv3x3",
             not _is_our_lpi(b.local_mp, D)),
            ("XCA blocks of different widths", (b.attn.num_heads, b.mlp.fc1.out_features)
             != (first.attn.num_heads, first.mlp.fc1.out_features)),
            ("different drop_path rates per block",
             any(float(getattr(dp, "drop_prob", 0.0)) != drop_path
                 for dp in (b.drop_path1, b.drop_path2, b.drop_path3))),
            ("qkv_bias differing between blocks", (b.attn.qkv.bias is None) != (first.attn.qkv.bias is None)),
        ]
    for b in cls_blocks:
        checks += [
            (f"a custom class-attention block {type(b).__name__}", type(b) is not TimmCABlock),
            (f"a custom class attention {type(b.attn).__name__}", type(b.attn) is not ClassAttn),
            (f"an MLP other than Linear-GELU-Linear ({type(b.mlp).__name__})", not is_gelu_mlp(b.mlp)),
            ("a norm other than LayerNorm with the final norm's eps",
             not (is_layernorm(b.norm1, eps) and is_layernorm(b.norm2, eps))),
            ("class-attention blocks without LayerScale (eta=None)", not isinstance(b.gamma1, nn.Parameter)),
            ("stochastic depth in the class-attention blocks",
             not (isinstance(b.drop_path1, nn.Identity) and isinstance(b.drop_path2, nn.Identity))),
            ("class-attention blocks with their own width, head count, qkv_bias or tokens_norm",
             (b.attn.num_heads, b.mlp.fc1.out_features, b.attn.q.bias is None, b.tokens_norm)
             != (first.attn.num_heads, first.mlp.fc1.out_features, first.attn.qkv.bias is None,
                 cls_blocks[0].tokens_norm)),
        ]
    for what, bad in checks:
        if bad:
            _refuse(what)
    return XCiTConfig(
        img_size=pe.img_size[0], patch_size=pe.patch_size, in_chans=stem[0][0].in_channels,
        num_classes=model.num_classes, embed_dim=D, depth=len(blocks), num_heads=first.attn.num_heads,
        mlp_ratio=first.mlp.fc1.out_features / D, qkv_bias=first.attn.qkv.bias is not None,
        cls_attn_layers=len(cls_blocks), tokens_norm=cls_blocks[0].tokens_norm if cls_blocks else False,
        use_pos_embed=pos is not None, eta=float(first.gamma1.detach().flatten()[0]),
        global_pool=model.global_pool, drop_path_rate=drop_path, norm_eps=eps,
    )


def xcit_from_timm(model) -> XCiT:
    """Our XCiT with the weights of a timm ``Xcit``."""
    ours = XCiT(config_from_timm(model))
    ours.load_state_dict(model.state_dict(), strict=True)
    return ours

