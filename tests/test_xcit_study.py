"""vislearn.xcit_study: power-law fits, crossovers, peak memory, position-embedding interpolation,
LPI switches and the notebook-04 recipes."""

import math

import numpy as np
import pytest
import torch
from timm.layers import resample_abs_pos_embed

from vislearn import train
from vislearn.config import ParameterError
from vislearn.vit import VisionTransformer, ViTConfig
from vislearn.xcit import XCA, XCiT, XCiTConfig
from vislearn.xcit_study import (
    BACKGROUND,
    PeakMemory,
    accuracy_at,
    at_resolution,
    crossover,
    fit_power_law,
    measure_scaling,
    pad_to_32,
    peak_memory,
    random_zoom,
    resize_images,
    resize_pos_embed,
    scaling_summary,
    series,
    switch_off_lpi_,
    token_influence,
    vit_at_resolution,
    without_lpi,
)

from .conftest import randomize_

# --- fits and crossovers on synthetic data with known answers ----------------------------------------------


@pytest.mark.parametrize("slope, coef", [(1.0, 0.003), (2.0, 1e-6), (1.5, 3.0), (0.5, 42.0)])
def test_fit_power_law_recovers_exact_slope(slope, coef):
    n = np.array([16, 64, 256, 1024, 4096])
    fit = fit_power_law(n, coef * n ** slope)
    assert fit.slope == pytest.approx(slope, abs=1e-9)
    assert fit.coef == pytest.approx(coef, rel=1e-9)
    np.testing.assert_allclose(fit(n), coef * n ** slope, rtol=1e-9)


def test_fit_power_law_uses_only_the_long_end():
    n = np.array([16, 32, 64, 512, 1024, 2048, 4096], dtype=float)
    y = np.where(n < 512, 5.0, 1e-3 * n ** 2)   # flat overheads on short sequences, quadratic on long ones
    fit = fit_power_law(n, y, min_n=512)
    assert fit.slope == pytest.approx(2.0, abs=1e-9) and (fit.n_min, fit.n_max) == (512, 4096)
    assert fit_power_law(n, y).slope < 1.9        # the whole range mixes both regimes
    with pytest.raises(ValueError, match="at least 2 points"):
        fit_power_law(n, y, min_n=4096)


def test_crossover_of_a_quadratic_and_a_linear_curve():
    n = 2.0 ** np.arange(3, 13)                    # 8 ... 4096
    quadratic, linear = 1e-3 * n ** 2, 0.1 * n     # equal at n = 100
    assert crossover(n, quadratic, linear) == pytest.approx(100.0, rel=1e-9)
    assert crossover(n, linear, quadratic) is None                      # linear never ends above
    assert crossover(n, 100 * quadratic, linear) == n[0]                 # above everywhere: at or below n[0]
    assert crossover(n, 10 * quadratic, linear) == pytest.approx(10.0, rel=1e-9)


def test_crossover_takes_the_last_crossing():
    n = np.array([10.0, 20.0, 40.0, 80.0])
    a = np.array([2.0, 0.5, 1.0, 4.0])             # above, below (noise), equal, above
    b = np.ones(4)
    assert crossover(n, a, b) == pytest.approx(40.0)


def test_measure_scaling_and_summary():
    rows = measure_scaling([16, 64, 256], dim=32, heads=2, repeats=2, min_seconds=0.0)
    assert len(rows) == 9 and {r["layer"] for r in rows} == {"self-attention", "self-attention (fused)", "XCA"}
    assert all(r["ms"] > 0 and r["peak_mib"] > 0 for r in rows)
    n, mib = series(rows, "self-attention", "peak_mib")
    assert list(n) == [16, 64, 256] and mib[-1] > 10 * mib[0]  # the N x N weights
    summary = scaling_summary(rows, min_tokens=64)
    assert [s["layer"] for s in summary] == ["self-attention", "self-attention (fused)", "XCA"]
    # memory is counted exactly: the explicit attention weights grow as N^2, XCA's activations as N
    sa, xca = summary[0], summary[2]
    assert sa["memory slope"] > 1.6 and 0.8 < xca["memory slope"] < 1.2
    with pytest.raises(ParameterError, match="clock"):
        measure_scaling([16], clock="gpu")
    with pytest.raises(ValueError, match="threads=1"):
        measure_scaling([16], threads=2, clock="cpu")


# --- peak memory ---------------------------------------------------------------------------------------------


def test_peak_memory_counts_new_tensors_and_frees():
    x = torch.randn(1000)                          # made outside: not counted

    def f():
        a = torch.empty(1000, dtype=torch.float32)  # 4,000 bytes
        b = torch.empty(500, dtype=torch.float64)   # 4,000 bytes: both alive -> 8,000
        del a, b
        c = x * 2                                   # 4,000 bytes, after a and b were freed
        return c.view(10, 100)                      # a view: nothing new

    assert peak_memory(f) == 8000
    with PeakMemory() as meter:
        y = x[:10]                                  # a view of an input
        x.add_(1)                                   # in place
    assert meter.peak == 0 and y.shape == (10,)


def test_peak_memory_of_attention_weights():
    """The explicit path of our Attention stores (B, h, N, N) weights: at least h * N^2 * 4 bytes."""
    layer = XCA(32, 2).eval()
    x = torch.randn(1, 512, 32)
    xca_peak = peak_memory(lambda: layer(x))
    assert 512 * 32 * 4 <= xca_peak < 20 * 512 * 32 * 4   # a few copies of (N, D), no N x N


# --- XCA itself --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens", [1, 7, 300])
def test_xca_shapes_and_channel_attention_rows_sum_to_one(tokens):
    layer = randomize_(XCA(48, 4)).eval()
    x = torch.randn(2, tokens, 48)
    with torch.no_grad():
        out, attn = layer(x, return_attention=True)
    assert out.shape == (2, tokens, 48)
    assert attn.shape == (2, 4, 12, 12)                  # d x d per head, whatever the number of tokens
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, 12))


# --- position embeddings and resolution ---------------------------------------------------------------------


def test_resize_pos_embed_shapes_identity_and_timm():
    pe = torch.randn(1, 1 + 16, 24)
    assert resize_pos_embed(pe, 4) is pe                                    # same grid: unchanged
    for grid in (3, 6, 8):
        ours = resize_pos_embed(pe, grid)
        assert ours.shape == (1, 1 + grid * grid, 24)
        torch.testing.assert_close(ours[:, :1], pe[:, :1])                  # [CLS] keeps its embedding
        torch.testing.assert_close(ours, resample_abs_pos_embed(pe, [grid, grid], num_prefix_tokens=1))
    assert resize_pos_embed(pe, (2, 5)).shape == (1, 11, 24)
    with pytest.raises(ValueError, match="square"):
        resize_pos_embed(torch.randn(1, 1 + 15, 8), 4)


def test_vit_at_resolution():
    vit = randomize_(VisionTransformer(ViTConfig(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2)))
    vit.eval()
    x = torch.randn(2, 1, 32, 32)
    same = vit_at_resolution(vit, 32)
    torch.testing.assert_close(same(x), vit(x))                                # identity at the same size
    big = vit_at_resolution(vit, 64)
    assert big.pos_embed.shape == (1, 1 + 64, 16) and big.cfg.img_size == 64 and not big.training
    assert big(torch.randn(2, 1, 64, 64)).shape == (2, 10)
    assert vit.cfg.img_size == 32 and vit.pos_embed.shape == (1, 17, 16)      # the original is untouched
    xcit = XCiT(XCiTConfig(img_size=32, embed_dim=16, depth=1, num_heads=2, cls_attn_layers=1))
    assert at_resolution(xcit, 64) is xcit
    with pytest.raises(TypeError):
        at_resolution(torch.nn.Linear(2, 2), 64)


def test_pad_and_resize():
    x = torch.randn(3, 1, 28, 28)
    padded = pad_to_32(x)
    assert padded.shape == (3, 1, 32, 32)
    torch.testing.assert_close(padded[:, :, 2:30, 2:30], x)
    assert (padded[:, :, :2] == BACKGROUND).all() and math.isclose(BACKGROUND, -0.2860 / 0.3530, rel_tol=1e-9)
    assert resize_images(padded, 32) is padded
    assert resize_images(padded, 48).shape == (3, 1, 48, 48)
    flat = torch.full((1, 1, 32, 32), 0.7)
    torch.testing.assert_close(resize_images(flat, 64), torch.full((1, 1, 64, 64), 0.7))


def test_random_zoom():
    x = pad_to_32(torch.randn(6, 1, 28, 28))
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(random_zoom(x, g, zoom=(1.0, 1.0)), x)              # factor 1: unchanged
    out = random_zoom(x, g)
    assert out.shape == x.shape and not torch.allclose(out, x)
    # shrinking keeps the border black; enlarging by 2 shows half the width: on a left-right ramp
    # from -1 to 1 the visible range of values halves (up to the clamped half pixel at an edge)
    small = random_zoom(x, g, zoom=(0.5, 0.5))
    assert (small[:, :, 0] == BACKGROUND).all() and (small[:, :, :, -1] == BACKGROUND).all()
    ramp = torch.linspace(-1, 1, 32).expand(3, 1, 32, 32).contiguous()
    big = random_zoom(ramp, g, zoom=(2.0, 2.0))
    span = big[:, 0, 0, -1] - big[:, 0, 0, 0]
    assert ((span - 1.0).abs() < 0.04).all(), span
    a = random_zoom(x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, random_zoom(x, torch.Generator().manual_seed(3)))  # seeded: reproducible


def test_accuracy_at_resolution():
    vit = VisionTransformer(ViTConfig(img_size=16, patch_size=8, embed_dim=8, depth=1, num_heads=2, num_classes=3))
    images, labels = torch.randn(10, 1, 16, 16), torch.randint(0, 3, (10,))
    for size in (16, 24, 32):
        acc = accuracy_at(vit, images, labels, size, batch_size=4)
        assert 0.0 <= acc <= 1.0 and (acc * 10) == round(acc * 10)


# --- local patch interaction --------------------------------------------------------------------------------


def _tiny_xcit(**kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, cls_attn_layers=1, **kw)
    return randomize_(XCiT(XCiTConfig(**cfg))).eval()


def test_without_lpi_removes_the_branch_and_leaves_the_original():
    model = _tiny_xcit()
    off = without_lpi(model)
    assert all((b.gamma3 == 0).all() for b in off.blocks) and not all((b.gamma3 == 0).all() for b in model.blocks)
    x = torch.randn(2, 1, 32, 32)
    # with LPI off, its remaining weights no longer matter
    other = without_lpi(model)
    with torch.no_grad():
        for b in other.blocks:
            b.local_mp.conv1.weight.mul_(3.0)
        torch.testing.assert_close(off(x), other(x))
        assert (off(x) - model(x)).abs().max() > 1e-3


def test_switched_off_lpi_stays_off_under_training():
    model = switch_off_lpi_(_tiny_xcit()).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 32, 32)), torch.tensor([0, 1, 2, 3]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for b in model.blocks:
        assert (b.gamma3 == 0).all() and (b.local_mp.conv2.weight == 0).all() and (b.local_mp.conv2.bias == 0).all()


def test_token_influence_is_local_with_lpi_and_not_without():
    model = _tiny_xcit()
    H = W = 9
    tokens = torch.randn(1, H * W, 16)
    centre = 4 * W + 4
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ring = (ys - 4).abs().maximum((xs - 4).abs())      # 0 at the centre, 1 for its 8 neighbours, ...

    def neighbours_over_far(influence):
        return (influence[ring == 1].mean() / influence[ring >= 3].mean()).item()

    with_lpi = token_influence(model.blocks[0], tokens, (H, W), centre)
    assert with_lpi.shape == (H, W)
    # two 3x3 convolutions reach 2 tokens away; beyond that only XCA's global statistics remain
    assert neighbours_over_far(with_lpi) > 5
    without = token_influence(without_lpi(model).blocks[0], tokens, (H, W), centre)
    assert 0.5 < neighbours_over_far(without) < 2      # XCA alone does not care where a token is
    assert without[ring >= 1].max() < without[4, 4]     # and a token mostly moves itself


# --- recipes ------------------------------------------------------------------------------------------------


def test_recipes_registered_with_presets():
    recipes = train.all_recipes()
    names = ["xcit_fmnist32", "vit_fmnist32", "xcit_fmnist32_nolpi", "xcit_fmnist32_zoom", "vit_fmnist32_zoom"]
    for name in names:
        r = recipes[name]
        assert r.arch == name.split("_")[0] and set(r.presets) == {"smoke", "classroom", "full"}
        assert r.model["img_size"] == 32 and r.model["patch_size"] == 8 and r.model["embed_dim"] == 64
        assert r.presets["smoke"].train_limit is not None and r.presets["full"].train_limit is None
        assert r.presets["full"].epochs > r.presets["classroom"].epochs > r.presets["smoke"].epochs
    assert recipes["xcit_fmnist32"].make_loss is None and recipes["vit_fmnist32"].make_loss is None
    assert all(recipes[n].make_loss is not None for n in names[2:])
    assert recipes["xcit_fmnist32_zoom"].model == recipes["xcit_fmnist32"].model
    assert recipes["vit_fmnist32_zoom"].model == recipes["vit_fmnist32"].model
    # similar size: the same number of attention blocks, parameters within 20%
    xcit_cfg, vit_cfg = recipes["xcit_fmnist32"].model, recipes["vit_fmnist32"].model
    assert xcit_cfg["depth"] + xcit_cfg["cls_attn_layers"] == vit_cfg["depth"]
    n_xcit = sum(p.numel() for p in XCiT(XCiTConfig(**xcit_cfg)).parameters())
    n_vit = sum(p.numel() for p in VisionTransformer(ViTConfig(**vit_cfg)).parameters())
    assert abs(n_xcit - n_vit) / n_vit < 0.2


def test_recipe_data_is_32px(monkeypatch):
    from vislearn import xcit_study

    fake = torch.utils.data.TensorDataset(torch.randn(5, 1, 28, 28), torch.arange(5))
    monkeypatch.setattr(xcit_study, "fashion_mnist", lambda split, limit, seed=0: fake)
    images, labels = xcit_study.fashion_mnist_32("test", 5, 0).tensors
    assert images.shape == (5, 1, 32, 32) and labels.tolist() == [0, 1, 2, 3, 4]
    assert xcit_study.fashion_mnist_at("test", 5, 0, size=48).tensors[0].shape == (5, 1, 48, 48)


def test_nolpi_loss_switches_lpi_off():
    from vislearn.xcit_study import _lpi_off_loss

    model = _tiny_xcit().train()
    loss = _lpi_off_loss(torch.device("cpu"))(model, torch.randn(2, 1, 32, 32), torch.tensor([0, 1]))
    assert loss.ndim == 0 and all((b.gamma3 == 0).all() for b in model.blocks)


def test_zoom_loss_is_cross_entropy_on_zoomed_images():
    from vislearn.xcit_study import _zoom_loss

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 3))
    x, y = pad_to_32(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 0])
    loss = _zoom_loss(torch.device("cpu"))(model, x, y)
    expected = torch.nn.functional.cross_entropy(model(random_zoom(x, torch.Generator().manual_seed(0))), y)
    torch.testing.assert_close(loss, expected)
