"""vislearn.methods.watermark and watermark_marking: the cone detector's statistics, keys, losses, marking."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vislearn.config import ParameterError
from vislearn.data.photos import photo
from vislearn.methods import watermark as wm
from vislearn.methods import watermark_marking as mk

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "grass", "gravel", "brick")  # no sklearn import: fast


pytestmark = pytest.mark.usefixtures("one_thread")


# --- the false-positive rate of the cone --------------------------------------------------------------

@pytest.mark.parametrize("dim", [8, 32])
def test_false_positive_rate_matches_monte_carlo(dim):
    g = torch.Generator().manual_seed(dim)
    n = 200_000
    u = torch.randn(n, dim, generator=g, dtype=torch.float64)
    key = wm.secret_key(dim, g).double()
    cos = (u @ key / u.norm(dim=1)).abs().numpy()                      # (n,) |cos| of random directions
    for c in (0.1, 0.3, 0.5, 0.7):
        expected = wm.false_positive_rate(c, dim)
        measured = (cos > c).mean()
        se = math.sqrt(expected * (1 - expected) / n)
        assert abs(measured - expected) < 4 * se + 1e-5, (dim, c, measured, expected)


def test_closed_form_and_inverse():
    assert math.cos(wm.cone_angle(1e-6, 2048)) == pytest.approx(0.1078, abs=1e-3)
    # D = 3: |cos| of a uniform direction is uniform on [0, 1] (Archimedes), so FPR(c) = 1 - c
    fpr3 = wm.false_positive_rate(np.array([0.0, 0.25, 0.9, 1.0]), 3)
    np.testing.assert_allclose(fpr3, [1, 0.75, 0.1, 0], atol=1e-12)
    for dim in (8, 32, 2048):
        for fpr in (0.3, 1e-2, 1e-6, 1e-12):
            theta = wm.cone_angle(fpr, dim)
            assert 0 < theta < math.pi / 2
            assert wm.false_positive_rate(math.cos(theta), dim) == pytest.approx(fpr, rel=1e-6)
    assert wm.cone_angle(1e-6, 32) < wm.cone_angle(1e-6, 2048)         # more room in higher dimensions


def test_p_value_is_monotone_and_ignores_the_sign():
    cos = np.linspace(0, 1, 101)
    p = wm.p_value(cos, 64)
    assert p[0] == pytest.approx(1) and p[-1] == 0 and np.all(np.diff(p) < 0)
    signed = torch.tensor([-0.3, 0.3], dtype=torch.float64)
    np.testing.assert_allclose(wm.p_value(signed, 64), [wm.false_positive_rate(0.3, 64)] * 2)
    with pytest.raises(ParameterError, match=r"\[0, 1\]"):
        wm.false_positive_rate(1.5, 64)
    with pytest.raises(ParameterError, match="strictly between 0 and 1"):
        wm.cone_angle(0.0, 64)
    with pytest.raises(ParameterError, match="dim=1"):
        wm.cone_angle(0.1, 1)


# --- whitening and keys -------------------------------------------------------------------------------

def test_whitening_gives_zero_mean_identity_covariance():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(16, 16, generator=g) * torch.logspace(0, 2, 16)    # very anisotropic
    features = torch.randn(5000, 16, generator=g, dtype=torch.float64) @ mix.double() + 3.0
    white = wm.Whitening.fit(features).whiten(features)
    torch.testing.assert_close(white.mean(0), torch.zeros(16, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.cov(white.T), torch.eye(16, dtype=torch.float64), atol=1e-8, rtol=0)
    # the same numbers as NumPy's PCA: projections on the eigenvectors, divided by the standard deviations
    x = features.numpy()
    e, v = np.linalg.eigh(np.cov(x.T))
    top = v[:, ::-1][:, :4]                                            # the 4 largest components
    expected = (x - x.mean(0)) @ top / np.sqrt(e[::-1][:4])
    ours = wm.Whitening.fit(features, dim=4).whiten(features).numpy()
    np.testing.assert_allclose(np.abs(ours), np.abs(expected), atol=1e-8)  # eigenvectors are defined up to sign
    with pytest.raises(ParameterError, match="fewer than dim=16"):
        wm.Whitening.fit(features[:8])
    with pytest.raises(ParameterError, match="dim=17"):
        wm.Whitening.fit(features, dim=17)


def test_keys_are_unit_and_carriers_orthonormal():
    key = wm.secret_key(2048, torch.Generator().manual_seed(0))
    assert key.shape == (2048,) and float(key.norm()) == pytest.approx(1, abs=1e-6)
    torch.testing.assert_close(key, wm.secret_key(2048, torch.Generator().manual_seed(0)))
    c = wm.carriers(30, 256, torch.Generator().manual_seed(1))
    assert c.shape == (30, 256)
    torch.testing.assert_close(c @ c.T, torch.eye(30), atol=1e-5, rtol=0)
    assert abs(float(c.mean())) < 0.01                                 # not a fixed basis: random directions
    with pytest.raises(ParameterError, match="k=300 must be an integer <= 256"):
        wm.carriers(300, 256)


def test_detection_decoding_and_losses():
    key = torch.tensor([1.0, 0.0, 0.0])
    cos_theta = 0.5
    x = torch.tensor([[1.0, 1.0, 0.0], [1.0, 2.0, 0.0], [-3.0, 0.0, 1.0]])  # cosines 0.707, 0.447, -0.949
    assert wm.detect(x, key, cos_theta).tolist() == [True, False, True]
    R = wm.acceptance(x, key, cos_theta)                              # 4 * x1^2 - |x|^2
    torch.testing.assert_close(R, torch.tensor([2.0, -1.0, 26.0]))
    assert ((R > 0) == wm.detect(x, key, cos_theta)).all()
    torch.testing.assert_close(wm.zero_bit_loss(x, key, cos_theta), -R.sum())
    carriers = torch.eye(3)[:2]
    bits = torch.tensor([[True, False], [True, True], [False, False]])
    assert wm.decode(x, carriers).tolist() == [[True, True], [True, True], [False, False]]
    torch.testing.assert_close(wm.bit_accuracy(wm.decode(x, carriers), bits), torch.tensor([0.5, 1.0, 1.0]))
    # hinge max(0, 5 - p s): image 0: (4 + 6) / 2; image 1: (4 + 3) / 2; image 2: (2 + 5) / 2
    torch.testing.assert_close(wm.multi_bit_loss(x, carriers, bits, margin=5), torch.tensor(12.0))
    assert float(wm.multi_bit_loss(10 * x[1:2], carriers, bits[1:2], margin=5)) == 0  # every bit has its margin
    with pytest.raises(ParameterError, match=r"shape \(B, 3\)"):
        wm.detect(x[:, :2], key, cos_theta)


# --- PSNR, its clip, the SSIM attenuation -------------------------------------------------------------

def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255  # (3, H, W)


@pytest.fixture(scope="module")
def photos_full() -> list[torch.Tensor]:
    return [to_tensor(photo(n)) for n in PHOTOS]


@pytest.fixture(scope="module")
def batch(photos_full) -> torch.Tensor:
    """Four real photos, shrunk to (4, 3, 64, 64), on the 8-bit grid."""
    return mk.quantize(torch.cat([F.interpolate(p[None], size=(64, 64), mode="area") for p in photos_full[:4]]))


def test_psnr_known_value(batch):
    assert mk.psnr(batch, (batch + 0.01)).tolist() == pytest.approx([40.0] * 4, abs=1e-4)
    assert math.isinf(float(mk.psnr(batch, batch)[0]))


def test_clip_psnr_hits_the_target_after_rounding(batch):
    g = torch.Generator().manual_seed(0)
    noisy = batch + 0.05 * torch.randn(batch.shape, generator=g)      # ~26 dB: far over a 42 dB budget
    for target in (36.0, 42.0, 48.0):
        exact = mk.clip_psnr(batch, noisy, target)
        torch.testing.assert_close(mk.psnr(exact, batch), torch.full((4,), target), atol=1e-3, rtol=0)
        rounded = mk.clip_psnr(batch, noisy, target, rounded=True)
        assert torch.all(rounded * 255 == (rounded * 255).round()) and rounded.min() >= 0 and rounded.max() <= 1
        measured = mk.psnr(rounded, batch)
        assert torch.all((measured >= target) & (measured < target + 0.1)), (target, measured)
    gentle = batch + 0.001 * torch.randn(batch.shape, generator=g)    # ~60 dB: within budget, untouched
    assert torch.equal(mk.clip_psnr(batch, gentle, 42.0), gentle)
    torch.testing.assert_close(mk.clip_psnr(batch, gentle, 42.0, rounded=True), mk.quantize(gentle))


def test_ssim_heatmap_matches_scikit_image(batch):
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(1)
    noisy = (batch + 0.03 * torch.randn(batch.shape, generator=g)).clamp(0, 1)
    ours = mk.ssim_heatmap(noisy, batch, window=11)                   # (4, 3, 64, 64); scikit-image: 11 taps
    _, ref = structural_similarity(noisy[0, 0].double().numpy(), batch[0, 0].double().numpy(), data_range=1.0,
                                   gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
    inner = (slice(8, -8), slice(8, -8))                               # away from the padded borders
    np.testing.assert_allclose(ours[0, 0][inner].numpy(), ref[inner], atol=5e-3)
    torch.testing.assert_close(mk.ssim_heatmap(batch, batch), torch.ones_like(batch), atol=1e-4, rtol=0)
    # attenuation never enlarges the change, and shrinks it more in the flat sky than in the texture
    change = (mk.attenuate(noisy, batch) - batch).abs()
    assert torch.all(change <= (noisy - batch).abs() + 1e-6)


# --- marking with a tiny random extractor -------------------------------------------------------------

DIM = 32


def crops(photos_full, n: int, seed: int, size: int = 64) -> torch.Tensor:
    """n random square crops of the photos, shrunk to (n, 3, size, size)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = photos_full[i % len(photos_full)]
        H, W = img.shape[1:]
        s = int(rng.integers(size, min(H, W)))
        top, left = int(rng.integers(H - s + 1)), int(rng.integers(W - s + 1))
        out.append(F.interpolate(img[None, :, top:top + s, left:left + s], size=(size, size), mode="area"))
    return mk.quantize(torch.cat(out))


@pytest.fixture(scope="module")
def extractor(photos_full) -> wm.Extractor:
    torch.manual_seed(0)
    # tanh, not ReLU: a unit that is dead on an image would leave a carrier's projection out of reach
    backbone = nn.Sequential(nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.Tanh(),
                             nn.Conv2d(16, DIM, 3, stride=2, padding=1), nn.Tanh(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()   # (B, 3, H, W) -> (B, 32)
    with torch.no_grad():
        features = backbone(crops(photos_full, 300, seed=0))
    return wm.Extractor(backbone, wm.Whitening.fit(features))


def test_zero_bit_marking_is_detected(batch, extractor, photos_full):
    key = wm.secret_key(DIM, torch.Generator().manual_seed(1))
    cos_theta = math.cos(wm.cone_angle(1e-2, DIM))
    config = mk.WatermarkConfig(iterations=40, target_psnr=42.0, augment=True)
    marked = mk.mark(batch, extractor, wm.ZeroBit(key, cos_theta), config)
    assert marked.images.shape == batch.shape and torch.all(marked.images * 255 == (marked.images * 255).round())
    measured = mk.psnr(marked.images, batch)
    assert torch.all(measured >= 42.0) and measured.min() < 42.1, measured   # the SSIM map may leave some budget
    with torch.no_grad():
        before, after = wm.cosine(extractor(batch), key).abs(), wm.cosine(extractor(marked.images), key).abs()
        others = wm.detect(extractor(crops(photos_full, 100, seed=1)), key, cos_theta)
    assert torch.all(after > before) and wm.detect(extractor(marked.images), key, cos_theta).all(), (before, after)
    assert others.float().mean() < 0.1                                 # unmarked images: ~1% false positives
    assert np.all(wm.p_value(after, DIM) < 1e-2)
    h = marked.history
    assert len(h["loss"]) == len(h["psnr"]) == len(h["R"]) == 40
    assert min(h["psnr"]) > 42.0 - 1e-3 and h["psnr"][-1] == pytest.approx(42.0, abs=0.2)  # the budget holds
    # R of the augmented views swings with the augmentation drawn; without augmentation it climbs steadily
    plain = mk.mark(batch, extractor, wm.ZeroBit(key, cos_theta), mk.WatermarkConfig(iterations=20, augment=False))
    R, loss = plain.history["R"], plain.history["loss"]
    assert R[0] < 0 < R[-1] and np.mean(np.diff(R) > 0) > 0.8 and loss[-1] < loss[0]


def test_multi_bit_marking_decodes_the_message(batch, extractor):
    car = wm.carriers(8, DIM, torch.Generator().manual_seed(2))
    bits = wm.random_bits(4, 8, torch.Generator().manual_seed(3))
    config = mk.WatermarkConfig(iterations=40, target_psnr=40.0, augment=False)
    marked = mk.mark(batch, extractor, wm.MultiBit(car, bits), config)
    with torch.no_grad():
        assert torch.equal(wm.decode(extractor(marked.images), car), bits)
        assert wm.bit_accuracy(wm.decode(extractor(batch), car), bits).mean() < 0.9   # not there by chance
    assert marked.history["bit_accuracy"][-1] == 1.0
    assert all(p.grad is None for p in extractor.parameters())             # the extractor was left alone
    assert all(p.requires_grad for p in extractor.backbone.parameters())
    single = mk.mark(batch[0], extractor, wm.MultiBit(car, bits[:1]), mk.WatermarkConfig(iterations=2))
    assert single.images.shape == batch[0].shape


def test_config_errors_name_the_value():
    for kwargs, words in [({"iterations": 0}, "iterations=0 must be an integer >= 1"),
                          ({"lr": -1.0}, "lr=-1.0 must be a positive number"),
                          ({"lambda_i": -2}, "lambda_i=-2 must be a number >= 0"),
                          ({"target_psnr": 300.0}, "target_psnr=300.0 dB"),
                          ({"augment": "yes"}, "augment='yes' must be True or False")]:
        with pytest.raises(ParameterError, match=words):
            mk.WatermarkConfig(**kwargs)
    with pytest.raises(ParameterError, match=r"cos_theta=1.5 must lie in \(0, 1\)"):
        wm.ZeroBit(torch.ones(3), 1.5)
    with pytest.raises(ParameterError, match=r"\[0, 1\]"):
        mk.mark(torch.full((1, 3, 8, 8), 2.0), lambda x: x.flatten(1), wm.ZeroBit(torch.ones(192), 0.5))
