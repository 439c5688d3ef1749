import math

import torch

from vislearn.analysis import attention as A


def test_cls_attention_reshapes_the_first_row():
    attn = torch.zeros(1, 2, 5, 5)
    attn[0, 1, 0, 1:] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    maps = A.cls_attention(attn)
    assert maps.shape == (1, 2, 2, 2)
    assert torch.equal(maps[0, 1], torch.tensor([[0.1, 0.2], [0.3, 0.4]]))


def test_rollout_of_identity_is_identity_and_rows_sum_to_one():
    eye = torch.eye(5).expand(2, 3, 5, 5)
    assert torch.allclose(A.rollout([eye, eye]), torch.eye(5).expand(2, 5, 5))
    attn = torch.softmax(torch.randn(2, 3, 5, 5), -1)
    r = A.rollout([attn, attn, attn])
    assert torch.allclose(r.sum(-1), torch.ones(2, 5), atol=1e-5)


def test_rollout_by_hand():
    a1, a2 = torch.softmax(torch.randn(1, 1, 3, 3), -1), torch.softmax(torch.randn(1, 1, 3, 3), -1)
    m1, m2 = 0.5 * torch.eye(3) + 0.5 * a1[0, 0], 0.5 * torch.eye(3) + 0.5 * a2[0, 0]
    assert torch.allclose(A.rollout([a1, a2])[0], m2 @ m1, atol=1e-6)


def test_mean_attention_distance_known_values():
    # 2x2 grid, patch size 4: each query attends only to itself -> distance 0
    eye = torch.eye(5).reshape(1, 1, 5, 5)
    assert A.mean_attention_distance(eye, patch_size=4).item() == 0
    # uniform over the 4 patches: distances from a corner are 0, 4, 4, 4*sqrt(2)
    uniform = torch.full((1, 1, 5, 5), 0.2)
    expected = (0 + 4 + 4 + 4 * math.sqrt(2)) / 4
    assert abs(A.mean_attention_distance(uniform, patch_size=4).item() - expected) < 1e-5


def test_position_similarity_diagonal_is_one():
    sim = A.position_similarity(torch.randn(1, 10, 6))
    assert sim.shape == (3, 3, 3, 3)
    for i in range(3):
        for j in range(3):
            assert abs(sim[i, j, i, j].item() - 1) < 1e-5


def test_upsample_map_keeps_patches():
    up = A.upsample_map(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), 4)
    assert up.shape == (4, 4) and up[0, 0] == 1 and up[3, 3] == 4 and up[0, 3] == 2
