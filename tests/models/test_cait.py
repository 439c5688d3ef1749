"""CaiT (vislearn.models.cait) against timm's Cait, on randomized weights."""

import pytest
import torch
from timm.models.cait import Cait
from torch import nn

from vislearn.models.cait import CaiT, CaiTConfig
from vislearn.models.convert import build, from_timm, randomize_

from .parity import ATOL, assert_equal_to_timm, assert_registry_model_equal, batch

# name -> timm kwargs; every model is tiny so the whole file runs in seconds on one CPU thread
CONFIGS = {
    "p8-img32-d48-h4-depth2-ca1": dict(
        img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, depth_token_only=1),
    "p16-img32-d64-h2-depth1-ca2-mlp2-camlp3": dict(
        img_size=32, patch_size=16, embed_dim=64, depth=1, num_heads=2, depth_token_only=2, mlp_ratio=2.0,
        mlp_ratio_token_only=3.0),
    "p16-img48-d32-h4-depth2-ca0-avg-noqkvbias-gray": dict(
        img_size=48, patch_size=16, embed_dim=32, depth=2, num_heads=4, depth_token_only=0, global_pool="avg",
        qkv_bias=False, in_chans=1),
    "p8-img40-d24-h3-depth3-ca2-avg": dict(
        img_size=40, patch_size=8, embed_dim=24, depth=3, num_heads=3, depth_token_only=2, global_pool="avg",
        init_values=1e-5),
}


def make_timm(kwargs: dict, seed: int = 0) -> Cait:
    kwargs = {"in_chans": 3, "num_classes": 10, **kwargs}
    return randomize_(Cait(**kwargs), seed).eval()


@pytest.mark.parametrize("name", CONFIGS)
def test_matches_timm(name):
    theirs = make_timm(CONFIGS[name])
    ours = from_timm(theirs).eval()
    assert isinstance(ours, CaiT)
    assert_equal_to_timm(ours, theirs, batch(ours), f"cait {name}")


@pytest.mark.parametrize("name", ["cait_xxs24_224"])
def test_matches_timm_registry_model(name):
    """A real timm size (24 blocks, 2 class-attention blocks), randomized, at a small input size."""
    assert assert_registry_model_equal(name) <= ATOL


def test_attention_maps():
    ours = from_timm(make_timm(CONFIGS["p8-img32-d48-h4-depth2-ca1"]))
    maps = ours.attention_maps(batch(ours, n=3))
    n = 16  # 4 x 4 patches: [CLS] is not in the self-attention blocks
    assert [tuple(m.shape) for m in maps] == [(3, 4, n, n)] * 2 + [(3, 4, 1, 1 + n)]
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones_like(m.sum(-1)))
    cls_maps = ours.class_attention_maps(batch(ours, n=3))
    assert len(cls_maps) == 1
    torch.testing.assert_close(cls_maps[0], maps[-1])


def test_class_attention_leaves_patches_unchanged():
    """Class attention only writes to [CLS]: the patches stay as the last self-attention block left them."""
    ours = randomize_(CaiT(CaiTConfig(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)))
    ours.eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        patches = ours.blocks[0](ours.patch_embed(x) + ours.pos_embed)
        torch.testing.assert_close(ours.forward_features(x)[:, 1:], ours.norm(patches))


def test_build_from_config_dict():
    ours = from_timm(make_timm(CONFIGS["p16-img32-d64-h2-depth1-ca2-mlp2-camlp3"]))
    rebuilt = build("cait", ours.cfg.to_dict())
    rebuilt.load_state_dict(ours.state_dict(), strict=True)
    x = batch(ours)
    torch.testing.assert_close(rebuilt.eval()(x), ours.eval()(x))


def _pruned(m: Cait) -> Cait:
    m.prune_intermediate_layers(indices=1)
    return m


@pytest.mark.parametrize("kwargs, edit, message", [
    (dict(global_pool=""), None, "global_pool=''"),
    (dict(act_layer=nn.SiLU), None, "MLP other than"),
    (dict(norm_layer=nn.Identity), None, "final norm other than LayerNorm"),
    (dict(), _pruned, "no class token"),
])
def test_unsupported_raises(kwargs, edit, message):
    theirs = Cait(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3, **kwargs)
    if edit is not None:
        theirs = edit(theirs)
    with pytest.raises(NotImplementedError, match=message):
        from_timm(theirs)
