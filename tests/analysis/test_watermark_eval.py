import numpy as np
import pytest
import torch

from vislearn.analysis import watermark_eval as we
from vislearn.config import ParameterError


def test_tiles_are_non_overlapping_blocks():
    img = np.random.default_rng(0).integers(0, 256, (300, 260, 3), dtype=np.uint8)
    t = we.tiles(img, 128)
    assert t.shape == (4, 3, 128, 128)
    assert torch.equal(t[1], we.to_tensor(img)[:, :128, 128:256])
    assert torch.equal(t[2], we.to_tensor(img)[:, 128:256, :128])
    with pytest.raises(ParameterError):
        we.tiles(img[:100], 128)


def test_random_crops_on_8bit_grid():
    img = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    c = we.random_crops(img, 5, 64, np.random.default_rng(1))
    assert c.shape == (5, 3, 64, 64)
    assert torch.allclose(c * 255, (c * 255).round(), atol=1e-4)


def test_vit_features_resizes_and_normalises():
    seen = {}

    def feats(backbone, x):
        seen["shape"] = tuple(x.shape)
        return x.mean((2, 3))

    phi = we.ViTFeatures(torch.nn.Identity(), feats, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), size=32)
    out = phi(torch.full((2, 3, 100, 100), 0.75))
    assert seen["shape"] == (2, 3, 32, 32)
    assert torch.allclose(out, torch.ones(2, 3))


def test_robustness_rows_and_lookup():
    images = torch.rand(3, 3, 64, 64)
    rows = we.robustness(images, lambda x: torch.full((len(x),), float(x.shape[-1])),
                         [("none", 0), ("crop", 0.25), ("jpeg", 50)])
    assert [r["attack"] for r in rows] == ["none", "crop", "jpeg"]
    assert we.lookup(rows, "crop", 0.25) == 32.0
    assert we.lookup(rows, "none", 0) == 64.0
    assert we.lookup(rows, "blur", 3) is None
    assert len(we.grid()) == sum(len(a.strengths) for a in we.ATTACKS.values())


def test_false_positives_counts():
    rows = we.false_positives(np.array([1e-7, 0.005, 0.5, 0.9]), [1e-6, 1e-2])
    assert rows[0]["detected"] == "1 / 4" and rows[0]["measured FPR"] == 0.25
    assert rows[1]["detected"] == "2 / 4"


def test_paper_tables():
    assert we.PAPER_ZERO_BIT_TPR[("jpeg", 50)] == 0.97
    assert we.PAPER_MULTI_BIT_BER[("crop", 0.1)] == 0.45
