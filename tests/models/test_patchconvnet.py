"""PatchConvNet (vislearn.models.patchconvnet): timm has no PatchConvNet, so its pieces are proven equal
to timm's (the pooling block, squeeze-excitation) and to the official layer sequence, and S60's size to
the paper's."""

from functools import partial

import pytest
import torch
from timm.models._efficientnet_blocks import SqueezeExcite as TimmSqueezeExcite
from timm.models.cait import LayerScaleBlockClassAttn as TimmClassAttnBlock
from torch import nn

from vislearn.config import ParameterError
from vislearn.models.cait import LayerScaleBlockClassAttn
from vislearn.models.convert import build, randomize_
from vislearn.models.patchconvnet import (
    ConvMixer,
    PatchConvNet,
    PatchConvNetConfig,
    SqueezeExcite,
    patchconvnet_config,
)

from .parity import ATOL


@pytest.mark.parametrize("qkv_bias, eps", [(True, 1e-6), (False, 1e-5)], ids=["S60-style", "timm-defaults"])
def test_pooling_block_equals_timm_class_attention(qkv_bias, eps):
    """The attention-pooling block is timm's LayerScaleBlockClassAttn(dim, num_heads=1, mlp_ratio=3)."""
    dim = 48
    theirs = TimmClassAttnBlock(dim, num_heads=1, mlp_ratio=3.0, qkv_bias=qkv_bias,
                                norm_layer=partial(nn.LayerNorm, eps=eps))
    theirs = randomize_(theirs, seed=0).eval()
    model = PatchConvNet(PatchConvNetConfig(embed_dim=dim, depth=1, qkv_bias=qkv_bias, norm_eps=eps))
    ours = model.blocks_token_only[0].eval()
    assert isinstance(ours, LayerScaleBlockClassAttn) and ours.attn.num_heads == 1
    ours.load_state_dict(theirs.state_dict(), strict=True)
    g = torch.Generator().manual_seed(1)
    x, cls = torch.randn(3, 49, dim, generator=g), torch.randn(3, 1, dim, generator=g)
    with torch.no_grad():
        diff = (ours(x, cls) - theirs(x, cls)).abs().max().item()
        explicit, attn = ours(x, cls, return_attention=True)
    print(f"parity pooling block ({'qkv bias' if qkv_bias else 'no qkv bias'}, eps {eps}): {diff:.2e}")
    assert diff <= ATOL
    torch.testing.assert_close(explicit, ours(x, cls).detach())
    assert attn.shape == (3, 1, 1, 50)


def test_squeeze_excite_equals_timm():
    theirs = randomize_(TimmSqueezeExcite(32, rd_ratio=0.25), seed=2).eval()
    ours = SqueezeExcite(32, rd_ratio=0.25)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 32, 5, 5)
    with torch.no_grad():
        diff = (ours(x) - theirs(x)).abs().max().item()
    print(f"parity squeeze-excite: {diff:.2e}")
    assert diff <= ATOL


def test_conv_mixer_equals_official_sequence():
    """The official Conv_blocks_se, written out with torch layers and timm's SqueezeExcite."""
    dim, grid = 16, 5
    official = nn.Sequential(
        nn.Conv2d(dim, dim, kernel_size=1), nn.GELU(),
        nn.Conv2d(dim, dim, groups=dim, kernel_size=3, padding=1, stride=1, bias=True), nn.GELU(),
        TimmSqueezeExcite(dim, rd_ratio=0.25), nn.Conv2d(dim, dim, kernel_size=1))
    official = randomize_(official, seed=4).eval()
    ours = ConvMixer(dim, grid=grid)
    ours.qkv_pos.load_state_dict(official.state_dict(), strict=True)
    tokens = torch.randn(2, grid * grid, dim)
    with torch.no_grad():
        image = tokens.transpose(1, 2).reshape(2, dim, grid, grid)     # the official reshape
        expected = official(image).reshape(2, dim, grid * grid).transpose(1, 2)
        diff = (ours(tokens) - expected).abs().max().item()
    print(f"parity conv mixer: {diff:.2e}")
    assert diff <= ATOL


def test_s60_size_and_shapes():
    """S60: D = 384, 60 blocks, 16 px patches, one pooling block of 1 head; 25.2 M parameters (paper, Table 1)."""
    cfg = patchconvnet_config("S60", img_size=64)     # parameters do not depend on the input size
    assert (cfg.embed_dim, cfg.depth, cfg.patch_size, cfg.num_heads, cfg.depth_token_only,
            cfg.mlp_ratio_clstk, cfg.qkv_bias) == (384, 60, 16, 1, 1, 3.0, True)
    model = PatchConvNet(cfg).eval()
    n = sum(p.numel() for p in model.parameters())
    print(f"PatchConvNet-S60: {n / 1e6:.3f} M parameters")
    assert abs(n - 25.2e6) <= 0.05e6
    keys = set(model.state_dict())   # the official names, so its checkpoints load
    assert {"cls_token", "patch_embed.proj.0.0.weight", "patch_embed.proj.6.0.weight",
            "blocks.59.attn.qkv_pos.4.conv_reduce.weight", "blocks.0.gamma_1", "blocks_token_only.0.attn.q.weight",
            "blocks_token_only.0.gamma_2", "norm.weight", "head.weight"} <= keys
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats, maps = model.forward_features(x, return_attention=True)
        assert feats.shape == (2, 1 + 16, 384)
        assert [tuple(m.shape) for m in maps] == [(2, 1, 1, 17)]
        assert model.forward_head(feats).shape == (2, 1000)
    assert model.pooling_attention(x).shape == (2, 4, 4)


def test_pooling_attention_map():
    model = randomize_(PatchConvNet(PatchConvNetConfig(embed_dim=32, depth=2, num_heads=2)), seed=5).eval()
    x = torch.randn(3, 1, 28, 28)
    pooled = model.pooling_attention(x)              # (B, 7, 7)
    attn = model.attention_maps(x)[-1]               # (B, heads, 1, 1 + 49)
    assert pooled.shape == (3, 7, 7) and attn.shape == (3, 2, 1, 50)
    torch.testing.assert_close(pooled.flatten(1), attn[:, :, 0, 1:].mean(1))
    torch.testing.assert_close(pooled.flatten(1).sum(1) + attn[:, :, 0, 0].mean(1), torch.ones(3))
    with torch.no_grad():   # the logits read [CLS], which only the pooling block wrote
        feats = model.forward_features(x)
        torch.testing.assert_close(model(x), model.head(feats[:, 0]))


def test_fashion_mnist_shapes():
    model = PatchConvNet(PatchConvNetConfig()).eval()   # 28 x 28 x 1, 4 px patches: a 7 x 7 grid
    x = torch.randn(2, 1, 28, 28)
    assert model.grid == 7
    assert model(x).shape == (2, 10)
    assert model.forward_features(x).shape == (2, 50, 64)
    assert model.no_weight_decay() == {"cls_token"}


def test_build_from_config_dict():
    model = randomize_(PatchConvNet(PatchConvNetConfig(embed_dim=32, depth=2)), seed=6)
    rebuilt = build("patchconvnet", model.cfg.to_dict())
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))


@pytest.mark.parametrize("make, message", [
    (lambda: PatchConvNetConfig(patch_size=3), r"patch_size=3 is not allowed; choose one of: 2, 4, 8, 16"),
    (lambda: PatchConvNetConfig(patch_size=8, embed_dim=30), r"embed_dim=30 must be a multiple of patch_size / 2 = 4"),
    (lambda: PatchConvNetConfig(depth_token_only=0), r"depth_token_only=0 must be an integer >= 1"),
    (lambda: patchconvnet_config("S30"), r"size='S30' is not allowed; choose one of: 'S60', 'S120', 'B60'"),
])
def test_bad_config_raises(make, message):
    with pytest.raises(ParameterError, match=message):
        make()
