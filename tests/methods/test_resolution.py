"""vislearn.methods.resolution: a ViT at another resolution, accuracy at any size."""


import pytest
import torch

from vislearn.methods.resolution import accuracy_at, at_resolution, vit_at_resolution
from vislearn.models.convert import randomize_
from vislearn.models.vit import VisionTransformer, ViTConfig
from vislearn.models.xcit import XCiT, XCiTConfig


def test_vit_at_resolution():
    vit = randomize_(VisionTransformer(ViTConfig(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2)))
    vit.eval()
    x = torch.randn(2, 1, 32, 32)
    same = vit_at_resolution(vit, 32)
    torch.testing.assert_close(same(x), vit(x))                                # identity at the same size
    big = vit_at_resolution(vit, 64)
    assert big.pos_embed.shape == (1, 1 + 64, 16) and big.cfg.img_size == 64 and not big.training
    assert big(torch.randn(2, 1, 64, 64)).shape == (2, 10)
    assert vit.cfg.img_size == 32 and vit.pos_embed.shape == (1, 17, 16)      # the original is untouched
    xcit = XCiT(XCiTConfig(img_size=32, embed_dim=16, depth=1, num_heads=2, cls_attn_layers=1))
    assert at_resolution(xcit, 64) is xcit
    with pytest.raises(TypeError):
        at_resolution(torch.nn.Linear(2, 2), 64)


def test_accuracy_at_resolution():
    vit = VisionTransformer(ViTConfig(img_size=16, patch_size=8, embed_dim=8, depth=1, num_heads=2, num_classes=3))
    images, labels = torch.randn(10, 1, 16, 16), torch.randint(0, 3, (10,))
    for size in (16, 24, 32):
        acc = accuracy_at(vit, images, labels, size, batch_size=4)
        assert 0.0 <= acc <= 1.0 and (acc * 10) == round(acc * 10)
