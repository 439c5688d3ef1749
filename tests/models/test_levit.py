"""LeViT (vislearn.models.levit) against timm's Levit / LevitDistilled, on randomized weights."""

import pytest
import timm
import torch
from timm.models.levit import Levit, LevitDistilled

from vislearn.config import ParameterError
from vislearn.models.convert import build, from_timm, output_diff, randomize_deep_
from vislearn.models.levit import LeViT, LeViTConfig, relative_bias_index

from .parity import ATOL, assert_equal_to_timm, batch


def prepared(model, seed: int = 0):
    """Randomized weights and BatchNorm statistics; train() then eval() drops timm's cached biases."""
    return randomize_deep_(model, seed).train().eval()


@pytest.mark.parametrize("name", ["levit_128s", "levit_192"])
def test_matches_timm_registry_model(name):
    """Real timm sizes (3 stages, 2 subsample blocks), randomized, at 64 px (a 4 x 4 token grid)."""
    theirs = prepared(timm.create_model(name, pretrained=False, img_size=64, num_classes=4))
    assert isinstance(theirs, LevitDistilled)
    ours = from_timm(theirs).eval()
    assert isinstance(ours, LeViT) and ours.cfg.distilled
    assert_equal_to_timm(ours, theirs, batch(ours), name)


@pytest.mark.parametrize("kwargs", [
    dict(stem_type="s8", act_layer="silu", embed_dim=(32, 48), key_dim=8, depth=(1, 2), num_heads=(2, 3),
         attn_ratio=1.0, mlp_ratio=3.0),
    dict(stem_type="s16", embed_dim=(32, 48, 64), key_dim=16, depth=(1, 1, 1), num_heads=(2, 3, 4)),
], ids=["s8-silu-2stages", "s16-3stages"])
@pytest.mark.parametrize("cls", [Levit, LevitDistilled])
def test_matches_timm_custom(cls, kwargs):
    theirs = prepared(cls(img_size=32, in_chans=1, num_classes=10, **kwargs), seed=1)
    ours = from_timm(theirs).eval()
    assert ours.cfg.distilled == (cls is LevitDistilled)
    assert_equal_to_timm(ours, theirs, batch(ours), f"{cls.__name__} {kwargs['stem_type']}")


def test_distilled_training_returns_both_heads():
    theirs = prepared(timm.create_model("levit_128s", img_size=64, num_classes=4))
    theirs.set_distilled_training(True)
    ours = from_timm(theirs)
    x = batch(ours, n=4)
    ours.train(), theirs.train()   # BatchNorm on batch statistics, both heads returned
    out = ours(x)
    assert isinstance(out, tuple) and len(out) == 2
    diff = output_diff(ours, theirs, x)
    print(f"parity levit_128s distilled training: {diff:.2e}")
    assert diff <= ATOL
    ours.eval()
    feats = ours.forward_head(ours.forward_features(x), pre_logits=True)  # (B, D): eval averages the heads
    torch.testing.assert_close(ours(x), (ours.head(feats) + ours.head_dist(feats)) / 2)


def test_bias_index_on_3x3_grid():
    """|d_row| * 3 + |d_col| for the 9 cells in row-major order, written out by hand."""
    expected = torch.tensor([
        [0, 1, 2, 3, 4, 5, 6, 7, 8],
        [1, 0, 1, 4, 3, 4, 7, 6, 7],
        [2, 1, 0, 5, 4, 3, 8, 7, 6],
        [3, 4, 5, 0, 1, 2, 3, 4, 5],
        [4, 3, 4, 1, 0, 1, 4, 3, 4],
        [5, 4, 3, 2, 1, 0, 5, 4, 3],
        [6, 7, 8, 3, 4, 5, 0, 1, 2],
        [7, 6, 7, 4, 3, 4, 1, 0, 1],
        [8, 7, 6, 5, 4, 3, 2, 1, 0]])
    assert torch.equal(relative_bias_index(3), expected)
    # subsampling: queries at cells (0, 0), (0, 2), (2, 0), (2, 2) of the 3 x 3 keys
    assert torch.equal(relative_bias_index(3, stride=2), expected[[0, 2, 6, 8]])


def test_bias_maps_match_timm_gather():
    """The (heads, R, R) offset map is the table timm gathers with its own attention_bias_idxs."""
    theirs = prepared(timm.create_model("levit_128s", img_size=64, num_classes=4))
    ours = from_timm(theirs)
    maps = ours.attention_bias_maps()
    timm_attn = [m for m in theirs.modules() if hasattr(m, "attention_bias_idxs")]
    assert len(maps) == len(timm_attn) == 2 + 1 + 3 + 1 + 4   # blocks and subsample blocks, stage by stage
    for table, ref in zip(maps, timm_attn, strict=True):
        H, R, _ = table.shape
        grid = ref.resolution[0]
        assert (H, R) == (ref.num_heads, grid)
        rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        keys = torch.stack([rows.flatten(), cols.flatten()])                 # (2, N_k)
        stride = getattr(ref, "stride", 1)                                  # 2 in a subsample block
        qrows, qcols = torch.meshgrid(torch.arange(0, grid, stride), torch.arange(0, grid, stride), indexing="ij")
        q = torch.stack([qrows.flatten(), qcols.flatten()])                   # (2, N_q)
        d = (q[:, :, None] - keys[:, None, :]).abs()                          # (2, N_q, N_k)
        torch.testing.assert_close(table[:, d[0], d[1]], ref.attention_biases[:, ref.attention_bias_idxs].detach())


def test_fashion_mnist_shapes_and_attention():
    model = LeViT(LeViTConfig()).eval()   # 28 x 28 x 1, 10 classes: grids 7, 4, 2
    x = torch.randn(3, 1, 28, 28)
    assert [s.grid for s in model.stages] == [7, 4, 2]
    assert model(x).shape == (3, 10)
    feats, maps = model.forward_features(x, return_attention=True)
    assert feats.shape == (3, 4, 128)
    assert [tuple(m.shape) for m in maps] == (
        [(3, 4, 49, 49)] * 2 + [(3, 64 // 16, 16, 49)] + [(3, 6, 16, 16)] * 2 + [(3, 96 // 16, 4, 16)]
        + [(3, 8, 4, 4)] * 2)
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones_like(m.sum(-1)))
    assert [tuple(b.shape) for b in model.attention_bias_maps()][:3] == [(4, 7, 7), (4, 7, 7), (4, 7, 7)]
    assert model.no_weight_decay() == {n for n, _ in model.named_parameters() if n.endswith("attention_biases")}


def test_build_from_config_dict():
    theirs = prepared(Levit(img_size=32, in_chans=1, num_classes=3, embed_dim=(32, 48), key_dim=8, depth=(1, 1),
                            num_heads=(2, 3), stem_type="s8"))
    ours = from_timm(theirs)
    rebuilt = build("levit", {k: list(v) if isinstance(v, tuple) else v for k, v in ours.cfg.to_dict().items()})
    rebuilt.load_state_dict(ours.state_dict(), strict=True)
    x = batch(ours)
    torch.testing.assert_close(rebuilt.eval()(x), ours.eval()(x))


@pytest.mark.parametrize("overrides, message", [
    (dict(act="relu"), r"act='relu' is not allowed; choose one of: 'hardswish', 'silu'"),
    (dict(stem_stride=2), r"stem_stride=2 is not allowed; choose one of: 4, 8, 16"),
    (dict(depth=(1, 1)), r"one entry per stage"),
    (dict(key_dim=0), r"key_dim=0 must be an integer >= 1"),
])
def test_bad_config_raises(overrides, message):
    with pytest.raises(ParameterError, match=message):
        LeViTConfig(**overrides)


@pytest.mark.parametrize("kwargs, message", [
    (dict(use_conv=True), "convolutional mode"),
    (dict(global_pool=""), "global_pool=''"),
    (dict(down_op="subsample", attn_act_layer="relu"), "attention activation"),
])
def test_unsupported_raises(kwargs, message):
    theirs = Levit(img_size=32, num_classes=3, embed_dim=(32, 48), key_dim=8, depth=(1, 1), num_heads=(2, 3),
                   stem_type="s8", **kwargs)
    with pytest.raises(NotImplementedError, match=message):
        from_timm(theirs)
