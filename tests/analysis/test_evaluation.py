"""Tests for vislearn.analysis.evaluation: weighted k-NN, mass-threshold attention masks, Jaccard."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vislearn.analysis.evaluation import (
    attention_jaccard,
    attention_masks,
    cls_attention_maps,
    extract_features,
    jaccard,
    jaccard_from_maps,
    knn_accuracy,
    knn_predict,
    masks_from_maps,
    mass_masks,
)
from vislearn.models.vit import VisionTransformer, ViTConfig


def test_knn_two_clusters():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    queries = torch.tensor([[2.0, 0.2], [0.1, 3.0]])          # scale does not matter: cosine similarity
    assert knn_predict(bank, labels, queries, k=2).argmax(1).tolist() == [0, 1]
    assert knn_accuracy(bank, labels, queries, torch.tensor([0, 1]), k=2) == 1.0


def test_knn_weights_follow_the_temperature():
    """One neighbour at cosine 1 (class 0) against two at cosine 0.5 (class 1): with T=0.07 the
    close one outvotes the two (e^(1/0.07) > 2 e^(0.5/0.07)); with a large T, the majority wins."""
    c = math.cos(math.pi / 3)                                  # 0.5
    bank = torch.tensor([[1.0, 0.0], [c, math.sin(math.pi / 3)], [c, -math.sin(math.pi / 3)]])
    labels = torch.tensor([0, 1, 1])
    q = torch.tensor([[1.0, 0.0]])
    scores = knn_predict(bank, labels, q, k=3, temperature=0.07)
    assert torch.allclose(scores, torch.tensor([[math.exp(1 / 0.07), 2 * math.exp(0.5 / 0.07)]]), rtol=1e-4)
    assert scores.argmax(1).item() == 0
    assert knn_predict(bank, labels, q, k=3, temperature=10.0).argmax(1).item() == 1


def test_knn_k_limits_the_vote():
    bank = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 1])
    assert knn_predict(bank, labels, torch.tensor([[1.0, 0.0]]), k=1, num_classes=2)[0, 1] == 0


def test_mass_masks_keeps_sixty_percent():
    """Sorted [0.1, 0.1, 0.3, 0.5]: cumulative [0.1, 0.2, 0.5, 1.0] > 0.4 keeps 0.3 and 0.5 (mass 0.8)."""
    attn = torch.tensor([0.5, 0.3, 0.1, 0.1])
    assert mass_masks(attn, 0.6).tolist() == [True, True, False, False]
    assert mass_masks(attn * 7, 0.6).tolist() == [True, True, False, False]   # normalized inside
    assert mass_masks(torch.tensor([0.1, 0.5, 0.1, 0.3]), 0.6).tolist() == [False, True, False, True]
    assert mass_masks(torch.full((4,), 0.25), 0.6).sum() == 3               # 0.75 >= 0.6 > 0.5
    assert mass_masks(attn, 0.5).tolist() == [True, False, False, False]
    batched = mass_masks(torch.stack([attn, attn.flip(0)]), 0.6)            # (2, 4): any leading axes
    assert batched.tolist() == [[True, True, False, False], [False, False, True, True]]


def test_jaccard_known_masks():
    a = torch.zeros(4, 4, dtype=torch.bool)
    b = torch.zeros(4, 4, dtype=torch.bool)
    a[:2, :2] = True          # 4 pixels
    b[:2, 1:3] = True         # 4 pixels, 2 shared
    assert jaccard(a, b).item() == pytest.approx(2 / 6)
    assert jaccard(a, a).item() == 1.0
    assert jaccard(a, ~a).item() == 0.0
    empty = torch.zeros(4, 4, dtype=torch.bool)
    assert jaccard(empty, empty).item() == 1.0
    assert jaccard(torch.stack([a, a]), torch.stack([b, a])).tolist() == pytest.approx([1 / 3, 1.0])


class FixedAttention(nn.Module):
    """A stand-in model whose last [CLS] attention is fixed: head 0 looks at patch 0 only, head 1
    spreads 0.4, 0.3, 0.2, 0.1 over the 4 patches of a 2 x 2 grid."""

    num_prefix_tokens = 1

    def get_last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        attn = torch.zeros(x.shape[0], 2, 5, 5)
        attn[:, 0, 0, 1] = 1.0
        attn[:, 1, 0, 1:] = torch.tensor([0.4, 0.3, 0.2, 0.1])
        return attn


def test_attention_jaccard_picks_the_best_head():
    images = torch.zeros(3, 3, 4, 4)                 # 2 x 2 patches of 2 x 2 pixels
    gt = torch.zeros(3, 4, 4, dtype=torch.bool)
    gt[:, :2, :2] = True                             # the object is patch 0
    masks = attention_masks(FixedAttention(), images)
    assert masks.shape == (3, 2, 4, 4)
    assert torch.equal(masks[0, 0], gt[0])           # head 0: exactly patch 0
    assert masks[0, 1, :2].all() and not masks[0, 1, 2:].any()   # head 1: patches 0 and 1 hold 70%
    out = attention_jaccard(FixedAttention(), images, gt)
    assert out["jaccard"] == pytest.approx(1.0)
    assert out["mean_head"] == pytest.approx((1 + 4 / 8) / 2)
    assert out["best_head"].tolist() == [0, 0, 0]


def test_extract_features_uses_pooled_tokens_not_logits():
    vit = VisionTransformer(ViTConfig(img_size=8, patch_size=4, in_chans=3, num_classes=10, embed_dim=16,
                                      depth=1, num_heads=2))
    x = torch.randn(5, 3, 8, 8)
    f = extract_features(vit, x, batch_size=2)
    assert f.shape == (5, 16)
    assert torch.allclose(f, vit.forward_head(vit.forward_features(x), pre_logits=True), atol=1e-6)
    assert extract_features(lambda t: t.flatten(1), x).shape == (5, 192)


def test_masks_from_maps_known_values():
    """All the mass on one patch: the mask is exactly that patch, upsampled (8 px patches of 64 px)."""
    maps = torch.zeros(2, 8, 8)
    maps[0, 2, 3] = 1.0
    maps[1] = 1.0                                            # uniform: 39 of 64 patches hold >= 60%
    masks = masks_from_maps(maps, 64, keep=0.6)
    assert masks.shape == (2, 64, 64) and masks.dtype == torch.bool
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[16:24, 24:32] = True
    assert torch.equal(masks[0], expected)
    assert int(masks[1].sum()) == 39 * 64


def test_jaccard_from_maps_scores_the_best_head_per_image():
    truth = torch.zeros(1, 64, 64, dtype=torch.bool)
    truth[0, 16:24, 24:32] = True
    maps = torch.rand(1, 2, 8, 8) * 1e-3
    maps[0, 1, 2, 3] = 1.0                                   # head 1 looks at the object only
    out = jaccard_from_maps(maps, truth, keep=0.6)
    assert out["best_head"].tolist() == [1] and out["jaccard"] == pytest.approx(1.0)
    assert out["per_head"][0, 0] < 0.1 and out["mean_head"] == pytest.approx(out["per_head"].mean().item())


def test_attention_jaccard_equals_the_two_steps():
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(img_size=32, patch_size=8, in_chans=3, num_classes=0, embed_dim=16,
                                        depth=1, num_heads=2))
    images, truth = torch.randn(5, 3, 32, 32), torch.rand(5, 32, 32) > 0.7
    maps = cls_attention_maps(model, images, batch_size=2)
    assert maps.shape == (5, 2, 4, 4)
    direct = attention_jaccard(model, images, truth)
    assert direct["jaccard"] == pytest.approx(jaccard_from_maps(maps, truth)["jaccard"])
    assert torch.equal(attention_masks(model, images), masks_from_maps(maps, 32))
