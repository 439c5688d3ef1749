"""ConViT (vislearn.models.convit) against timm's ConVit, on randomized weights."""

import math

import pytest
import torch
from timm.models.convit import ConVit

from vislearn.config import ParameterError
from vislearn.models.convert import build, from_timm, randomize_
from vislearn.models.convit import GPSA, ConViT, ConViTConfig, relative_offsets

from .parity import ATOL, assert_equal_to_timm, assert_registry_model_equal, batch

# name -> timm kwargs (timm's embed_dim is per head); tiny, so the file runs in seconds on one thread
CONFIGS = {
    "img28-p4-gray-h4x8-depth3-local2": dict(img_size=28, patch_size=4, in_chans=1, embed_dim=8, num_heads=4, depth=3,
                                             local_up_to_layer=2, mlp_ratio=2.0),
    "img32-p8-h9x4-depth2-local1-avg-qkvbias-nopos-loc2": dict(
        img_size=32, patch_size=8, embed_dim=4, num_heads=9, depth=2, local_up_to_layer=1, global_pool="avg",
        qkv_bias=True, use_pos_embed=False, locality_strength=2.0),
    "img16-p4-h2x8-depth2-local0": dict(img_size=16, patch_size=4, embed_dim=8, num_heads=2, depth=2,
                                        local_up_to_layer=0),
}


def make_timm(kwargs: dict, seed: int = 0) -> ConVit:
    kwargs = {"in_chans": 3, "num_classes": 10, **kwargs}
    return randomize_(ConVit(**kwargs), seed).eval()


@pytest.mark.parametrize("name", CONFIGS)
def test_matches_timm(name):
    theirs = make_timm(CONFIGS[name])
    ours = from_timm(theirs).eval()
    assert isinstance(ours, ConViT)
    assert_equal_to_timm(ours, theirs, batch(ours), f"convit {name}")


def test_matches_timm_registry_model():
    """convit_tiny (12 blocks, 10 of them GPSA, 4 heads of 48), randomized, at 64 px (a 4 x 4 grid)."""
    assert assert_registry_model_equal("convit_tiny") <= ATOL


def test_relative_offsets_on_2x2_grid():
    """Patches in row-major order (0,0), (0,1), (1,0), (1,1); r_ij = (dx, dy, dx^2 + dy^2), key j - query i."""
    r = relative_offsets(2)
    assert torch.equal(r[..., 0], torch.tensor([[0, 1, 0, 1], [-1, 0, -1, 0], [0, 1, 0, 1], [-1, 0, -1, 0]]))
    assert torch.equal(r[..., 1], torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [-1, -1, 0, 0], [-1, -1, 0, 0]]))
    assert torch.equal(r[..., 2], r[..., 0] ** 2 + r[..., 1] ** 2)
    timm_gpsa = ConVit(img_size=20, patch_size=4, embed_dim=4, num_heads=4, depth=2, local_up_to_layer=1).blocks[0].attn
    torch.testing.assert_close(relative_offsets(5).float(), timm_gpsa.get_rel_indices(25)[0], rtol=0, atol=0)


@pytest.mark.parametrize("heads, strength", [(4, 1.0), (9, 2.0)])
def test_init_is_timms_local_init(heads, strength):
    """Fresh models: gates sigmoid(1), values the identity, positional weights as timm's local_init."""
    theirs = ConVit(img_size=16, patch_size=4, embed_dim=4, num_heads=heads, depth=3, local_up_to_layer=2,
                    locality_strength=strength)
    ours = ConViT(img_size=16, patch_size=4, in_chans=3, embed_dim=4 * heads, num_heads=heads, depth=3,
                  local_up_to_layer=2, locality_strength=strength)
    gates = ours.gates()
    assert gates.shape == (2, heads)
    torch.testing.assert_close(gates, torch.full((2, heads), 1 / (1 + math.exp(-1.0))))
    for b_ours, b_timm in zip(ours.blocks[:2], theirs.blocks[:2], strict=True):
        torch.testing.assert_close(b_ours.attn.pos_proj.weight, b_timm.attn.pos_proj.weight)
        torch.testing.assert_close(b_ours.attn.v.weight, torch.eye(4 * heads))
        torch.testing.assert_close(b_ours.attn.gating_param, b_timm.attn.gating_param)


def test_local_init_heads_look_at_neighbours():
    """After local_init with a strong locality, the 4 heads of a 2 x 2 window each peak (by position
    alone) on a different patch next to the query: together they cover a 2 x 2 neighbourhood."""
    gpsa = GPSA(16, 4, grid=4, locality_strength=5.0)
    gpsa.local_init()
    with torch.no_grad():
        position = gpsa.pos_proj(gpsa.rel_indices.float()).permute(2, 0, 1).softmax(-1)  # (h, N, N)
    query = 5                                         # patch (1, 1): every neighbour exists
    peaks = {int(position[h, query].argmax()) for h in range(4)}
    assert len(peaks) == 4                            # four heads, four different neighbours


def test_gate_blends_position_and_content():
    """gate -> 1: the weights are the positional map, the same for every image; gate -> 0: content softmax."""
    ours = ConViT(ConViTConfig(img_size=16, patch_size=4, embed_dim=16, num_heads=4, depth=2, local_up_to_layer=1))
    ours = randomize_(ours, seed=3).eval()
    gpsa = ours.blocks[0].attn
    x = torch.randn(2, 16, 16)
    with torch.no_grad():
        gpsa.gating_param.fill_(30.0)
        _, attn = gpsa(x, return_attention=True)
        position = gpsa.pos_proj(gpsa.rel_indices.float()).permute(2, 0, 1).softmax(-1)
        torch.testing.assert_close(attn, position.expand_as(attn))
        gpsa.gating_param.fill_(-30.0)
        _, attn = gpsa(x, return_attention=True)
        q, k = gpsa.qk(x).reshape(2, 16, 2, 4, 4).permute(2, 0, 3, 1, 4)
        torch.testing.assert_close(attn, (q @ k.transpose(-2, -1) * gpsa.scale).softmax(-1))


def test_fashion_mnist_shapes_and_maps():
    model = ConViT(ConViTConfig()).eval()      # 28 x 28 x 1, 7 x 7 patches, 4 GPSA + 2 self-attention blocks
    x = torch.randn(3, 1, 28, 28)
    assert model(x).shape == (3, 10)
    feats, maps = model.forward_features(x, return_attention=True)
    assert feats.shape == (3, 50, 64)
    assert [tuple(m.shape) for m in maps] == [(3, 4, 49, 49)] * 4 + [(3, 4, 50, 50)] * 2
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones_like(m.sum(-1)))
    assert model.gates().shape == (4, 4)
    assert model.no_weight_decay() == {"cls_token", "pos_embed"}


def test_build_from_config_dict():
    ours = from_timm(make_timm(CONFIGS["img28-p4-gray-h4x8-depth3-local2"]))
    rebuilt = build("convit", ours.cfg.to_dict())
    rebuilt.load_state_dict(ours.state_dict(), strict=True)
    x = batch(ours)
    torch.testing.assert_close(rebuilt.eval()(x), ours.eval()(x))


@pytest.mark.parametrize("overrides, message", [
    (dict(global_pool="max"), r"global_pool='max' is not allowed; choose one of: 'token', 'avg'"),
    (dict(local_up_to_layer=6), r"local_up_to_layer=6 must be an integer <= 5"),
    (dict(embed_dim=30), r"embed_dim=30 is not a multiple of num_heads=4"),
])
def test_bad_config_raises(overrides, message):
    with pytest.raises(ParameterError, match=message):
        ConViTConfig(**overrides)


@pytest.mark.parametrize("kwargs, message", [
    (dict(global_pool=""), "global_pool=''"),
    (dict(local_up_to_layer=2), r"local_up_to_layer=2 with 2 blocks"),
    (dict(drop_path_rate=0.1), None),   # timm's linear schedule is ours: converts
])
def test_unsupported_raises(kwargs, message):
    kwargs = {"img_size": 16, "patch_size": 8, "embed_dim": 8, "num_heads": 2, "depth": 2, "local_up_to_layer": 1,
              "num_classes": 3, **kwargs}
    theirs = ConVit(**kwargs)
    if message is None:
        assert from_timm(theirs).cfg.drop_path_rate == pytest.approx(0.1)
        return
    with pytest.raises(NotImplementedError, match=message):
        from_timm(theirs)
