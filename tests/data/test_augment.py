"""vislearn.data.augment: padding to 32 px, resizing and random zoom."""

import math

import torch

from vislearn.data.augment import random_crop_flip, random_zoom
from vislearn.data.fmnist import BACKGROUND, pad_to_32, resize_images


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


def test_random_crop_flip_keeps_shape_and_content():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float).reshape(2, 1, 6, 6)
    out = random_crop_flip(x, pad=0, generator=torch.Generator().manual_seed(0))
    for i in range(2):  # pad=0: each image is itself or its mirror
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    shifted = random_crop_flip(x, pad=2, generator=torch.Generator().manual_seed(1))
    assert shifted.shape == x.shape
