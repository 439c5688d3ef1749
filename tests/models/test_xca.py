"""XCA alone: shapes, and channel attention that sums to one (vislearn.models.xcit)."""


import pytest
import torch

from vislearn.models.convert import randomize_
from vislearn.models.xcit import XCA


@pytest.mark.parametrize("tokens", [1, 7, 300])
def test_xca_shapes_and_channel_attention_rows_sum_to_one(tokens):
    layer = randomize_(XCA(48, 4)).eval()
    x = torch.randn(2, tokens, 48)
    with torch.no_grad():
        out, attn = layer(x, return_attention=True)
    assert out.shape == (2, tokens, 48)
    assert attn.shape == (2, 4, 12, 12)                  # d x d per head, whatever the number of tokens
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, 12))
