"""LayerScale and class attention, opened up: CaiT's depth rule, gammas by depth, head mixing.

Touvron et al., 2021, "Going deeper with Image Transformers" (CaiT), section 2: LayerScale multiplies
the output of every residual branch by a learned per-channel vector, a diagonal matrix initialised
to a small epsilon, so that a freshly initialised deep network starts close to the identity. The
paper sets "epsilon = 0.1 until depth 18, epsilon = 1e-5 for depth 24 and epsilon = 1e-6 for deeper
networks" (``layerscale_init``). timm's CaiT models follow it, except its XXS-36, which keeps 1e-5.

This module holds what notebook 03 (``notebooks/03_cait_class_attention.ipynb``) measures on
trained models, written once for any of our models that has LayerScale (our ViT's ``ls1``/``ls2``,
CaiT's ``gamma_1``/``gamma_2``), and the recipes of its bundled checkpoints:

- ``vit_deep_fmnist`` and ``vit_deep_layerscale_fmnist``: the same deep, narrow ViT without and
  with LayerScale, trained with exactly the same settings (the LayerScale comparison);
- ``cait_fmnist``: a small CaiT (talking-heads self-attention, then 2 class-attention blocks).

Train one with ``python -m vislearn.train vit_deep_layerscale_fmnist --preset full --out data/checkpoints``.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .cait import CaiT, CaiTConfig
from .train import Recipe, TrainConfig, register
from .vit import VisionTransformer, ViTConfig

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
    was_training = model.training
    model.eval()
    tokens = model.embed(x)                                  # (B, T, D)
    ratios = []
    for block in model.blocks:
        out = block(tokens)                                  # (B, T, D)
        ratios.append(((out - tokens).norm(dim=-1) / tokens.norm(dim=-1)).mean())
        tokens = out
    model.train(was_training)
    return torch.stack(ratios).cpu()


# --- Recipes ---------------------------------------------------------------------------------------
# The LayerScale comparison: two recipes that differ ONLY in init_values. Patches of 7 px (a 4 x 4
# grid, 16 tokens + [CLS]) keep a 24-block model affordable on one CPU thread (about 165 ms per step,
# 5 epochs in about 6.5 minutes). A peak learning rate of 3e-3 without warmup: at 1e-3 the two train
# alike, at 3e-3 only the LayerScale model profits (pilot runs: notes/layerscale_runs.md).
DEEP_DEPTH = 24
DEEP_VIT = ViTConfig(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=48, depth=DEEP_DEPTH,
                     num_heads=4, mlp_ratio=2.0)
DEEP_FULL = TrainConfig(epochs=5, batch_size=128, lr=3e-3, weight_decay=0.05, warmup_epochs=0, augment=False,
                        eval_every=1.0, log_every=10)
DEEP_PRESETS = {
    "smoke": replace(DEEP_FULL, epochs=1, train_limit=2048, test_limit=1000),
    "classroom": replace(DEEP_FULL, epochs=1),
    "full": DEEP_FULL,
}

VIT_DEEP = register(Recipe(
    name="vit_deep_fmnist",
    arch="vit",
    model=DEEP_VIT.to_dict(),
    presets=DEEP_PRESETS,
    description=f"A deep, narrow ViT ({DEEP_DEPTH} blocks, D=48, 4x4 patches of 7 px) WITHOUT LayerScale "
                "(notebook 03's baseline).",
))
VIT_DEEP_LAYERSCALE = register(Recipe(
    name="vit_deep_layerscale_fmnist",
    arch="vit",
    model=replace(DEEP_VIT, init_values=layerscale_init(DEEP_DEPTH)).to_dict(),
    presets=DEEP_PRESETS,
    description=f"The same deep ViT WITH LayerScale, gammas initialised by CaiT's depth rule "
                f"({layerscale_init(DEEP_DEPTH):g} at depth {DEEP_DEPTH}).",
))

# The CaiT of notebook 03: the same 7 x 7 grid of 4 px patches and width as notebook 01's ViT (vit_fmnist),
# so their attention maps can be compared patch by patch. Talking-heads attention cannot use the fused kernel,
# hence 4 self-attention blocks: about 200 ms per step on one CPU thread, 6 epochs in about 9 minutes.
CAIT_FMNIST_MODEL = CaiTConfig(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=4,
                               num_heads=4, mlp_ratio=2.0, depth_token_only=2, mlp_ratio_token_only=2.0,
                               init_values=layerscale_init(4))
CAIT_FMNIST_FULL = TrainConfig(epochs=6, batch_size=128, lr=1e-3, weight_decay=0.05, warmup_epochs=0.5,
                               augment=False, eval_every=1.0, log_every=25)
CAIT_FMNIST = register(Recipe(
    name="cait_fmnist",
    arch="cait",
    model=CAIT_FMNIST_MODEL.to_dict(),
    presets={
        "smoke": replace(CAIT_FMNIST_FULL, epochs=1, train_limit=2048, test_limit=1000, warmup_epochs=0.2),
        "classroom": replace(CAIT_FMNIST_FULL, epochs=1, warmup_epochs=0.2),
        "full": CAIT_FMNIST_FULL,
    },
    description="A small CaiT (7x7 patches of 4 px, D=64, 4 talking-heads blocks, then 2 class-attention "
                "blocks, 4 heads) on Fashion-MNIST (notebook 03).",
))
