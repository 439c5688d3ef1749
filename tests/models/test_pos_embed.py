"""vislearn.models.layers.resize_pos_embed: shapes, identity, equal to timm's."""


import pytest
import torch
from timm.layers import resample_abs_pos_embed

from vislearn.models.layers import resize_pos_embed


def test_resize_pos_embed_shapes_identity_and_timm():
    pe = torch.randn(1, 1 + 16, 24)
    assert resize_pos_embed(pe, 4) is pe                                    # same grid: unchanged
    for grid in (3, 6, 8):
        ours = resize_pos_embed(pe, grid)
        assert ours.shape == (1, 1 + grid * grid, 24)
        torch.testing.assert_close(ours[:, :1], pe[:, :1])                  # [CLS] keeps its embedding
        torch.testing.assert_close(ours, resample_abs_pos_embed(pe, [grid, grid], num_prefix_tokens=1))
    assert resize_pos_embed(pe, (2, 5)).shape == (1, 11, 24)
    with pytest.raises(ValueError, match="square"):
        resize_pos_embed(torch.randn(1, 1 + 15, 8), 4)
