"""vislearn.methods.lpi: switching local patch interaction off, and token influence."""


import torch

from vislearn.methods.lpi import switch_off_lpi_, token_influence, without_lpi
from vislearn.models.convert import randomize_
from vislearn.models.xcit import XCiT, XCiTConfig


def _tiny_xcit(**kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, cls_attn_layers=1, **kw)
    return randomize_(XCiT(XCiTConfig(**cfg))).eval()


def test_without_lpi_removes_the_branch_and_leaves_the_original():
    model = _tiny_xcit()
    off = without_lpi(model)
    assert all((b.gamma3 == 0).all() for b in off.blocks) and not all((b.gamma3 == 0).all() for b in model.blocks)
    x = torch.randn(2, 1, 32, 32)
    # with LPI off, its remaining weights no longer matter
    other = without_lpi(model)
    with torch.no_grad():
        for b in other.blocks:
            b.local_mp.conv1.weight.mul_(3.0)
        torch.testing.assert_close(off(x), other(x))
        assert (off(x) - model(x)).abs().max() > 1e-3


def test_switched_off_lpi_stays_off_under_training():
    model = switch_off_lpi_(_tiny_xcit()).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 32, 32)), torch.tensor([0, 1, 2, 3]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for b in model.blocks:
        assert (b.gamma3 == 0).all() and (b.local_mp.conv2.weight == 0).all() and (b.local_mp.conv2.bias == 0).all()


def test_token_influence_is_local_with_lpi_and_not_without():
    model = _tiny_xcit()
    H = W = 9
    tokens = torch.randn(1, H * W, 16)
    centre = 4 * W + 4
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ring = (ys - 4).abs().maximum((xs - 4).abs())      # 0 at the centre, 1 for its 8 neighbours, ...

    def neighbours_over_far(influence):
        return (influence[ring == 1].mean() / influence[ring >= 3].mean()).item()

    with_lpi = token_influence(model.blocks[0], tokens, (H, W), centre)
    assert with_lpi.shape == (H, W)
    # two 3x3 convolutions reach 2 tokens away; beyond that only XCA's global statistics remain
    assert neighbours_over_far(with_lpi) > 5
    without = token_influence(without_lpi(model).blocks[0], tokens, (H, W), centre)
    assert 0.5 < neighbours_over_far(without) < 2      # XCA alone does not care where a token is
    assert without[ring >= 1].max() < without[4, 4]     # and a token mostly moves itself
