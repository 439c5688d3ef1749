"""LeViT: a Vision Transformer in ConvNet's clothing for faster inference (Graham et al., 2021), from scratch.

LeViT trades the ViT's uniform stack for a pyramid built for speed. A stem of stride-2 3x3
convolutions (each followed by BatchNorm, Hardswish between them) turns the image into a small grid
of tokens; three stages of attention + MLP blocks follow, and between stages an *attention
subsample* block halves the grid: its queries come from every second token, its keys and values
from all of them. Every linear layer is followed by a BatchNorm instead of preceded by a LayerNorm
(``LinearNorm``: at inference it folds into the linear layer, so it costs nothing). Positions are
not embedded at all: every head adds a learned bias to its attention logits that depends only on
the offset between query and key, ``attention_biases[h, |d_row| * R + |d_col|]`` on an R x R grid.
Values are wider than keys (``attn_ratio``), and the head is two classifiers, one trained on the
labels and one by distillation from a teacher, averaged at inference.

Matches timm's ``Levit`` / ``LevitDistilled`` in its linear mode (parameter names ``stem.conv1.linear``,
``stages.i.downsample.attn_downsample``, ``attention_biases``, ``head_dist`` ...): ``vislearn.from_timm``
converts a timm model and the tests assert equal outputs.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..config import ParameterError, check_choice, check_int
from .layers import DropPath, TokenClassifier, maybe
from .timm_checks import unsupported

ACTIVATIONS = {"hardswish": nn.Hardswish, "silu": nn.SiLU}  # timm: hard_swish (LeViT-128S ... 384), silu
STEM_STRIDES = (4, 8, 16)   # 2, 3 or 4 stride-2 convolutions; timm has 16 ("s16") and 8 ("s8")
# timm hard-codes the attention-subsample block between stages: heads = in_dim // key_dim, values
# 4 x wider than keys, an MLP of ratio 2 after it
DOWN_ATTN_RATIO, DOWN_MLP_RATIO = 4.0, 2.0


@dataclass
class LeViTConfig:
    img_size: int = 28            # input images are img_size x img_size
    in_chans: int = 1             # 1 for Fashion-MNIST, 3 for photos
    num_classes: int = 10         # 0: no head, forward returns pooled features
    stem_stride: int = 4          # 4, 8 or 16: the conv stem halves the image 2, 3 or 4 times
    embed_dim: tuple[int, ...] = (64, 96, 128)  # token width of each stage
    depth: tuple[int, ...] = (2, 2, 2)          # attention + MLP blocks per stage
    num_heads: tuple[int, ...] = (4, 6, 8)      # heads per stage (the subsample blocks: in_dim // key_dim)
    key_dim: int = 16             # width of each head's queries and keys
    attn_ratio: float = 2.0       # width of each head's values / key_dim, in the stage blocks
    mlp_ratio: float = 2.0        # MLP hidden width / token width, in the stage blocks
    act: str = "hardswish"        # activation of the stem, the MLPs and before each attention output
    distilled: bool = True        # two heads (labels, teacher), averaged at inference
    drop_path_rate: float = 0.0   # stochastic depth, the same in every block (as timm)

    def __post_init__(self):
        self.embed_dim, self.depth, self.num_heads = (tuple(v) for v in (self.embed_dim, self.depth, self.num_heads))
        check_choice("act", self.act, ACTIVATIONS)
        check_choice("stem_stride", self.stem_stride, STEM_STRIDES)
        if not len(self.embed_dim) == len(self.depth) == len(self.num_heads) >= 1:
            raise ParameterError(f"embed_dim={self.embed_dim}, depth={self.depth} and num_heads={self.num_heads} "
                                 "must have one entry per stage, the same number each")
        for name, values, low in [("embed_dim", self.embed_dim, 1), ("depth", self.depth, 0),
                                  ("num_heads", self.num_heads, 1), ("key_dim", [self.key_dim], 1)]:
            for v in values:
                check_int(name, v, minimum=low)

    def to_dict(self) -> dict:
        return asdict(self)


class ConvNorm(nn.Sequential):
    """Conv2d without bias, then BatchNorm2d (timm's ``ConvNorm``: ``linear``, ``bn``)."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__(OrderedDict(
            linear=nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=2, padding=1, bias=False),
            bn=nn.BatchNorm2d(out_chs)))


class LinearNorm(nn.Module):
    """Linear without bias, then BatchNorm over the channels of every token of the batch.

    BatchNorm here replaces the transformer's LayerNorm: at inference its statistics are constants,
    so ``linear + bn`` is one affine map and costs nothing. ``bn_weight_init=0`` makes a residual
    branch start at zero (its block starts as the identity).
    """

    def __init__(self, in_features: int, out_features: int, bn_weight_init: float = 1.0):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features)
        nn.init.constant_(self.bn.weight, bn_weight_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)                               # (B, N, out)
        return self.bn(x.flatten(0, 1)).reshape_as(x)    # BatchNorm1d wants (B * N, out)


def norm_linear(in_features: int, out_features: int) -> nn.Sequential:
    """The classifier: BatchNorm of the pooled features, then a Linear (timm's ``NormLinear``)."""
    head = nn.Sequential(OrderedDict(bn=nn.BatchNorm1d(in_features), linear=nn.Linear(in_features, out_features)))
    nn.init.trunc_normal_(head.linear.weight, std=0.02)
    nn.init.zeros_(head.linear.bias)
    return head


def _cells(grid: int, step: int = 1) -> torch.Tensor:
    """(row, col) of every ``step``-th cell of a grid x grid map, row-major: (2, cells)."""
    rows, cols = torch.meshgrid(torch.arange(0, grid, step), torch.arange(0, grid, step), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()])


def relative_bias_index(grid: int, stride: int = 1) -> torch.Tensor:
    """Which learned bias each (query, key) pair reads: |d_row| * grid + |d_col|.

    Keys are every cell of a grid x grid map, queries every ``stride``-th cell (in the same
    coordinates), so a subsample block (stride 2) reads the same kind of table. Returns (N_q, N_k), long.
    """
    offset = (_cells(grid, stride)[:, :, None] - _cells(grid)[:, None, :]).abs()  # (2, N_q, N_k)
    return offset[0] * grid + offset[1]                                           # (N_q, N_k)


class Subsample(nn.Module):
    """Keep every ``stride``-th token of the R x R grid in both directions: (B, R * R, C) -> (B, R' * R', C)."""

    def __init__(self, stride: int, grid: int):
        super().__init__()
        self.stride, self.grid = stride, grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.grid, self.grid, -1)[:, ::self.stride, ::self.stride]  # (B, R', R', C)
        return x.flatten(1, 2)                                                               # (B, R' * R', C)


class Attention(nn.Module):
    """LeViT's attention: logits + a learned bias per head and per offset, values wider than keys.

    ``attention_biases`` (heads, R * R) holds one number per head and per offset (|d_row|, |d_col|)
    on the R x R key grid; ``attention_bias_idxs`` (non-persistent, as in timm) says which offset each
    (query, key) pair has. With ``stride=1`` (the blocks) one ``LinearNorm`` makes each head's query,
    key and value side by side (timm's layout: per head [q (kd), k (kd), v (attn_ratio * kd)]). With
    ``stride=2`` (timm's ``AttentionDownsample``, between stages) the queries come from every second
    token only, so the output is on the smaller grid, with a new width ``out_dim``.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, *, attn_ratio: float, grid: int,
                 act_layer: type[nn.Module], stride: int = 1, out_dim: int | None = None):
        super().__init__()
        self.num_heads, self.key_dim, self.grid, self.stride = num_heads, key_dim, grid, stride
        self.val_dim = int(attn_ratio * key_dim)
        self.scale = key_dim ** -0.5
        if stride == 1:
            self.qkv = LinearNorm(dim, num_heads * (2 * key_dim + self.val_dim))
        else:
            self.kv = LinearNorm(dim, num_heads * (key_dim + self.val_dim))
            self.q = nn.Sequential(OrderedDict(down=Subsample(stride, grid), ln=LinearNorm(dim, num_heads * key_dim)))
        self.proj = nn.Sequential(OrderedDict(act=act_layer(), ln=LinearNorm(
            num_heads * self.val_dim, out_dim or dim, bn_weight_init=0.0 if stride == 1 else 1.0)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, grid * grid))
        self.register_buffer("attention_bias_idxs", relative_bias_index(grid, stride), persistent=False)

    def bias_offset_map(self) -> torch.Tensor:
        """The biases as a map: (heads, R, R), entry [h, |d_row|, |d_col|]."""
        return self.attention_biases.detach().reshape(-1, self.grid, self.grid)

    def forward(self, x: torch.Tensor):
        """Tokens (B, N, dim) on the R x R grid (row-major) -> (tokens (B, N', out_dim), weights (B, h, N', N)),
        N' = N, or ceil(R / 2) ** 2 with stride 2. The weights are explicit anyway (the bias enters before
        the softmax), so they are always returned."""
        B, N, _ = x.shape
        h, kd, vd = self.num_heads, self.key_dim, self.val_dim
        if self.stride == 1:
            q, k, v = self.qkv(x).reshape(B, N, h, -1).split([kd, kd, vd], dim=3)  # (B, N, h, .) each
        else:
            k, v = self.kv(x).reshape(B, N, h, -1).split([kd, vd], dim=3)          # (B, N, h, .) each
            q = self.q(x).reshape(B, -1, h, kd)                                    # (B, N', h, kd)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)          # (B, h, tokens, .)
        logits = (q @ k.transpose(-2, -1)) * self.scale                            # (B, h, N', N)
        logits = logits + self.attention_biases[:, self.attention_bias_idxs]       # + (h, N', N)
        attn = logits.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B, q.shape[2], h * vd)            # (B, N', h * vd)
        return self.proj(out), attn


class LevitMlp(nn.Module):
    """LinearNorm, activation, LinearNorm (the last BatchNorm starts at zero)."""

    def __init__(self, dim: int, hidden_dim: int, act_layer: type[nn.Module]):
        super().__init__()
        self.ln1 = LinearNorm(dim, hidden_dim)
        self.act = act_layer()
        self.ln2 = LinearNorm(hidden_dim, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln2(self.act(self.ln1(x)))


class LevitBlock(nn.Module):
    """x + attn(x), then x + mlp(x): no norm before the branches, the BatchNorms are inside them.
    Returns (tokens, attention weights)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, *, attn_ratio: float, mlp_ratio: float, grid: int,
                 act_layer: type[nn.Module], drop_path: float = 0.0):
        super().__init__()
        self.attn = Attention(dim, key_dim, num_heads, attn_ratio=attn_ratio, grid=grid, act_layer=act_layer)
        self.drop_path1 = maybe(DropPath(drop_path), drop_path > 0)
        self.mlp = LevitMlp(dim, int(dim * mlp_ratio), act_layer)
        self.drop_path2 = maybe(DropPath(drop_path), drop_path > 0)

    def forward(self, x: torch.Tensor):
        y, attn = self.attn(x)
        x = x + self.drop_path1(y)
        return x + self.drop_path2(self.mlp(x)), attn


class LevitDownsample(nn.Module):
    """Between stages: attention subsample (no residual), then x + mlp(x). Returns (tokens, weights)."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, *, grid: int, act_layer: type[nn.Module],
                 drop_path: float = 0.0):
        super().__init__()
        self.attn_downsample = Attention(in_dim, key_dim, in_dim // key_dim, attn_ratio=DOWN_ATTN_RATIO, grid=grid,
                                         act_layer=act_layer, stride=2, out_dim=out_dim)
        self.mlp = LevitMlp(out_dim, int(out_dim * DOWN_MLP_RATIO), act_layer)
        self.drop_path = maybe(DropPath(drop_path), drop_path > 0)

    def forward(self, x: torch.Tensor):
        x, attn = self.attn_downsample(x)
        return x + self.drop_path(self.mlp(x)), attn


class LevitStage(nn.Module):
    """An optional subsample block (every stage but the first), then ``depth`` blocks."""

    def __init__(self, in_dim: int, out_dim: int, cfg: LeViTConfig, i: int, grid: int, act_layer: type[nn.Module]):
        super().__init__()
        dp = cfg.drop_path_rate
        if i > 0:
            self.downsample = LevitDownsample(in_dim, out_dim, cfg.key_dim, grid=grid, act_layer=act_layer,
                                              drop_path=dp)
            grid = (grid - 1) // 2 + 1  # ceil(R / 2) queries per side
        else:
            self.downsample = nn.Identity()
        self.grid = grid  # side of this stage's token grid
        self.blocks = nn.Sequential(*[
            LevitBlock(out_dim, cfg.key_dim, cfg.num_heads[i], attn_ratio=cfg.attn_ratio, mlp_ratio=cfg.mlp_ratio,
                       grid=grid, act_layer=act_layer, drop_path=dp)
            for _ in range(cfg.depth[i])])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Tokens -> (tokens, the attention weights of its subsample block (if any) and blocks, in order)."""
        layers = ([] if isinstance(self.downsample, nn.Identity) else [self.downsample]) + list(self.blocks)
        attentions = []
        for layer in layers:
            x, attn = layer(x)
            attentions.append(attn)
        return x, attentions


class LeViT(TokenClassifier):
    """Image -> conv stem -> 3 stages of attention/MLP (a subsample block between them) -> mean -> heads.

    ``forward`` returns the average of the two heads' logits (as timm in eval and in ordinary training);
    after ``set_distilled_training(True)`` and in training mode, the pair (label head, distillation head).
    """

    def __init__(self, cfg: LeViTConfig | None = None, **overrides):
        super().__init__()
        cfg = cfg or LeViTConfig(**overrides)
        self.cfg = cfg
        act = ACTIVATIONS[cfg.act]
        D0, convs = cfg.embed_dim[0], int(math.log2(cfg.stem_stride))
        widths = [cfg.in_chans] + [D0 // 2 ** (convs - 1 - j) for j in range(convs)]  # s16: D/8, D/4, D/2, D
        stem, grid = OrderedDict(), cfg.img_size
        for j in range(convs):
            stem[f"conv{j + 1}"] = ConvNorm(widths[j], widths[j + 1])
            if j < convs - 1:
                stem[f"act{j + 1}"] = act()
            grid = (grid - 1) // 2 + 1  # a 3x3, stride-2, padding-1 conv rounds up
        self.stem = nn.Sequential(stem)
        self.stages = nn.Sequential()
        for i, D in enumerate(cfg.embed_dim):
            self.stages.append(LevitStage(cfg.embed_dim[max(i - 1, 0)], D, cfg, i, grid, act))
            grid = self.stages[-1].grid
        C = cfg.embed_dim[-1]
        self.head = norm_linear(C, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        if cfg.distilled:
            self.head_dist = norm_linear(C, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.distilled_training = False  # True: forward returns both heads while training (timm's name)

    def set_distilled_training(self, enable: bool = True) -> None:
        """Return (label logits, distillation logits) from ``forward`` in training mode; eval still averages."""
        self.distilled_training = enable

    def forward_features(self, x: torch.Tensor, return_attention: bool = False):
        """Images (B, C, H, W) -> tokens of the last stage (B, N, D) [, attention weights].

        The weights are a list in order: per stage its subsample block's (B, heads, N', N) if any,
        then each block's (B, heads, N, N).
        """
        x = self.stem(x)                       # (B, D0, R, R)
        x = x.flatten(2).transpose(1, 2)       # (B, R * R, D0)
        attentions = []
        for stage in self.stages:
            x, attn = stage(x)
            attentions += attn
        return (x, attentions) if return_attention else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        """Tokens (B, N, D) -> logits (B, classes) (see the class docstring), or features (B, D) if pre_logits."""
        x = x.mean(dim=1)                      # (B, D)
        if pre_logits:
            return x
        if not self.cfg.distilled:
            return self.head(x)
        x, x_dist = self.head(x), self.head_dist(x)
        if self.distilled_training and self.training:
            return x, x_dist
        return (x + x_dist) / 2

    def attention_bias_maps(self) -> list[torch.Tensor]:
        """Every attention layer's learned position biases, in forward order: (heads, R, R) each,
        entry [h, |d_row|, |d_col|] on that layer's key grid (R x R)."""
        return [m.bias_offset_map() for m in self.modules() if isinstance(m, Attention)]

    def no_weight_decay(self) -> set[str]:
        """timm's rule for LeViT: no weight decay on the attention biases."""
        return {n for n, _ in self.named_parameters() if "attention_biases" in n}


# --- timm -> vislearn ------------------------------------------------------------------------------

def _refuse(what: str) -> None:
    unsupported("Levit", "LeViT", what)


def _drop_prob(m: nn.Module) -> float:  # timm's DropPath, or an Identity (no stochastic depth)
    return float(getattr(m, "drop_prob", 0.0))


def config_from_timm(model) -> LeViTConfig:
    """Read a LeViTConfig off a timm ``Levit`` or ``LevitDistilled``; raise on anything we do not implement."""
    from timm.models import levit as tl

    strides, acts = {tl.Stem16: 16, tl.Stem8: 8}, {cls: name for name, cls in ACTIVATIONS.items()}
    stages, act_type = list(model.stages), type(getattr(model.stem, "act1", None))
    blocks, downs = [b for s in stages for b in s.blocks], [s.downsample for s in stages[1:]]
    for what, bad in [
        ("its convolutional mode (use_conv=True)", model.use_conv),
        (f"a stem other than Stem16/Stem8 ({type(model.stem).__name__})", type(model.stem) not in strides),
        (f"the activation {act_type.__name__}", act_type not in acts),
        (f"global_pool={model.global_pool!r}", model.global_pool != "avg"),
        ("an empty first stage", not stages[0].blocks),
        ("a downsample in the first stage", not isinstance(stages[0].downsample, nn.Identity)),
        ("a downsample other than attention subsampling", any(type(d) is not tl.LevitDownsample for d in downs)),
    ]:
        if bad:
            _refuse(what)
    subs = [d.attn_downsample for d in downs]
    grid = stages[0].blocks[0].attn.resolution
    uniform = lambda values: len(set(values)) <= 1  # noqa: E731
    for what, bad in [
        ("a non-square token grid", grid[0] != grid[1]),
        ("pooled or non-2 stride downsampling (down_op / use_pool)", any(a.stride != 2 or a.q.down.pool is not None
                                                                          for a in subs)),
        ("a subsample block other than timm's default (heads = in_dim // key_dim, ratios 4 and 2)", any(
            a.num_heads != a.kv.linear.in_features // a.key_dim or a.val_dim != int(DOWN_ATTN_RATIO * a.key_dim)
            or d.mlp.ln1.linear.out_features != int(d.mlp.ln1.linear.in_features * DOWN_MLP_RATIO)
            for a, d in zip(subs, downs, strict=True))),
        ("an attention activation other than the MLP's", any(type(a.proj.act) is not act_type
                                                             for a in [b.attn for b in blocks] + subs)),
        ("different attn_ratio per stage", not uniform(b.attn.val_dim / b.attn.key_dim for b in blocks)),
        ("different mlp_ratio per stage", not uniform(b.mlp.ln1.linear.out_features / b.mlp.ln1.linear.in_features
                                                      for b in blocks)),
        ("different drop_path rates per block", not uniform([_drop_prob(m) for b in blocks for m in (
            b.drop_path1, b.drop_path2)] + [_drop_prob(d.drop_path) for d in downs])),
    ]:
        if bad:
            _refuse(what)
    first, stride = blocks[0], strides[type(model.stem)]
    return LeViTConfig(
        img_size=grid[0] * stride, in_chans=model.in_chans,
        num_classes=model.head.linear.out_features if isinstance(model.head, tl.NormLinear) else 0,
        stem_stride=stride, embed_dim=tuple(model.embed_dim), depth=tuple(len(s.blocks) for s in stages),
        num_heads=tuple(s.blocks[0].attn.num_heads if s.blocks else 1 for s in stages), key_dim=first.attn.key_dim,
        attn_ratio=first.attn.val_dim / first.attn.key_dim,
        mlp_ratio=first.mlp.ln1.linear.out_features / first.mlp.ln1.linear.in_features,
        act=acts[act_type], distilled=isinstance(model, tl.LevitDistilled), drop_path_rate=_drop_prob(first.drop_path1),
    )


def levit_from_timm(model) -> LeViT:
    """Our LeViT with the weights (and distilled_training flag) of a timm ``Levit``/``LevitDistilled``."""
    ours = LeViT(config_from_timm(model))
    ours.load_state_dict(model.state_dict(), strict=True)
    ours.set_distilled_training(getattr(model, "distilled_training", False))
    return ours
