"""ResMLP (vislearn.models.resmlp) against timm's MlpMixer of ResBlocks, on randomized weights."""

from functools import partial

import pytest
import timm
import torch
from timm.models.mlp_mixer import Affine as TimmAffine
from timm.models.mlp_mixer import MlpMixer, ResBlock

from vislearn.config import ParameterError
from vislearn.models.convert import build, from_timm, output_diff, randomize_deep_
from vislearn.models.resmlp import Affine, ResMLP, ResMLPConfig, state_dict_from_timm

from .parity import ATOL, batch

# name -> timm MlpMixer kwargs (ResMLP = ResBlock + Affine); tiny, so the file runs in seconds
CONFIGS = {
    "img28-p4-d32-depth2-mlp2-gray": dict(img_size=28, patch_size=4, in_chans=1, embed_dim=32, num_blocks=2,
                                         mlp_ratio=2.0),
    "img32-p8-d48-depth3-ls1e-5": dict(img_size=32, patch_size=8, embed_dim=48, num_blocks=3,
                                      block_layer=partial(ResBlock, init_values=1e-5)),
}


def make_timm(kwargs: dict, seed: int = 0) -> MlpMixer:
    kwargs = {"block_layer": ResBlock, "norm_layer": TimmAffine, "num_classes": 10, "mlp_ratio": 4.0, **kwargs}
    return randomize_deep_(MlpMixer(**kwargs), seed).eval()


@torch.no_grad()
def assert_equal(ours, theirs, x, label: str) -> None:
    diffs = {"logits": output_diff(ours, theirs, x),
             "features": output_diff(ours.forward_features, theirs.forward_features, x)}
    print(f"parity {label}: " + ", ".join(f"{v:.2e} ({k})" for k, v in diffs.items()))
    assert max(diffs.values()) <= ATOL, diffs


def test_matches_timm_registry_model():
    """resmlp_12_224 (12 blocks, D = 384), randomized, at 64 px (16 patches)."""
    theirs = randomize_deep_(timm.create_model("resmlp_12_224", pretrained=False, img_size=64, num_classes=4)).eval()
    ours = from_timm(theirs).eval()
    assert isinstance(ours, ResMLP)
    assert ours.cfg.depth == 12 and ours.cfg.embed_dim == 384 and ours.cfg.mlp_ratio == 4.0
    assert_equal(ours, theirs, batch(ours), "resmlp_12_224")


@pytest.mark.parametrize("name", CONFIGS)
def test_matches_timm(name):
    theirs = make_timm(CONFIGS[name])
    ours = from_timm(theirs).eval()
    assert_equal(ours, theirs, batch(ours), f"resmlp {name}")


def test_parameter_count_equals_timm():
    theirs = timm.create_model("resmlp_12_224", pretrained=False)
    ours = from_timm(theirs)
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in theirs.parameters()) == 15_350_872


def test_affine_has_no_statistics():
    """Affine: two parameters of shape (D,), no buffers, and a token's output depends on that token only."""
    aff = Affine(8)
    with torch.no_grad():
        aff.alpha.normal_(), aff.beta.normal_()
    assert {k: tuple(v.shape) for k, v in aff.state_dict().items()} == {"alpha": (8,), "beta": (8,)}
    assert list(aff.buffers()) == []
    x = torch.randn(4, 5, 8)
    torch.testing.assert_close(aff.train()(x), aff.alpha * x + aff.beta)
    torch.testing.assert_close(aff(x)[:1, :2], aff(x[:1, :2]))   # no mixing across batch or tokens
    torch.testing.assert_close(aff.eval()(x), aff.train()(x))    # no train/eval difference


def test_state_dict_mapping():
    theirs = make_timm(CONFIGS["img28-p4-d32-depth2-mlp2-gray"])
    mapped = state_dict_from_timm(theirs.state_dict())
    assert "patch_embed.proj.weight" in mapped and "stem.proj.weight" not in mapped
    assert mapped["blocks.0.norm1.alpha"].shape == (32,) and theirs.blocks[0].norm1.alpha.shape == (1, 1, 32)
    torch.testing.assert_close(mapped["blocks.1.ls2.gamma"], theirs.blocks[1].ls2.detach())
    assert set(mapped) == set(ResMLP(from_timm(theirs).cfg).state_dict())


def test_token_mixing_maps_are_the_weights():
    """Row i of linear_tokens says how output patch i mixes the inputs: poke input patch j, read column j."""
    ours = from_timm(make_timm(CONFIGS["img28-p4-d32-depth2-mlp2-gray"])).eval()
    maps = ours.token_mixing_maps()
    assert maps.shape == (2, 49, 7, 7)
    block, j = ours.blocks[0], 10
    x = torch.zeros(1, 49, 32)
    x[0, j] = 1.0
    with torch.no_grad():
        y = block.linear_tokens(x.transpose(1, 2)).transpose(1, 2) - block.linear_tokens.bias[:, None]  # (1, 49, 32)
    torch.testing.assert_close(y[0, :, 0], maps[0].reshape(49, 49)[:, j])


def test_fashion_mnist_shapes():
    model = ResMLP(ResMLPConfig()).eval()
    x = torch.randn(3, 1, 28, 28)
    assert model(x).shape == (3, 10)
    assert model.forward_features(x).shape == (3, 49, 128)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (3, 128)


def test_build_from_config_dict():
    ours = from_timm(make_timm(CONFIGS["img32-p8-d48-depth3-ls1e-5"]))
    assert ours.cfg.init_values == pytest.approx(ours.blocks[0].ls1.gamma[0].item())
    rebuilt = build("resmlp", ours.cfg.to_dict())
    rebuilt.load_state_dict(ours.state_dict(), strict=True)
    x = batch(ours)
    torch.testing.assert_close(rebuilt.eval()(x), ours.eval()(x))


def test_bad_config_raises():
    with pytest.raises(ParameterError, match=r"img_size=30 is not a multiple of patch_size=4; allowed: \[1, 2, 3, 5"):
        ResMLPConfig(img_size=30, patch_size=4)
    with pytest.raises(ParameterError, match=r"depth=-1 must be an integer >= 0"):
        ResMLPConfig(depth=-1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(block_layer=None), "blocks other than ResMLP's ResBlock"),   # MLP-Mixer's MixerBlock
    (dict(global_pool=""), "global_pool=''"),
    (dict(stem_norm=True), "normalized patch embedding"),
])
def test_unsupported_raises(kwargs, message):
    kwargs = {"block_layer": ResBlock, "norm_layer": TimmAffine, "mlp_ratio": 4.0, **kwargs}
    if kwargs["block_layer"] is None:
        del kwargs["block_layer"], kwargs["norm_layer"], kwargs["mlp_ratio"]
    theirs = MlpMixer(img_size=16, patch_size=8, embed_dim=16, num_blocks=1, num_classes=3, **kwargs)
    with pytest.raises(NotImplementedError, match=message):
        from_timm(theirs)
