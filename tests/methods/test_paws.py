"""PAWS's pieces on known inputs: sharpening, the soft nearest neighbour, labels, the loss and me-max."""

import math

import pytest
import torch
import torch.nn.functional as F

from vislearn.config import ParameterError
from vislearn.methods.paws import labels_matrix, paws_loss, sharpen, snn


def test_sharpen_known_values():
    p = torch.tensor([[0.6, 0.4], [0.5, 0.5]])
    s = sharpen(p, 0.25)                                                   # p^4 / sum
    torch.testing.assert_close(s[0], torch.tensor([0.6 ** 4, 0.4 ** 4]) / (0.6 ** 4 + 0.4 ** 4))
    torch.testing.assert_close(s[1], torch.tensor([0.5, 0.5]))             # uniform stays uniform
    torch.testing.assert_close(sharpen(p, 1.0), p)
    with pytest.raises(ParameterError, match="must be > 0"):
        sharpen(p, 0)


def test_labels_matrix_is_class_by_class_with_smoothing():
    y = labels_matrix(3, 2, smoothing=0.1)
    assert y.shape == (6, 3)
    assert y.argmax(1).tolist() == [0, 0, 1, 1, 2, 2]
    torch.testing.assert_close(y.sum(1), torch.ones(6))
    assert y[0, 0].item() == pytest.approx(1 - 0.1 + 0.1 / 3) and y[0, 1].item() == pytest.approx(0.1 / 3)
    assert labels_matrix(3, 2, smoothing=0.0, processes=2).shape == (12, 3)
    torch.testing.assert_close(labels_matrix(2, 1, 0.0), torch.eye(2))


def test_snn_votes_with_cosine_similarity():
    supports = torch.tensor([[1.0, 0.0], [0.0, 3.0]])                      # norms do not matter
    labels = torch.eye(2)
    q = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    p = snn(q, supports, labels, tau=0.1)
    w = F.softmax(torch.tensor([1.0, 0.0]) / 0.1, dim=0)
    torch.testing.assert_close(p[0], w)                                    # closer to support 0
    torch.testing.assert_close(p[1], torch.tensor([0.5, 0.5]))             # equidistant
    with pytest.raises(ParameterError, match="label rows"):
        snn(q, supports, torch.eye(3))


def reference_loss(anchor_views, anchor_supports, target_views, target_supports, labels, multicrop, tau, T):
    """The suncet loss (src/losses.py), written out for one process."""
    def _snn(query, supports):
        query, supports = F.normalize(query), F.normalize(supports)
        return F.softmax(query @ supports.T / tau, dim=1) @ labels

    def _sharpen(p):
        sp = p ** (1.0 / T)
        return sp / sp.sum(dim=1, keepdim=True)

    b = len(anchor_views) // (2 + multicrop)
    probs = _snn(anchor_views, anchor_supports)
    with torch.no_grad():
        targets = _sharpen(_snn(target_views, target_supports))
        if multicrop > 0:
            mc = 0.5 * (targets[:b] + targets[b:])
            targets = torch.cat([targets, *[mc for _ in range(multicrop)]], dim=0)
        targets[targets < 1e-4] *= 0
    loss = torch.mean(torch.sum(torch.log(probs ** (-targets)), dim=1))
    avg = torch.mean(_sharpen(probs), dim=0)
    rloss = -torch.sum(torch.log(avg ** (-avg)))
    return loss, rloss


def test_paws_loss_equals_the_reference_with_swapped_targets():
    g = torch.Generator().manual_seed(0)
    b, m, d = 4, 2, 8
    labels = labels_matrix(3, 2, smoothing=0.1)                            # 6 supports
    h = torch.randn((2 + m) * b, d, generator=g)                           # projection outputs
    z = torch.randn((2 + m) * b, d, generator=g, requires_grad=True)       # prediction-head outputs
    hs, zs = torch.randn(6, d, generator=g), torch.randn(6, d, generator=g)
    ce, me, stats = paws_loss(z, zs, h[:2 * b], hs, labels, multicrop=m)
    swapped = torch.cat([h[b:2 * b], h[:b]])                               # paws_train.py's target_views
    ref_ce, ref_me = reference_loss(z, zs, swapped, hs, labels, m, 0.1, 0.25)
    torch.testing.assert_close(ce, ref_ce)
    torch.testing.assert_close(me, ref_me)
    assert -math.log(3) - 1e-6 <= me.item() <= 0                            # -H of a distribution over 3 classes
    assert 0 < stats["target_max"] <= 1
    (ce + me).backward()
    assert z.grad.abs().sum() > 0


def test_me_max_is_lowest_when_the_batch_covers_every_class():
    labels = torch.eye(2)
    supports = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    one_class = torch.tensor([[1.0, 0.0]] * 4)                            # every view says class 0
    both = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 2)
    _, me_one, _ = paws_loss(one_class, supports, one_class[:4], supports, labels, multicrop=0)
    _, me_both, _ = paws_loss(both, supports, both[:4], supports, labels, multicrop=0)
    assert me_both.item() == pytest.approx(-math.log(2), abs=1e-4)         # uniform average: -log 2
    assert me_one.item() > -0.01                                           # collapsed: entropy near 0


def test_paws_loss_checks_the_view_counts():
    with pytest.raises(ParameterError, match="do not make 4 views"):
        paws_loss(torch.zeros(10, 2), torch.zeros(2, 2), torch.zeros(4, 2), torch.zeros(2, 2), torch.eye(2),
                  multicrop=2)
