"""Shared test helpers."""

from __future__ import annotations

import pytest
import torch


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    """Overwrite every parameter and float buffer with noise.

    Fresh models hide mistakes: zero biases, unit LayerNorm weights and tiny LayerScale gammas make
    whole branches vanish, so a bug there would still "match". BatchNorm variances stay positive.
    """
    g = torch.Generator().manual_seed(seed)
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if not t.is_floating_point():
            continue
        noise = torch.randn(t.shape, generator=g) * scale
        t.copy_(noise.abs() + 0.5 if name.endswith("running_var") else noise)
    return model


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)
