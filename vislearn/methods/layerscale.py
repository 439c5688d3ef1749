"""LayerScale and class attention, opened up: CaiT's depth rule, gammas by depth, head mixing.

Touvron et al., 2021, "Going deeper with Image Transformers" (CaiT), section 2: LayerScale multiplies
the output of every residual branch by a learned per-channel vector, a diagonal matrix initialised
to a small epsilon, so that a freshly initialised deep network starts close to the identity. The
paper sets "epsilon = 0.1 until depth 18, epsilon = 1e-5 for depth 24 and epsilon = 1e-6 for deeper
networks" (``layerscale_init``). timm's CaiT models follow it, except its XXS-36, which keeps 1e-5.

This module holds what notebook 03 (``notebooks/03_cait_class_attention.ipynb``) measures on
trained models, written once for any of our models that has LayerScale (our ViT's ``ls1``/``ls2``,
CaiT's ``gamma_1``/``gamma_2``). Its recipes (``vit_deep_fmnist`` and ``vit_deep_layerscale_fmnist``,
the same deep ViT without and with LayerScale; ``cait_fmnist``) are in ``vislearn/recipes/nb03_cait.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.cait import CaiT
from ..models.layers import eval_mode
from ..models.vit import VisionTransformer

# (largest depth, epsilon) in increasing depth; deeper than the last row: LAYERSCALE_DEEPEST
LAYERSCALE_RULE: tuple[tuple[int, float], ...] = ((18, 0.1), (24, 1e-5))
LAYERSCALE_DEEPEST = 1e-6


def layerscale_init(depth: int) -> float:
    """CaiT's initial LayerScale value for a network of ``depth`` blocks.

    The paper gives 0.1 "until depth 18", 1e-5 "for depth 24" and 1e-6 "for deeper networks"; it
    names no value between 19 and 23, where we use 1e-5 (the next depth it names).
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth={depth!r} must be a positive integer (number of blocks)")
    for largest, epsilon in LAYERSCALE_RULE:
        if depth <= largest:
            return epsilon
    return LAYERSCALE_DEEPEST


def gammas_by_depth(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LayerScale vectors of every self-attention block, stacked by depth.

    Works for our ``VisionTransformer`` (``ls1.gamma``, ``ls2.gamma``) and ``CaiT`` (``gamma_1``,
    ``gamma_2``; its class-attention blocks are left out, see ``class_attention_gammas``).

    Returns:
        {"attn": (depth, D), "mlp": (depth, D)}: the gamma of the attention branch and of the MLP
        branch of each block, first block first (detached, on the CPU).

    Raises:
        ValueError: the model has no LayerScale (a ViT built with ``init_values=None``).
    """
    if isinstance(model, CaiT):
        pairs = [(b.gamma_1, b.gamma_2) for b in model.blocks]
    elif isinstance(model, VisionTransformer):
        if model.cfg.init_values is None:
            raise ValueError("this ViT has no LayerScale (init_values=None): there are no gammas to read")
        pairs = [(b.ls1.gamma, b.ls2.gamma) for b in model.blocks]
    else:
        raise TypeError(f"gammas_by_depth: expected a vislearn VisionTransformer or CaiT, got {type(model).__name__}")
    attn, mlp = zip(*pairs, strict=True)
    return {"attn": torch.stack(attn).detach().cpu(), "mlp": torch.stack(mlp).detach().cpu()}  # (depth, D) each


def class_attention_gammas(model: CaiT) -> dict[str, torch.Tensor]:
    """CaiT's class-attention blocks' gammas: {"attn": (depth_token_only, D), "mlp": (...)}."""
    attn = [b.gamma_1 for b in model.blocks_token_only]
    mlp = [b.gamma_2 for b in model.blocks_token_only]
    return {"attn": torch.stack(attn).detach().cpu(), "mlp": torch.stack(mlp).detach().cpu()}


def talking_heads_matrices(model: CaiT) -> dict[str, torch.Tensor]:
    """The heads x heads mixing matrices of every talking-heads block, stacked by depth.

    ``proj_l`` mixes the heads' attention logits before the softmax, ``proj_w`` the attention
    weights after it; entry [i, j] is how much head j feeds the mixed head i (``nn.Linear`` weights
    are (out, in)). Biases are left out.

    Returns:
        {"proj_l": (depth, h, h), "proj_w": (depth, h, h)}.
    """
    return {name: torch.stack([getattr(b.attn, name).weight for b in model.blocks]).detach().cpu()
            for name in ("proj_l", "proj_w")}


@torch.no_grad()
def residual_update_ratios(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """How much each block changes the residual stream: ||x_out - x_in|| / ||x_in||, per block.

    With LayerScale at a small epsilon every ratio starts near 0 (each block is close to the
    identity); without it each block adds an update of the size of its input from the first step.

    Args:
        x: images (B, C, H, W).
    Returns:
        (depth,) mean over images and tokens.
    """
    ratios = []
    with eval_mode(model):
        tokens = model.embed(x)                              # (B, T, D)
        for block in model.blocks:
            out = block(tokens)                              # (B, T, D)
            ratios.append(((out - tokens).norm(dim=-1) / tokens.norm(dim=-1)).mean())
            tokens = out
    return torch.stack(ratios).cpu()
