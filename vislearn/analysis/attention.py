"""Looking inside attention: CLS maps, attention rollout, mean attention distance, position similarity.

Every function takes plain tensors, so it works for any model that returns attention weights
(ViT here; DeiT, CaiT, DINO later). Shapes: B images, h heads, T = prefix + N tokens, N = g x g
patches on a square grid.

- Attention rollout: Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers".
- Mean attention distance: Dosovitskiy et al., 2021 (ViT), Figure 7 ("attention distance").
Built in notebook 01.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def grid_side(num_patches: int) -> int:
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"{num_patches} patch tokens do not form a square grid")
    return side


def cls_attention(attn: torch.Tensor, num_prefix_tokens: int = 1, token: int = 0) -> torch.Tensor:
    """What a prefix token looks at: (B, h, T, T) -> (B, h, g, g) over the patch grid.

    ``token`` 0 is [CLS]; DeiT's [DIST] is token 1 (with ``num_prefix_tokens=2``).
    """
    row = attn[:, :, token, num_prefix_tokens:]             # (B, h, N)
    g = grid_side(row.shape[-1])
    return row.reshape(*row.shape[:2], g, g)               # (B, h, g, g)


def rollout(attentions: list[torch.Tensor], residual: float = 0.5, head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout: multiply the per-layer attention (with the residual path) through depth.

    Each layer's attention, averaged over heads (or max), is mixed with the identity to account
    for the skip connection: A' = residual * I + (1 - residual) * A, rows renormalized. The product
    over layers says how much each input token flows into each output token.

    Args:
        attentions: depth tensors (B, h, T, T), first layer first.
    Returns:
        (B, T, T) rollout; row i is the contribution of every input token to output token i.
    """
    if head_fusion not in ("mean", "max"):
        raise ValueError(f"head_fusion={head_fusion!r}; choose 'mean' or 'max'")
    if len(attentions) == 0:
        raise ValueError("rollout needs the attention of at least one layer, got an empty list")
    if not 0 <= residual <= 1:
        raise ValueError(f"residual={residual!r} must be in [0, 1] (the weight of the skip connection)")
    result = None
    for attn in attentions:
        a = attn.mean(1) if head_fusion == "mean" else attn.amax(1)   # (B, T, T)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = residual * eye + (1 - residual) * a
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result                     # (B, T, T)
    return result


def patch_distances(grid: int, patch_size: float = 1.0) -> torch.Tensor:
    """Euclidean distances between patch centres on a g x g grid: (N, N), in pixels."""
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    centres = torch.stack([ys.flatten(), xs.flatten()], dim=1).float() * patch_size   # (N, 2)
    return torch.cdist(centres, centres)                                            # (N, N)


def mean_attention_distance(attn: torch.Tensor, patch_size: float = 1.0, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Average distance (pixels) between a patch query and the patches it attends to, per head.

    Attention to prefix tokens (CLS) is dropped and the rest renormalized, as in the ViT paper.

    Args:
        attn: (B, h, T, T).
    Returns:
        (h,) mean over images and query patches.
    """
    a = attn[:, :, num_prefix_tokens:, num_prefix_tokens:]          # (B, h, N, N)
    a = a / a.sum(-1, keepdim=True)
    dist = patch_distances(grid_side(a.shape[-1]), patch_size).to(a)  # (N, N)
    return (a * dist).sum(-1).mean(dim=(0, 2))                       # (h,)


def position_similarity(pos_embed: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Cosine similarity of each patch's position embedding with every other: (g, g, g, g)."""
    p = F.normalize(pos_embed[0, num_prefix_tokens:], dim=-1)        # (N, D)
    g = grid_side(p.shape[0])
    return (p @ p.T).reshape(g, g, g, g)


def upsample_map(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Patch-grid maps (..., g, g) -> (..., size, size) by nearest-neighbour (patches stay visible)."""
    shape = maps.shape
    out = F.interpolate(maps.reshape(-1, 1, *shape[-2:]).float(), size=(size, size), mode="nearest")
    return out.reshape(*shape[:-2], size, size)
