"""DeiT (vislearn.models.deit) against timm's VisionTransformerDistilled, on randomized weights."""

import pytest
import torch
from timm.models.deit import VisionTransformerDistilled

from vislearn.models.convert import build, from_timm, randomize_
from vislearn.models.deit import DeiTConfig, DistilledVisionTransformer

from .parity import ATOL, assert_equal_to_timm, assert_registry_model_equal, batch

# name -> timm kwargs; every model is tiny so the whole file runs in seconds on one CPU thread
CONFIGS = {
    "p8-img32-d48-h4-depth2": dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4),
    "p16-img32-d64-h2-depth1-mlp2-noqkvbias": dict(img_size=32, patch_size=16, embed_dim=64, depth=1,
                                                   num_heads=2, mlp_ratio=2.0, qkv_bias=False),
    "p16-img48-d32-h4-depth2-layerscale-gray": dict(img_size=48, patch_size=16, embed_dim=32, depth=2,
                                                    num_heads=4, init_values=0.1, in_chans=1),
    "p8-img24-d24-h3-depth3-nohead": dict(img_size=24, patch_size=8, embed_dim=24, depth=3, num_heads=3,
                                          num_classes=0),
}


def make_timm(kwargs: dict, seed: int = 0) -> VisionTransformerDistilled:
    kwargs = {"in_chans": 3, "num_classes": 10, **kwargs}
    return randomize_(VisionTransformerDistilled(**kwargs), seed).eval()


@pytest.mark.parametrize("distilled", [False, True], ids=["averaged", "distilled_training"])
@pytest.mark.parametrize("name", CONFIGS)
def test_matches_timm(name, distilled):
    theirs = make_timm(CONFIGS[name])
    theirs.set_distilled_training(distilled)
    ours = from_timm(theirs)
    assert isinstance(ours, DistilledVisionTransformer) and ours.distilled_training is distilled
    x = batch(ours)
    for mode in ("eval", "train"):  # no dropout or BatchNorm here: train mode is deterministic too
        ours.train(mode == "train"), theirs.train(mode == "train")
        out = ours(x)
        assert isinstance(out, tuple) == (distilled and mode == "train")
        heads = "distilled" if distilled else "averaged"
        assert_equal_to_timm(ours, theirs, x, f"deit {name} {heads} {mode}")


@pytest.mark.parametrize("name", ["deit_tiny_distilled_patch16_224"])
def test_matches_timm_registry_model(name):
    """A real timm size (12 blocks, 3 heads), randomized, at a small input size."""
    assert assert_registry_model_equal(name) <= ATOL


def test_attention_maps():
    ours = from_timm(make_timm(CONFIGS["p8-img32-d48-h4-depth2"]))
    maps = ours.attention_maps(batch(ours, n=3))
    n = 2 + 16  # [CLS], [DIST], 4 x 4 patches
    assert [tuple(m.shape) for m in maps] == [(3, 4, n, n)] * 2
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones_like(m.sum(-1)))
    assert tuple(ours.get_last_selfattention(batch(ours)).shape) == (2, 4, n, n)


def test_set_distilled_training():
    ours = DistilledVisionTransformer(DeiTConfig(img_size=16, patch_size=8, embed_dim=16, depth=1,
                                                 num_heads=2, num_classes=5))
    assert ours.distilled_training is False
    x = torch.randn(2, 1, 16, 16)
    ours.train()
    assert isinstance(ours(x), torch.Tensor)  # ordinary training: the heads are averaged
    ours.set_distilled_training(True)
    cls, dist = ours(x)                       # distillation: one output per head
    assert cls.shape == dist.shape == (2, 5)
    ours.eval()                               # inference always averages, as in timm
    torch.testing.assert_close(ours(x), (cls + dist) / 2)
    ours.set_distilled_training(False)
    ours.train()
    torch.testing.assert_close(ours(x), (cls + dist) / 2)


def test_build_from_config_dict():
    ours = from_timm(make_timm(CONFIGS["p16-img32-d64-h2-depth1-mlp2-noqkvbias"]))
    rebuilt = build("deit", ours.cfg.to_dict())
    rebuilt.load_state_dict(ours.state_dict(), strict=True)
    x = batch(ours)
    torch.testing.assert_close(rebuilt.eval()(x), ours.eval()(x))


def test_config_rejects_non_token_pooling():
    with pytest.raises(ValueError, match="global_pool"):
        DeiTConfig(global_pool="avg")


@pytest.mark.parametrize("kwargs, message", [
    (dict(no_embed_class=True), "no_embed_class"),
    (dict(qk_norm=True), "qk_norm"),
    (dict(act_layer="silu"), "MLP other than"),
])
def test_unsupported_raises(kwargs, message):
    theirs = VisionTransformerDistilled(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                                        num_classes=3, **kwargs)
    with pytest.raises(NotImplementedError, match=message):
        from_timm(theirs)
