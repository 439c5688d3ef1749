"""Local patch interaction (LPI), switched off and measured: the paper's "w/o LPI" ablation.

XCA mixes channels, not positions; in XCiT (El-Nouby et al., 2021) the LPI branch (two depthwise
3x3 convolutions) is what lets neighbouring patches talk inside a block. ``without_lpi`` removes it
from a trained model, ``switch_off_lpi_`` keeps it removed during training (the recipe
``xcit_fmnist32_nolpi``), and ``token_influence`` measures how strongly each input token moves one
output token: with LPI a block's output depends most on its neighbours. Built in notebook 04.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..models.xcit import XCiT


@torch.no_grad()
def switch_off_lpi_(model: XCiT) -> XCiT:
    """Remove every LPI branch of ``model`` in place: gamma3 = 0 and LPI's last conv = 0.

    Zeroing both makes the gradients of all LPI parameters exactly zero, so a model trained from
    this state stays LPI-free without a separate architecture.
    """
    for block in model.blocks:
        block.gamma3.zero_()
        block.local_mp.conv2.weight.zero_()
        block.local_mp.conv2.bias.zero_()
    return model


def without_lpi(model: XCiT) -> XCiT:
    """A copy of a (trained) XCiT with its local patch interaction switched off."""
    return switch_off_lpi_(copy.deepcopy(model))


def token_influence(block: nn.Module, tokens: torch.Tensor, grid: tuple[int, int], index: int) -> torch.Tensor:
    """How strongly each input token moves output token ``index`` of an XCA block.

    Returns ``||d y_index / d x_j||`` (Frobenius norm of the D x D Jacobian) for every input token
    j, as a map (H, W) over the patch grid.

    Args:
        block: an ``XCABlock`` (called as ``block(x, H, W)``).
        tokens: one image's tokens (1, N, D), N = H * W.
    """
    H, W = grid
    x = tokens.detach().clone()

    def out(inp):
        return block(inp, H, W)[0, index]                                       # (D,)

    jac = torch.autograd.functional.jacobian(out, x, vectorize=True)            # (D, 1, N, D)
    return jac.pow(2).sum(dim=(0, 1, 3)).sqrt().reshape(H, W)                   # (H, W)
