"""SwAV's pieces on known inputs: Sinkhorn's marginals and values, the swapped loss, the queue."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vislearn.config import ParameterError
from vislearn.methods.swav import Prototypes, Queue, SwAVHead, sinkhorn, swav_loss


def reference_sinkhorn(scores: np.ndarray, eps: float, iters: int) -> np.ndarray:
    """The reference's distributed_sinkhorn in one process, in numpy float64."""
    q = np.exp(scores / eps).T                              # (K, B)
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def test_sinkhorn_matches_the_reference_and_gives_one_code_per_sample():
    scores = torch.randn(12, 5, generator=torch.Generator().manual_seed(0)).clamp(-1, 1) * 0.8
    q = sinkhorn(scores, 0.05, 3)
    np.testing.assert_allclose(q.numpy(), reference_sinkhorn(scores.double().numpy(), 0.05, 3), rtol=1e-5)
    torch.testing.assert_close(q.sum(1), torch.ones(12))                 # each sample's code sums to 1


def test_sinkhorn_converges_to_equal_mass_per_prototype():
    scores = F.normalize(torch.randn(40, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    skewed = scores + torch.tensor([0.5] + [0.0] * 7)                      # prototype 0 wins raw scores
    assert F.softmax(skewed / 0.05, dim=1).argmax(1).eq(0).float().mean() > 0.5
    after_3 = sinkhorn(skewed, 0.05, 3).sum(0)
    after_100 = sinkhorn(skewed, 0.05, 100).sum(0)
    torch.testing.assert_close(after_100, torch.full((8,), 40 / 8), rtol=1e-4, atol=1e-4)   # B/K each
    assert (after_3 - 5).abs().max() < (F.softmax(skewed / 0.05, 1).sum(0) - 5).abs().max() / 4


def test_sinkhorn_on_a_two_by_two_example_by_hand():
    # Q = exp(s / eps)^T = [[e, 1], [1, 1]] (K, B) with eps = 1: one round of rows then columns, by hand
    q = sinkhorn(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), 1.0, 1)
    e = math.e
    rows = np.array([[e / (e + 1), 1 / (e + 1)], [1 / 2, 1 / 2]]) / 2       # (K, B): each prototype 1/K
    cols = rows / rows.sum(0, keepdims=True)                               # each column sums to 1
    np.testing.assert_allclose(q.numpy(), cols.T, rtol=1e-6)


def test_sinkhorn_rejects_bad_arguments():
    with pytest.raises(ParameterError, match=r"scores must be \(B, K\)"):
        sinkhorn(torch.zeros(3))
    with pytest.raises(ParameterError, match="epsilon must be > 0"):
        sinkhorn(torch.zeros(2, 2), epsilon=0)


def test_swav_loss_is_the_swapped_cross_entropy():
    g = torch.Generator().manual_seed(2)
    scores = [torch.randn(6, 4, generator=g) * 0.5 for _ in range(3)]     # 2 global crops + 1 small
    loss, stats = swav_loss(scores, temperature=0.1)
    q0, q1 = sinkhorn(scores[0]), sinkhorn(scores[1])

    def ce(q, s):
        return -(q * F.log_softmax(s / 0.1, dim=1)).sum(1).mean()

    expected = ((ce(q0, scores[1]) + ce(q0, scores[2])) / 2 + (ce(q1, scores[0]) + ce(q1, scores[2])) / 2) / 2
    torch.testing.assert_close(loss, expected)
    assert 1 <= stats["prototypes_used"] <= 4 and 0 < stats["code_entropy"] <= math.log(4) + 1e-6


def test_swav_loss_gradients_flow_to_the_predictions_not_the_codes():
    scores = [torch.randn(4, 3, requires_grad=True) for _ in range(2)]
    loss, _ = swav_loss(scores)
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in scores)
    # with identical crops and equipartitioned scores the loss is the entropy of the codes' cross term
    same = torch.zeros(4, 3)
    loss_same, stats = swav_loss([same, same])
    torch.testing.assert_close(loss_same, torch.tensor(math.log(3)))       # uniform codes, uniform predictions
    assert stats["code_entropy"] == pytest.approx(math.log(3), abs=1e-6)


def test_prototypes_normalize_and_head_embeds_on_the_unit_sphere():
    head = SwAVHead(16, 10, hidden_dim=32, out_dim=8)
    with torch.no_grad():
        head.prototypes.weight.mul_(3)
    head.prototypes.normalize_()
    torch.testing.assert_close(head.prototypes.weight.norm(dim=1), torch.ones(10))
    z, s = head(torch.randn(5, 16))
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(s, z @ head.prototypes.weight.t())
    assert s.abs().max() <= 1 + 1e-6                                        # cosines


def test_queue_fills_then_puts_the_stored_embeddings_in_front():
    protos = Prototypes(3, 2)
    queue = Queue(crops=2, length=4, dim=3)
    batches = [torch.full((2, 3), float(i)) for i in range(1, 4)]
    assert queue.scores(0, protos) is None
    for z in batches[:2]:
        queue.push(0, z)
        queue.push(1, z)
    stored = queue.scores(0, protos)                                        # full after two batches of 2
    assert stored.shape == (4, 2)
    torch.testing.assert_close(queue.z[0, :2], batches[1])                  # newest first
    torch.testing.assert_close(queue.z[0, 2:], batches[0])
    # with a queue, the batch's codes come from Sinkhorn over queue + batch
    scores = [torch.randn(2, 2), torch.randn(2, 2)]
    emb = [batches[2], batches[2]]
    _, _ = swav_loss(scores, emb, prototypes=protos, queue=queue)
    torch.testing.assert_close(queue.z[0, :2], batches[2])
    with pytest.raises(ParameterError, match="does not fit a queue of length 4"):
        queue.push(0, torch.zeros(5, 3))
    with pytest.raises(ParameterError, match="a queue needs"):
        swav_loss(scores, queue=queue)
