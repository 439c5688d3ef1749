"""XCiT (vislearn.models.xcit) against timm's Xcit, on randomized weights and BatchNorm statistics."""

import pytest
import torch
from timm.models.xcit import Xcit
from torch import nn

from vislearn.config import ParameterError
from vislearn.models.convert import build, from_timm, randomize_
from vislearn.models.xcit import XCiT, XCiTConfig

from .parity import ATOL, assert_equal_to_timm, assert_registry_model_equal, batch

# name -> timm kwargs; every model is tiny so the whole file runs in seconds on one CPU thread
CONFIGS = {
    "p8-img32-d48-h4-depth2-ca1-tokensnorm0": dict(
        img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, cls_attn_layers=1, tokens_norm=False),
    "p16-img32-d64-h2-depth1-ca2-tokensnorm1": dict(
        img_size=32, patch_size=16, embed_dim=64, depth=1, num_heads=2, cls_attn_layers=2, tokens_norm=True),
    "p16-img48-d32-h4-depth2-ca2-tokensnorm1-avg-noqkvbias": dict(
        img_size=48, patch_size=16, embed_dim=32, depth=2, num_heads=4, cls_attn_layers=2, tokens_norm=True,
        global_pool="avg", qkv_bias=False, mlp_ratio=2.0),
    "p8-img40-d24-h3-depth2-ca2-tokensnorm0-avg-nopos-gray": dict(
        img_size=40, patch_size=8, embed_dim=24, depth=2, num_heads=3, cls_attn_layers=2, tokens_norm=False,
        global_pool="avg", use_pos_embed=False, in_chans=1, eta=1e-5),
}


def make_timm(kwargs: dict, seed: int = 0) -> Xcit:
    kwargs = {"in_chans": 3, "num_classes": 10, **kwargs}
    return randomize_(Xcit(**kwargs), seed).eval()


@pytest.mark.parametrize("name", CONFIGS)
def test_matches_timm(name):
    theirs = make_timm(CONFIGS[name])
    ours = from_timm(theirs).eval()
    assert isinstance(ours, XCiT)
    assert_equal_to_timm(ours, theirs, batch(ours), f"xcit {name}")
    # the Fourier encoding and the conv stem work at any resolution: so must ours
    assert_equal_to_timm(ours, theirs, batch(ours, size=ours.cfg.img_size + 16), f"xcit {name} +16 px")


@pytest.mark.parametrize("name", ["xcit_nano_12_p16_224", "xcit_tiny_12_p8_224"])
def test_matches_timm_registry_model(name):
    """Real timm sizes (nano: tokens_norm=False, tiny: True), randomized, at a small input size."""
    assert assert_registry_model_equal(name) <= ATOL


def test_tokens_norm_changes_patches_not_cls():
    """tokens_norm only changes what the patch tokens carry; with global_pool='avg' that is visible."""
    kwargs = dict(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, cls_attn_layers=1)
    a = randomize_(XCiT(XCiTConfig(**kwargs, tokens_norm=False))).eval()
    b = XCiT(XCiTConfig(**kwargs, tokens_norm=True)).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        fa, fb = a.forward_features(x), b.forward_features(x)
    torch.testing.assert_close(fa[:, 0], fb[:, 0])
    assert (fa[:, 1:] - fb[:, 1:]).abs().max() > 1e-3


def test_attention_maps():
    ours = from_timm(make_timm(CONFIGS["p8-img32-d48-h4-depth2-ca1-tokensnorm0"]))
    maps = ours.attention_maps(batch(ours, n=3))
    d, n = 48 // 4, 16  # channels per head; 4 x 4 patches
    assert [tuple(m.shape) for m in maps] == [(3, 4, d, d)] * 2 + [(3, 4, 1, 1 + n)]
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones_like(m.sum(-1)))
    assert len(ours.class_attention_maps(batch(ours))) == 1


def test_build_from_config_dict():
    ours = from_timm(make_timm(CONFIGS["p16-img32-d64-h2-depth1-ca2-tokensnorm1"]))
    rebuilt = build("xcit", ours.cfg.to_dict())
    rebuilt.load_state_dict(ours.state_dict(), strict=True)
    x = batch(ours)
    torch.testing.assert_close(rebuilt.eval()(x), ours.eval()(x))


def test_config_rejects_other_patch_sizes():
    with pytest.raises(ParameterError, match="patch_size"):
        XCiTConfig(patch_size=4)


def _other_fourier_temperature(m: Xcit) -> Xcit:
    m.pos_embed.temperature = 100
    return m


def _batch_statistics_in_eval(m: Xcit) -> Xcit:
    m.blocks[0].local_mp.bn.track_running_stats = False
    return m


@pytest.mark.parametrize("kwargs, edit, message", [
    (dict(global_pool=""), None, "global_pool=''"),
    (dict(act_layer=nn.SiLU), None, "stem activation other than GELU"),
    (dict(), _other_fourier_temperature, "PositionalEncodingFourier"),
    (dict(), _batch_statistics_in_eval, "local patch interaction"),
])
def test_unsupported_raises(kwargs, edit, message):
    theirs = Xcit(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3, **kwargs)
    if edit is not None:
        theirs = edit(theirs)
    with pytest.raises(NotImplementedError, match=message):
        from_timm(theirs)
