"""Transformer building blocks shared by every model in the course.

Parameter names follow timm (``qkv``, ``proj``, ``norm1``, ``mlp.fc1``, ``ls1.gamma`` ...), so a
timm state dict loads into our modules unchanged; that is how ``vislearn.from_timm`` proves
equality. Attention can return its weights: with ``return_attention=True`` it takes the explicit
softmax path, otherwise the fused kernel (``F.scaled_dot_product_attention``) for speed. Unlike
hooks on timm's attention, this works whatever ``TIMM_FUSED_ATTN`` says. Also here, used by every
model and every loop: ``resize_pos_embed`` (learned positions on another patch grid) and
``eval_mode`` (a block that runs a model in eval mode, then restores its mode). Built in notebook 01.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Cut an image into non-overlapping patches and project each one to ``embed_dim``.

    A convolution with kernel = stride = patch size is exactly "flatten each patch, multiply by a
    matrix": notebook 01 checks this equality.
    """

    def __init__(self, *, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size={img_size} is not divisible by patch_size={patch_size}")
        self.img_size, self.patch_size = img_size, patch_size
        self.grid_size = img_size // patch_size          # patches per side
        self.num_patches = self.grid_size ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"input of {H}x{W} px is not a whole number of {self.patch_size} px patches "
                             f"(this model was built for {self.img_size} px; use a multiple of {self.patch_size})")
        x = self.proj(x)                     # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class Mlp(nn.Module):
    """Two linear layers with a GELU between them, applied to every token independently."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention (Vaswani et al., 2017) that can return its attention weights."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, attn_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """
        Args:
            x: tokens (B, N, D).
            return_attention: also return the attention weights (B, heads, N, N).
        """
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)  # (B, N, 3, h, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                      # 3 x (B, h, N, d)
        drop = self.attn_drop if self.training else 0.0
        if return_attention:
            attn = (q * self.scale) @ k.transpose(-2, -1)                   # (B, h, N, N)
            attn = attn.softmax(dim=-1)
            out = F.dropout(attn, drop, self.training) @ v                  # (B, h, N, d)
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)   # (B, h, N, d)
        out = self.proj(out.transpose(1, 2).reshape(B, N, D))              # (B, N, D)
        return (out, attn) if return_attention else out


class LayerScale(nn.Module):
    """Per-channel learnable scaling of a residual branch (Touvron et al., CaiT, 2021)."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


def maybe(module: nn.Module, enabled: bool) -> nn.Module:
    """``module`` if enabled, else an Identity (keeps timm's module names and state-dict keys)."""
    return module if enabled else nn.Identity()


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 init_values: float | None = None, drop_path: float = 0.0, norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.ls1 = maybe(LayerScale(dim, init_values or 0.0), init_values is not None)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = maybe(LayerScale(dim, init_values or 0.0), init_values is not None)
        self.drop_path = maybe(DropPath(drop_path), drop_path > 0)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if return_attention:
            y, attn = self.attn(self.norm1(x), return_attention=True)
        else:
            y, attn = self.attn(self.norm1(x)), None
        x = x + self.drop_path(self.ls1(y))
        x = x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
        return (x, attn) if return_attention else x


class ClassAttention(nn.Module):
    """Class attention (Touvron et al., CaiT, 2021): only the class token asks, every token answers.

    The query comes from token 0 alone, keys and values from all tokens, so the cost is linear in
    the number of tokens and the patch tokens are left untouched. CaiT and XCiT both end with it.
    Parameter names follow timm's ``ClassAttn`` (``q``, ``k``, ``v``, ``proj``). Built in notebook 03.
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, attn_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """
        Args:
            x: tokens (B, 1 + N, D), the class token first.
            return_attention: also return the class token's attention weights (B, heads, 1, 1 + N).

        Returns:
            the class token's update (B, 1, D) [, attention weights].
        """
        B, N, D = x.shape
        h, d = self.num_heads, self.head_dim
        q = self.q(x[:, :1]).reshape(B, 1, h, d).transpose(1, 2)  # (B, h, 1, d)
        k = self.k(x).reshape(B, N, h, d).transpose(1, 2)         # (B, h, N, d)
        v = self.v(x).reshape(B, N, h, d).transpose(1, 2)         # (B, h, N, d)
        drop = self.attn_drop if self.training else 0.0
        if return_attention:
            attn = (q * self.scale) @ k.transpose(-2, -1)          # (B, h, 1, N)
            attn = attn.softmax(dim=-1)
            out = F.dropout(attn, drop, self.training) @ v         # (B, h, 1, d)
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (B, h, 1, d)
        out = self.proj(out.transpose(1, 2).reshape(B, 1, D))      # (B, 1, D)
        return (out, attn) if return_attention else out


def init_weights(m: nn.Module) -> None:
    """The ViT family's initialization: truncated-normal linear weights (std 0.02), zero biases,
    unit LayerNorms. Apply with ``model.apply(init_weights)``."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Run the block with every model in eval mode, then give each back the mode it had, even on errors."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: int | tuple[int, int], num_prefix_tokens: int = 1, *,
                     mode: str = "bicubic", antialias: bool = True,
                     scale_offset: float | None = None) -> torch.Tensor:
    """Learned position embeddings on another patch grid: the patch part is seen as a (D, g, g) image
    and resized; prefix tokens ([CLS], [DIST]) keep theirs.

    Two references, two ways to resize:

    - timm's ``resample_abs_pos_embed`` (a ViT evaluated at another resolution, notebook 04): to the
      new ``size``, antialiased (the defaults);
    - DINO's ``interpolate_pos_encoding`` (its small local crops, notebook 05): ``antialias=False,
      scale_offset=0.1``, i.e. ``scale_factor=((rows + 0.1) / g, (cols + 0.1) / g)`` instead of a
      size. The output has the same shape, but ``interpolate`` then maps output pixels to input
      positions with that factor rather than with ``rows / g``: samples shift by up to a few tenths
      of a patch, and the tables differ (by up to ~0.04 for a 8 -> 4 grid).

    Args:
        pos_embed: (1, prefix + g * g, D), on a square grid.
        new_grid: side of the new grid (or (rows, columns)).
        scale_offset: if given, resize by ``scale_factor=(side + scale_offset) / g`` (DINO: 0.1).
    Returns:
        (1, prefix + rows * columns, D).
    """
    rows, cols = (new_grid, new_grid) if isinstance(new_grid, int) else new_grid
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    g = math.isqrt(patches.shape[1])
    if g * g != patches.shape[1]:
        raise ValueError(f"{patches.shape[1]} patch position embeddings do not form a square grid")
    if (rows, cols) == (g, g):
        return pos_embed
    D = patches.shape[-1]
    grid = patches.reshape(1, g, g, D).permute(0, 3, 1, 2).float()                     # (1, D, g, g)
    if scale_offset is None:
        grid = F.interpolate(grid, size=(rows, cols), mode=mode, align_corners=False, antialias=antialias)
    else:
        scale = ((rows + scale_offset) / g, (cols + scale_offset) / g)
        grid = F.interpolate(grid, scale_factor=scale, mode=mode, align_corners=False, antialias=antialias)
        if grid.shape[-2:] != (rows, cols):
            raise ValueError(f"scale_offset={scale_offset} resizes a {g} x {g} grid to "
                             f"{tuple(grid.shape[-2:])}, not {(rows, cols)}")
    patches = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, D).to(pos_embed.dtype)  # (1, rows * cols, D)
    return torch.cat([prefix, patches], dim=1)


class TokenClassifier(nn.Module):
    """What every transformer classifier of the course shares, timm's split included:
    ``forward = forward_head(forward_features(x))``, and attention maps read off
    ``forward_features(x, return_attention=True)``. Subclasses define those two methods."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The attention weights of every block, in order (see the model's ``forward_features``)."""
        return self.forward_features(x, return_attention=True)[1]

    def get_last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights of the last block, as in DINO's code."""
        return self.attention_maps(x)[-1]

    def no_weight_decay(self) -> set[str]:
        """Parameters that get no weight decay under timm's rule: tokens, position tables, temperatures
        (biases and norms are recognised by their shape, see ``vislearn.train.param_groups``)."""
        return {n for n, _ in self.named_parameters()
                if n in ("cls_token", "dist_token", "pos_embed") or n.endswith("temperature")}


class ClassAttentionClassifier(TokenClassifier):
    """CaiT and XCiT: self-attention (or XCA) blocks over the patches, then class-attention blocks that
    let [CLS] read them; tokens are [CLS, patches] when they reach the head."""

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, 1 + N, D) -> logits (B, classes), or pooled features (B, D) if pre_logits."""
        x = x[:, 0] if self.cfg.global_pool == "token" else x[:, 1:].mean(dim=1)  # (B, D)
        return x if pre_logits else self.head(x)

    @torch.no_grad()
    def class_attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Where [CLS] looks: one (B, heads, 1, 1 + N) map per class-attention block."""
        return self.attention_maps(x)[self.cfg.depth:]
