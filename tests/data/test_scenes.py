"""Tests for vislearn.data.scenes: Fashion-MNIST items pasted on textured photos, with masks.

Most tests paste tiny synthetic items (squares), whose masks we know exactly; one small test uses
the real Fashion-MNIST to check coverage and balance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vislearn.data import DataNotFoundError
from vislearn.data import scenes as sc


def square_items(n_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """One 28 x 28 item per class, fully white: its silhouette is the whole square."""
    return np.full((n_classes, 28, 28), 255, np.uint8), np.arange(n_classes)


def test_shapes_dtypes_and_textures():
    s = sc.make_scenes(12, "train", seed=0, items=square_items())
    S = s.config.size
    assert s.images.shape == (12, 3, S, S) and s.images.dtype == torch.float32
    assert s.masks.shape == (12, S, S) and s.masks.dtype == torch.bool
    assert s.labels.shape == (12,) and s.labels.dtype == torch.int64
    assert len(s.textures) == 12 and set(s.textures) <= set(sc.BACKGROUNDS)
    assert s.boxes.shape == (12, 4)
    assert len(s.dataset()) == 12 and len(s.subset([0, 3])) == 2


def test_deterministic_given_seed_and_split():
    a = sc.make_scenes(8, "train", seed=3, items=square_items())
    b = sc.make_scenes(8, "train", seed=3, items=square_items())
    c = sc.make_scenes(8, "train", seed=4, items=square_items())
    d = sc.make_scenes(8, "test", seed=3, items=square_items())
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and a.textures == b.textures
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.images, d.images)


def test_mask_is_exactly_the_pasted_square():
    """A fully white item pasted at (top, left) with side s: the mask is that square, and inside it
    every pixel is the object's single colour."""
    s = sc.make_scenes(10, seed=1, items=square_items())
    for i in range(len(s)):
        top, left, side, _ = s.boxes[i].tolist()
        box = torch.zeros_like(s.masks[i])
        box[top:top + side, left:left + side] = True
        assert torch.equal(s.masks[i], box)
        inside = sc.denormalize_scenes(s.images[i])[:, top + 1:top + side - 1, left + 1:left + side - 1]
        assert (inside - inside[:, :1, :1]).abs().max() < 1e-5


def test_background_untouched_outside_the_object():
    """Pixels away from the object (the mask grown by the 1-px antialiased edge) do not depend on
    the item pasted there."""
    white = sc.make_scenes(6, seed=2, items=square_items())
    dim = np.full((10, 28, 28), 60, np.uint8), np.arange(10)
    grey = sc.make_scenes(6, seed=2, items=dim)
    assert torch.equal(white.masks, grey.masks)
    grown = torch.nn.functional.max_pool2d(white.masks[:, None].float(), 3, stride=1, padding=1).bool()
    outside = ~grown.expand_as(white.images)
    assert torch.equal(white.images[outside], grey.images[outside])
    assert not torch.equal(white.images, grey.images)


def test_objects_fit_and_sides_in_range():
    cfg = sc.SceneConfig(size=32, min_side=10, max_side=20)
    s = sc.make_scenes(50, seed=0, config=cfg, items=square_items())
    top, left, side = s.boxes[:, 0], s.boxes[:, 1], s.boxes[:, 2]
    assert side.min() >= 10 and side.max() <= 20
    assert top.min() >= 0 and left.min() >= 0 and (top + side).max() <= 32 and (left + side).max() <= 32


def test_classes_balanced():
    s = sc.make_scenes(53, seed=0, items=square_items())
    counts = torch.bincount(s.labels, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 53


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="min_side"):
        sc.SceneConfig(size=32, min_side=20, max_side=40)
    with pytest.raises(ValueError, match="background"):
        sc.SceneConfig(backgrounds=("grass", "moon"))


def test_normalize_round_trip():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(sc.denormalize_scenes(sc.normalize_scenes(x)), x, atol=1e-6)


def test_real_fashion_mnist_coverage_and_balance():
    """With the real items: coverage in the documented range, masks inside the pasted box."""
    try:
        train = sc.make_scenes(200, "train", seed=0)
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST not available")
    cov = train.coverage()
    assert 0.02 < cov.min() and cov.max() < 0.5
    assert 0.12 < cov.mean() < 0.26
    assert torch.bincount(train.labels).tolist() == [20] * 10
    for i in range(0, 200, 20):
        top, left, side, _ = train.boxes[i].tolist()
        outside = train.masks[i].clone()
        outside[top:top + side, left:left + side] = False
        assert not outside.any()
    raw = sc.denormalize_scenes(train.images)  # the constants describe the scenes: roughly zero mean, unit std
    mean = torch.tensor(sc.SCENES_MEAN)
    assert (raw.mean(dim=(0, 2, 3)) - mean).abs().max() < 0.03


def test_flip_mirrors_the_item_and_its_mask():
    """An item whose left half is white: mirrored, its mask is the right half of the pasted box."""
    half = np.zeros((10, 28, 28), np.uint8)
    half[:, :, :14] = 255
    items = half, np.arange(10)
    plain = sc.make_scenes(20, seed=5, items=items)
    flipped = sc.make_scenes(20, seed=5, config=sc.SceneConfig(flip=1.0), items=items)
    assert torch.equal(plain.boxes, flipped.boxes)          # the flip is drawn last: nothing else moves
    for i in range(len(plain)):
        top, left, side, _ = plain.boxes[i].tolist()
        box = (slice(top, top + side), slice(left, left + side))
        a, b = plain.masks[i][box], flipped.masks[i][box]         # (side, side) each
        assert a[:, : side // 2 - 1].all() and not a[:, side // 2 + 1:].any()    # white on the left ...
        assert b[:, side - side // 2 + 1:].all() and not b[:, : side - side // 2 - 1].any()   # ... mirrored: right
        assert (a.flip(-1) != b).float().mean() <= 1 / side       # the same up to the resampled middle column


def test_value_scales_the_object_colour():
    """A white item at value v: every pixel inside the pasted square is grey level v."""
    for v in (0.5, 0.8):
        cfg = sc.SceneConfig(value=(v, v), saturation=(0.0, 0.0))
        s = sc.make_scenes(6, seed=1, config=cfg, items=square_items())
        for i in range(len(s)):
            top, left, side, _ = s.boxes[i].tolist()
            inside = sc.denormalize_scenes(s.images[i])[:, top + 1:top + side - 1, left + 1:left + side - 1]
            assert (inside - v).abs().max() < 1e-5


def test_default_value_and_flip_keep_the_scenes_made_before_them():
    """The new options are drawn last and default to "off": the default scenes are those made before
    they existed (values recorded with vislearn 5e89a48), so the bundled checkpoints' scenes stay put."""
    s = sc.make_scenes(8, seed=7, items=square_items())
    assert s.images.double().sum().item() == pytest.approx(45084.394, abs=0.05)
    assert int(s.masks.sum()) == 12543 and s.boxes[3].tolist() == [25, 5, 35, 35]
    expected = torch.tensor([-0.317691445350647, -0.21010185778141022, -0.1093573272228241])
    assert torch.allclose(s.images[3, :, 20, 30], expected, atol=1e-5)


def ten_items_per_class() -> tuple[np.ndarray, np.ndarray]:
    """100 white squares, 10 per class: enough items to split into trained-on and validation."""
    return np.full((100, 28, 28), 255, np.uint8), np.arange(100) % 10


def test_scene_items_are_the_items_make_scenes_pastes_without_composing():
    items = ten_items_per_class()
    s = sc.make_scenes(30, "train", seed=4, items=items)
    assert s.items.shape == (30,) and np.array_equal(items[1][s.items.numpy()], s.labels.numpy())
    np.testing.assert_array_equal(sc.scene_items(30, "train", 4, items=items), s.items.numpy())
    assert torch.equal(s.subset([3, 1]).items, s.items[[3, 1]])


def test_validation_scenes_never_paste_an_excluded_item_and_stay_balanced():
    items = ten_items_per_class()
    train = sc.make_scenes(40, "train", seed=0, items=items)
    val = sc.make_scenes(50, "val", seed=0, items=items, exclude=train.items.numpy())
    assert not set(val.items.tolist()) & set(train.items.tolist())
    assert torch.bincount(val.labels).tolist() == [5] * 10
    again = sc.make_scenes(50, "val", seed=0, items=items, exclude=train.items.numpy())
    assert torch.equal(again.images, val.images)                                       # deterministic
    other = sc.make_scenes(50, "train", seed=0, items=items, exclude=train.items.numpy())
    assert not torch.equal(other.images, val.images)                     # its own random stream


def test_validation_scenes_need_an_exclude_and_enough_items_left():
    items = ten_items_per_class()
    with pytest.raises(ValueError, match="exclude="):
        sc.make_scenes(5, "val", items=items)
    with pytest.raises(ValueError, match="not every class"):
        sc.make_scenes(5, "val", items=items, exclude=np.flatnonzero(items[1] == 3))    # class 3 all used
    with pytest.raises(ValueError, match="split"):
        sc.make_scenes(5, "validation", items=items)
