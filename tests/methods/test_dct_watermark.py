"""vislearn.methods.dct_watermark: the spread-spectrum DCT baseline at a fixed PSNR."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vislearn.config import ParameterError
from vislearn.data import attacks
from vislearn.data.photos import photo
from vislearn.methods import dct_watermark as dw
from vislearn.methods.watermark_marking import psnr, quantize

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Four real photos, (4, 3, 128, 128), on the 8-bit grid."""
    out = [torch.from_numpy(np.array(photo(n))).permute(2, 0, 1).float()[None] / 255
           for n in ("astronaut", "chelsea", "coffee", "rocket")]
    return quantize(torch.cat([F.interpolate(x, size=(128, 128), mode="area") for x in out]))


def test_dct_is_orthonormal_and_matches_scipy():
    from scipy.fft import dctn

    x = torch.randn(2, 12, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(dw.dct2(x).numpy(), dctn(x.numpy(), axes=(-2, -1), norm="ortho"), atol=1e-12)
    torch.testing.assert_close(dw.idct2(dw.dct2(x)), x)
    torch.testing.assert_close(dw.dct2(x).norm(), x.norm())               # Parseval
    torch.testing.assert_close(dw.luminance(torch.ones(1, 3, 4, 4)), torch.ones(1, 4, 4))


def test_key_band():
    key = dw.dct_key(64, 32, k=3, generator=torch.Generator().manual_seed(0), band=(0.1, 0.5))
    assert key.patterns.shape == (3, len(key.index)) and set(key.patterns.unique().tolist()) == {-1.0, 1.0}
    u, v = key.index // 32, key.index % 32
    freq = u / 64 + v / 32
    assert freq.min() >= 0.1 and freq.max() < 0.5 and 0 not in key.index.tolist()   # no DC
    with pytest.raises(ParameterError, match="band"):
        dw.dct_key(64, 64, band=(0.5, 0.1))


@pytest.mark.parametrize("target", [38.0, 42.0])
def test_zero_bit_hits_the_psnr_and_is_detected(images, target):
    key = dw.dct_key(128, 128, generator=torch.Generator().manual_seed(1))
    marked = dw.dct_embed(images, key, target_psnr=target)
    assert marked.shape == images.shape and torch.all(marked * 255 == (marked * 255).round())
    measured = psnr(marked, images)
    assert torch.all((measured >= target) & (measured < target + 0.1)), measured
    assert dw.dct_detect(marked, key, fpr=1e-6).all()
    z_clean = dw.dct_scores(images, key)[:, 0]
    assert z_clean.abs().max() < 4                                        # the null is ~N(0, 1)
    assert not dw.dct_detect(images, key, fpr=1e-6).any()
    # a resize is undone by resizing back to the key's size: the mark survives a halving
    assert dw.dct_detect(attacks.attack(marked, "resize", 0.5), key, fpr=1e-3).float().mean() >= 0.5


def test_null_distribution_over_keys(images):
    """Over many random keys, z of an unmarked image is ~N(0, 1): the threshold's FPR is the one asked for."""
    band = dw._band(images[:1], dw.dct_key(128, 128))                     # (1, L) the band of one photo
    g = torch.Generator().manual_seed(2)
    patterns = torch.randint(0, 2, (2000, band.shape[1]), generator=g).float() * 2 - 1
    z = (band.float() @ patterns.T / band.norm().float()).flatten().numpy()   # (2000,)
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.06
    assert dw.dct_threshold(0.05) == pytest.approx(1.6449, abs=1e-4)
    assert abs((z > dw.dct_threshold(0.05)).mean() - 0.05) < 0.02


def test_multi_bit_decodes_at_identity(images):
    key = dw.dct_key(128, 128, k=8, generator=torch.Generator().manual_seed(3))
    bits = torch.rand(4, 8, generator=torch.Generator().manual_seed(4)) < 0.5
    # 38 dB: at 42 the astronaut's own texture correlates at -3.2 sigma with one pattern, more than the
    # ~2.9 sigma that one bit of eight gets there: blind spread spectrum pays for the host's interference
    marked = dw.dct_embed(images, key, bits, target_psnr=38.0)
    assert torch.all((psnr(marked, images) >= 38.0) & (psnr(marked, images) < 38.1))
    assert torch.equal(dw.dct_decode(marked, key), bits)
    one = dw.dct_embed(images[1], key, bits[1:2], target_psnr=38.0)        # a single (3, H, W) image
    assert one.shape == images[1].shape and torch.equal(dw.dct_decode(one, key)[0], bits[1])
    with pytest.raises(ParameterError, match=r"bits must have shape \(B, K\) = \(4, 8\)"):
        dw.dct_embed(images, key, bits[:, :4])
    with pytest.raises(ParameterError, match="made for 128x128"):
        dw.dct_embed(images[:, :, :64], key, bits)
    with pytest.raises(ParameterError, match="strictly between 0 and 1"):
        dw.dct_threshold(1.0)
