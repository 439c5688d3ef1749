"""The recipes of notebook 04 (vislearn/recipes/nb04_xcit.py)."""


import torch

from vislearn.data import fmnist
from vislearn.data.augment import random_zoom
from vislearn.data.fmnist import pad_to_32
from vislearn.models.convert import randomize_
from vislearn.models.vit import VisionTransformer, ViTConfig
from vislearn.models.xcit import XCiT, XCiTConfig
from vislearn.recipes import all_recipes


def _tiny_xcit(**kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, cls_attn_layers=1, **kw)
    return randomize_(XCiT(XCiTConfig(**cfg))).eval()


def test_recipes_registered_with_presets():
    recipes = all_recipes()
    names = ["xcit_fmnist32", "vit_fmnist32", "xcit_fmnist32_nolpi", "xcit_fmnist32_zoom", "vit_fmnist32_zoom"]
    for name in names:
        r = recipes[name]
        assert r.arch == name.split("_")[0] and set(r.presets) == {"smoke", "classroom", "full"}
        assert r.model["img_size"] == 32 and r.model["patch_size"] == 8 and r.model["embed_dim"] == 64
        assert r.presets["smoke"].train_limit is not None and r.presets["full"].train_limit is None
        assert r.presets["full"].epochs > r.presets["classroom"].epochs > r.presets["smoke"].epochs
    assert recipes["xcit_fmnist32"].make_loss is None and recipes["vit_fmnist32"].make_loss is None
    assert all(recipes[n].make_loss is not None for n in names[2:])
    assert recipes["xcit_fmnist32_zoom"].model == recipes["xcit_fmnist32"].model
    assert recipes["vit_fmnist32_zoom"].model == recipes["vit_fmnist32"].model
    # similar size: the same number of attention blocks, parameters within 20%
    xcit_cfg, vit_cfg = recipes["xcit_fmnist32"].model, recipes["vit_fmnist32"].model
    assert xcit_cfg["depth"] + xcit_cfg["cls_attn_layers"] == vit_cfg["depth"]
    n_xcit = sum(p.numel() for p in XCiT(XCiTConfig(**xcit_cfg)).parameters())
    n_vit = sum(p.numel() for p in VisionTransformer(ViTConfig(**vit_cfg)).parameters())
    assert abs(n_xcit - n_vit) / n_vit < 0.2


def test_recipe_data_is_32px(monkeypatch):
    fake = torch.utils.data.TensorDataset(torch.randn(5, 1, 28, 28), torch.arange(5))
    monkeypatch.setattr(fmnist, "fashion_mnist", lambda split, limit, seed=0: fake)
    images, labels = fmnist.fashion_mnist_32("test", 5, 0).tensors
    assert images.shape == (5, 1, 32, 32) and labels.tolist() == [0, 1, 2, 3, 4]
    assert fmnist.fashion_mnist_at("test", 5, 0, size=48).tensors[0].shape == (5, 1, 48, 48)


def test_nolpi_loss_switches_lpi_off():
    from vislearn.recipes.nb04_xcit import _lpi_off_loss

    model = _tiny_xcit().train()
    loss = _lpi_off_loss(torch.device("cpu"))(model, torch.randn(2, 1, 32, 32), torch.tensor([0, 1]))
    assert loss.ndim == 0 and all((b.gamma3 == 0).all() for b in model.blocks)


def test_zoom_loss_is_cross_entropy_on_zoomed_images():
    from vislearn.recipes.nb04_xcit import _zoom_loss

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 3))
    x, y = pad_to_32(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 0])
    loss = _zoom_loss(torch.device("cpu"))(model, x, y)
    expected = torch.nn.functional.cross_entropy(model(random_zoom(x, torch.Generator().manual_seed(0))), y)
    torch.testing.assert_close(loss, expected)


def test_zoom_loss_on_a_shard_zooms_as_one_process_would(monkeypatch):
    """Under torchrun (faked: rank 1 of 2) the shard gets the zooms of its slice of the global batch."""
    from vislearn.recipes.nb04_xcit import _zoom_loss
    from vislearn.train import distributed

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 3))
    x, y = pad_to_32(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 0])
    whole = random_zoom(x, torch.Generator().manual_seed(0))                      # one process, global batch
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    loss = _zoom_loss(torch.device("cpu"))(model, x[2:], y[2:])
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(model(whole[2:]), y[2:]))
