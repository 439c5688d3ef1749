"""Notebook 09's recipes: one budget for all (notebook 01's), models sized like its ViT, and the probes
that record ConViT's gates and ResMLP's mixing distance during training."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from vislearn import recipes
from vislearn.models.convert import build
from vislearn.recipes import nb09_architectures as nb09
from vislearn.recipes.nb01_vit import VIT_FMNIST_FULL
from vislearn.train import TrainConfig

NAMES = ("levit_fmnist", "resmlp_fmnist", "convit_fmnist", "patchconvnet_fmnist")


@pytest.mark.parametrize("name", NAMES)
def test_same_budget_as_the_vit_and_about_its_size(name):
    recipe = recipes.get(name)
    assert recipe.config("full") == replace(VIT_FMNIST_FULL, wd_skip=TrainConfig().wd_skip)
    params = sum(p.numel() for p in build(recipe.arch, recipe.model).parameters())
    assert 0.19e6 < params < 0.24e6, params            # the ViT of 01: 0.21 M
    assert recipe.config("smoke").train_limit == 2048


def test_levit_trains_with_one_head():
    model = build("levit", recipes.get("levit_fmnist").model).train()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)      # not a (labels, teacher) pair


def test_mixing_distance_known_values():
    g = 3
    identity = torch.eye(g * g).reshape(1, g * g, g, g)
    assert nb09.mixing_distance(identity).tolist() == [0.0]         # every patch keeps only itself
    uniform = torch.ones(1, g * g, g, g)
    ys, xs = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], 1).float()
    expected = torch.cdist(pos, pos).mean().item()
    assert nb09.mixing_distance(uniform).item() == pytest.approx(expected)
    right = torch.zeros(1, g * g, g, g)                              # each patch reads its right neighbour (or itself)
    for i in range(g * g):
        r, c = divmod(i, g)
        right[0, i, r, min(c + 1, g - 1)] = -2.0                     # the sign does not matter, the size does
    assert nb09.mixing_distance(right).item() == pytest.approx(6 / 9)


def test_probes_read_the_model_and_its_ddp_wrapper():
    convit = build("convit", recipes.get("convit_fmnist").model)
    gates = nb09.convit_gates(convit)["gates"]
    assert len(gates) == 4 and all(len(row) == 4 for row in gates)
    assert all(v == pytest.approx(1 / (1 + math.exp(-1)), abs=1e-4) for row in gates for v in row)  # timm's init

    class Wrapped(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module
    assert nb09.convit_gates(Wrapped(convit)) == {"gates": gates}
    resmlp = build("resmlp", recipes.get("resmlp_fmnist").model)
    distance = nb09.resmlp_locality(resmlp)["mixing_distance"]
    assert len(distance) == 6 and all(0 < d < 8.5 for d in distance)
