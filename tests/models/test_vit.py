"""Parity of vislearn's ViT with timm's VisionTransformer, and its own invariants."""

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT

from vislearn import from_timm
from vislearn.models.convert import ConversionMismatch, build, max_abs_diff, randomize_
from vislearn.models.vit import VisionTransformer, ViTConfig

# (name, timm kwargs): patch size, image size, channels, depth, heads, mlp ratio, qkv bias, pooling...
CONFIGS = {
    "fmnist_p4": dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=3, num_heads=4,
                      mlp_ratio=2.0),
    "rgb_p8_avg": dict(img_size=32, patch_size=8, in_chans=3, num_classes=7, embed_dim=48, depth=2, num_heads=3,
                       global_pool="avg"),
    "rgb_p16_nobias": dict(img_size=64, patch_size=16, in_chans=3, num_classes=5, embed_dim=32, depth=4,
                           num_heads=2, mlp_ratio=3.0, qkv_bias=False),
    "no_cls_avg_layerscale": dict(img_size=32, patch_size=4, in_chans=2, num_classes=3, embed_dim=24, depth=2,
                                  num_heads=6, class_token=False, global_pool="avg", init_values=1e-5),
    "headless_deep": dict(img_size=24, patch_size=6, in_chans=1, num_classes=0, embed_dim=16, depth=6, num_heads=1,
                          mlp_ratio=1.5),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_matches_timm(name):
    timm_model = randomize_(TimmViT(**CONFIGS[name]), seed=1).eval()
    ours = from_timm(timm_model).eval()
    x = torch.randn(3, CONFIGS[name]["in_chans"], CONFIGS[name]["img_size"], CONFIGS[name]["img_size"],
                    generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        diff = (ours(x) - timm_model(x)).abs().max().item()
        feat_diff = (ours.forward_features(x) - timm_model.forward_features(x)).abs().max().item()
    print(f"parity {name}: max|ours - timm| = {diff:.2e} (logits), {feat_diff:.2e} (features)")
    assert diff <= 1e-5 and feat_diff <= 1e-5


def test_matches_timm_registry_model():
    m = randomize_(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=4)).eval()
    assert max_abs_diff(from_timm(m), m) <= 1e-5


@pytest.mark.parametrize("kwargs, feature", [
    (dict(reg_tokens=2), "register tokens"),
    (dict(no_embed_class=True), "no_embed_class"),
    (dict(qk_norm=True), "qk_norm"),
    (dict(pre_norm=True), "pre_norm"),
    (dict(global_pool="map"), "global_pool='map'"),
    (dict(global_pool="max"), "global_pool='max'"),
    (dict(fc_norm=False, global_pool="avg"), "final norm"),
    (dict(act_layer="relu"), "MLP other than"),
])
def test_unsupported_configs_raise(kwargs, feature):
    base = dict(img_size=16, patch_size=8, in_chans=1, num_classes=2, embed_dim=8, depth=1, num_heads=2)
    with pytest.raises(NotImplementedError, match=feature):
        from_timm(TimmViT(**{**base, **kwargs}))


def test_unknown_timm_class_raises():
    with pytest.raises(NotImplementedError, match="no converter for timm's Linear"):
        from_timm(torch.nn.Linear(2, 2))


def test_verification_catches_a_mismatch(monkeypatch):
    import vislearn.models.convert as models

    def broken(m):
        ours = models.vit_from_timm(m)
        with torch.no_grad():
            ours.head.bias.add_(1.0)
        return ours

    monkeypatch.setitem(models.CONVERTERS, "VisionTransformer", broken)
    with pytest.raises(ConversionMismatch, match="differ"):
        from_timm(TimmViT(img_size=16, patch_size=8, in_chans=1, num_classes=2, embed_dim=8, depth=1, num_heads=2))


def test_attention_maps_and_shapes():
    m = VisionTransformer(ViTConfig(img_size=28, patch_size=4, embed_dim=32, depth=3, num_heads=4)).eval()
    x = torch.randn(2, 1, 28, 28)
    feats = m.forward_features(x)
    assert feats.shape == (2, 50, 32)
    assert m.forward_head(feats, pre_logits=True).shape == (2, 32)
    assert m(x).shape == (2, 10)
    maps = m.attention_maps(x)
    assert len(maps) == 3 and maps[0].shape == (2, 4, 50, 50)
    assert torch.allclose(maps[-1].sum(-1), torch.ones(2, 4, 50), atol=1e-5)
    assert torch.equal(m.get_last_selfattention(x), maps[-1])
    feats2, _ = m.forward_features(x, return_attention=True)
    assert torch.allclose(feats, feats2, atol=1e-5)  # the explicit path equals the fused one


def test_attention_still_visible_when_timm_fuses(monkeypatch):
    from timm.layers import set_fused_attn

    set_fused_attn(True)
    try:
        timm_model = TimmViT(img_size=16, patch_size=8, in_chans=1, num_classes=2, embed_dim=8, depth=2, num_heads=2)
        ours = from_timm(timm_model)
        assert len(ours.attention_maps(torch.randn(1, 1, 16, 16))) == 2
    finally:
        set_fused_attn(False)
        set_fused_attn(True)  # timm's default: fused where torch supports it


def test_config_validation_and_build():
    with pytest.raises(Exception, match="global_pool='mean'"):
        ViTConfig(global_pool="mean")
    with pytest.raises(ValueError, match="class_token=True"):
        ViTConfig(class_token=False, global_pool="token")
    cfg = ViTConfig(embed_dim=16, depth=1, num_heads=2)
    assert isinstance(build("vit", cfg.to_dict()), VisionTransformer)


@pytest.mark.parametrize("config, words", [
    ({"depth": "six"}, "ViTConfig.depth='six' must be an integer"),
    ({"mlp_ratio": "2"}, "ViTConfig.mlp_ratio='2' must be a number"),
    ({"qkv_bias": 1}, "ViTConfig.qkv_bias=1 must be true or false"),
    ({"dpeth": 6}, "ViTConfig field='dpeth' is not allowed; choose one of: 'img_size'"),
])
def test_build_names_a_bad_config_field(config, words):
    from vislearn.config import ParameterError

    with pytest.raises(ParameterError, match=words.replace("(", r"\(")):
        build("vit", config)
    assert build("vit", {"depth": 1, "mlp_ratio": 2}).cfg.mlp_ratio == 2   # an int is a number
