"""vislearn.methods.layerscale: CaiT's depth rule, gammas by depth, talking-heads matrices; notebook 03's recipes."""

from dataclasses import asdict

import pytest
import torch

from vislearn.methods.layerscale import (
    class_attention_gammas,
    gammas_by_depth,
    layerscale_init,
    residual_update_ratios,
    talking_heads_matrices,
)
from vislearn.models.cait import CaiT, CaiTConfig
from vislearn.models.convert import randomize_
from vislearn.models.vit import VisionTransformer, ViTConfig
from vislearn.recipes import all_recipes, nb03_cait


@pytest.mark.parametrize("depth, epsilon", [
    (1, 0.1), (12, 0.1), (18, 0.1),   # "epsilon = 0.1 until depth 18"
    (19, 1e-5), (24, 1e-5),           # "1e-5 for depth 24" (19-23: not named by the paper, the next value)
    (25, 1e-6), (36, 1e-6), (48, 1e-6),  # "1e-6 for deeper networks"
])
def test_layerscale_init_follows_the_paper(depth, epsilon):
    assert layerscale_init(depth) == epsilon


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "24"])
def test_layerscale_init_rejects_bad_depths(bad):
    with pytest.raises(ValueError, match="depth="):
        layerscale_init(bad)


def tiny_vit(**kw) -> VisionTransformer:
    return VisionTransformer(ViTConfig(img_size=16, patch_size=8, embed_dim=16, depth=3, num_heads=2, **kw))


def tiny_cait(**kw) -> CaiT:
    return CaiT(CaiTConfig(img_size=16, patch_size=4, embed_dim=16, depth=3, num_heads=2, depth_token_only=2, **kw))


def test_gammas_by_depth_vit():
    g = gammas_by_depth(tiny_vit(init_values=0.1))
    assert set(g) == {"attn", "mlp"}
    assert g["attn"].shape == g["mlp"].shape == (3, 16)
    torch.testing.assert_close(g["attn"], torch.full((3, 16), 0.1))
    assert not g["attn"].requires_grad


def test_gammas_by_depth_reads_the_right_branches():
    model = randomize_(tiny_vit(init_values=1e-5))
    g = gammas_by_depth(model)
    for i, block in enumerate(model.blocks):
        assert torch.equal(g["attn"][i], block.ls1.gamma.detach())
        assert torch.equal(g["mlp"][i], block.ls2.gamma.detach())
    cait = randomize_(tiny_cait())
    g = gammas_by_depth(cait)
    assert g["attn"].shape == (3, 16) and torch.equal(g["mlp"][2], cait.blocks[2].gamma_2.detach())
    ca = class_attention_gammas(cait)
    assert ca["attn"].shape == (2, 16) and torch.equal(ca["attn"][1], cait.blocks_token_only[1].gamma_1.detach())


def test_gammas_by_depth_errors():
    with pytest.raises(ValueError, match="no LayerScale"):
        gammas_by_depth(tiny_vit())
    with pytest.raises(TypeError, match="Linear"):
        gammas_by_depth(torch.nn.Linear(2, 2))


def test_talking_heads_matrices():
    cait = randomize_(tiny_cait())
    m = talking_heads_matrices(cait)
    assert set(m) == {"proj_l", "proj_w"}
    assert m["proj_l"].shape == m["proj_w"].shape == (3, 2, 2)          # (depth, heads, heads)
    assert torch.equal(m["proj_w"][1], cait.blocks[1].attn.proj_w.weight.detach())


def test_talking_heads_mixing_is_the_matrix_over_heads():
    """proj_l's weight [i, j] is how much head j's logits feed mixed head i."""
    attn = randomize_(tiny_cait()).blocks[0].attn
    logits = torch.randn(2, 2, 5, 5)                                      # (B, h, N, N)
    by_linear = attn.proj_l(logits.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    by_matrix = torch.einsum("ij,bjnm->binm", attn.proj_l.weight, logits) + attn.proj_l.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(by_linear, by_matrix)


def test_residual_update_ratios():
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    plain = residual_update_ratios(tiny_vit(), x)
    torch.manual_seed(0)
    scaled = residual_update_ratios(tiny_vit(init_values=1e-5), x)
    assert plain.shape == scaled.shape == (3,)
    # the same weights, but every branch multiplied by 1e-5: the first block's update shrinks by about that
    # factor (not exactly: its MLP branch then reads x + 1e-5 * attn instead of x + attn)
    torch.testing.assert_close(scaled[0], plain[0] * 1e-5, rtol=0.1, atol=0.0)
    assert (scaled < 1e-4).all() and (plain > 1e-3).all()


def test_class_attention_leaves_patch_tokens_untouched():
    """Changing the class token changes the class token's output only: the patches are read, never written."""
    cait = randomize_(tiny_cait()).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        before = cait.forward_features(x)
        cait.cls_token.add_(torch.randn(cait.cls_token.shape))  # (a constant would vanish in LayerNorm)
        after = cait.forward_features(x)
    assert torch.equal(before[:, 1:], after[:, 1:])
    assert (before[:, 0] - after[:, 0]).abs().max() > 1e-3


def test_recipes_registered():
    recipes = all_recipes()
    plain, scaled, cait = (recipes[n] for n in ("vit_deep_fmnist", "vit_deep_layerscale_fmnist", "cait_fmnist"))
    for recipe in (plain, scaled, cait):
        assert set(recipe.presets) == {"smoke", "classroom", "full"}
        assert recipe.config("full").epochs > recipe.config("smoke").epochs
        assert recipe.config("smoke").train_limit is not None and recipe.config("full").train_limit is None
    assert plain.arch == scaled.arch == "vit" and cait.arch == "cait"
    # a fair comparison: the two deep recipes differ in init_values and nothing else
    depth = plain.model["depth"]
    assert plain.model["init_values"] is None and scaled.model["init_values"] == layerscale_init(depth)
    assert {k: v for k, v in plain.model.items() if k != "init_values"} == \
           {k: v for k, v in scaled.model.items() if k != "init_values"}
    assert {p: asdict(c) for p, c in plain.presets.items()} == {p: asdict(c) for p, c in scaled.presets.items()}
    assert cait.model["depth_token_only"] == 2 and cait.model["init_values"] == layerscale_init(cait.model["depth"])
    assert nb03_cait.DEEP_DEPTH == depth


@pytest.mark.parametrize("name", ["vit_deep_fmnist", "vit_deep_layerscale_fmnist", "cait_fmnist"])
def test_recipe_models_build_and_run(name):
    from vislearn.models.convert import build

    recipe = all_recipes()[name]
    model = build(recipe.arch, recipe.model).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
