import pytest
import torch

from vislearn.models.layers import Attention, Block, DropPath, PatchEmbed


def test_patch_embed_is_flatten_then_linear(rng):
    pe = PatchEmbed(img_size=8, patch_size=4, in_chans=2, embed_dim=5)
    x = torch.randn(3, 2, 8, 8, generator=rng)
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4)                       # (B, C, 2, 2, 4, 4)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(3, 4, 2 * 16)  # (B, N, C*p*p), row-major grid
    expected = patches @ pe.proj.weight.reshape(5, -1).T + pe.proj.bias
    assert torch.allclose(pe(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        PatchEmbed(img_size=10, patch_size=4, in_chans=1, embed_dim=4)


def test_attention_weights_match_fused_path(rng):
    attn = Attention(16, 4).eval()
    x = torch.randn(2, 7, 16, generator=rng)
    fused = attn(x)
    out, weights = attn(x, return_attention=True)
    assert weights.shape == (2, 4, 7, 7)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 7), atol=1e-6)
    assert torch.allclose(out, fused, atol=1e-5)


def test_attention_by_hand(rng):
    attn = Attention(4, 1, qkv_bias=False).eval()
    x = torch.randn(1, 3, 4, generator=rng)
    q, k, v = (x @ attn.qkv.weight.T).chunk(3, dim=-1)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)  # sqrt(head_dim = 4) = 2
    expected = attn.proj(weights @ v)
    out, w = attn(x, return_attention=True)
    assert torch.allclose(w[0, 0], weights[0], atol=1e-6) and torch.allclose(out, expected, atol=1e-6)


def test_block_layerscale_zero_is_identity(rng):
    block = Block(8, 2, init_values=0.0).eval()
    x = torch.randn(2, 5, 8, generator=rng)
    assert torch.equal(block(x), x)
    y, w = block(x, return_attention=True)
    assert torch.equal(y, x) and w.shape == (2, 2, 5, 5)


def test_drop_path_statistics(rng):
    torch.manual_seed(0)
    dp = DropPath(0.25).train()
    out = dp(torch.ones(20_000, 3))
    kept = (out[:, 0] > 0).float().mean().item()
    assert abs(kept - 0.75) < 0.02 and torch.allclose(out[out > 0], torch.tensor(1 / 0.75))
    assert torch.equal(dp.eval()(torch.ones(4, 3)), torch.ones(4, 3))
