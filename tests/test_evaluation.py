"""Tests for vislearn.evaluation: weighted k-NN, mass-threshold attention masks, Jaccard."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vislearn.evaluation import (
    attention_jaccard,
    attention_masks,
    extract_features,
    jaccard,
    knn_accuracy,
    knn_predict,
    mass_masks,
)
from vislearn.vit import VisionTransformer, ViTConfig


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
