"""The recipes of notebook 05 (vislearn/recipes/nb05_dino.py): scenes, backbone, extra scenes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vislearn import train
from vislearn.data import augment, scenes
from vislearn.methods import dino_training as T
from vislearn.models.vit import VisionTransformer, ViTConfig
from vislearn.recipes import get
from vislearn.recipes import nb05_dino as nb05


def tiny_vit(**kw) -> VisionTransformer:
    cfg = dict(img_size=16, patch_size=4, in_chans=3, num_classes=0, embed_dim=16, depth=1, num_heads=2)
    return VisionTransformer(ViTConfig(**{**cfg, **kw}))


def test_recipes_build():
    for recipe in nb05.RECIPES:
        name = recipe.name
        assert set(recipe.presets) == {"smoke", "classroom", "full"}, name
        model = nb05.build("vit", recipe.model)
        assert model.cfg.img_size // model.cfg.patch_size >= 8          # attention grid at least 8 x 8
    assert isinstance(get("dino_scenes").config("full").train, T.DINOConfig)
    assert isinstance(get("vit_scenes").config("full").train, nb05.TrainConfig)


def test_cli_rejects_an_unknown_recipe_with_exit_code_2(capsys):
    from vislearn.recipes.cli import main

    assert main(["no_such_recipe"]) == 2
    assert "recipe" in capsys.readouterr().err


def test_dino_recipes_share_the_white_object_scenes_and_the_backbone():
    dino_recipe, supervised = get("dino_scenes"), get("vit_scenes")
    for preset in ("smoke", "classroom", "full"):
        assert dino_recipe.config(preset).scenes == supervised.config(preset).scenes == scenes.DINO_SCENES
    # white objects, flat textures
    assert scenes.DINO_SCENES.saturation == (0.0, 0.0) and scenes.DINO_SCENES.contrast[1] < 0.1
    assert {**supervised.model, "num_classes": 0} == dino_recipe.model
    full = dino_recipe.presets["full"]
    assert full.train.crops.n_local >= 1 and full.train.crops.local_size % dino_recipe.model["patch_size"] == 0


def test_dino_recipes_train_on_the_same_scenes():
    dino_full, supervised_full = (get(n).presets["full"] for n in ("dino_scenes", "vit_scenes"))
    assert dino_full.train_scenes == supervised_full.train_scenes
    assert dino_full.extra_scenes == supervised_full.extra_scenes
    assert dino_full.extra_scenes > 0                        # more unlabelled scenes than the k-NN bank


@pytest.mark.parametrize("kind", ["dino", "supervised"])
def test_run_recipe_trains_on_the_extra_scenes_but_keeps_the_bank(monkeypatch, kind):
    """``extra_scenes`` are trained on (DINO without labels, supervised with) and stay out of the bank."""
    from vislearn.data import DataNotFoundError
    from vislearn.data.scenes import SceneConfig

    seen = {}
    real_train_dino, real_fit = nb05.train_dino, nb05.fit

    def spy_dino(dino, images, *args, **kwargs):
        seen["n"] = len(images)
        return real_train_dino(dino, images, *args, **kwargs)

    def spy_fit(model, data, *args, **kwargs):
        seen["n"] = len(data)
        return real_fit(model, data, *args, **kwargs)

    monkeypatch.setattr(nb05, "train_dino", spy_dino)
    monkeypatch.setattr(nb05, "fit", spy_fit)
    vit = dict(img_size=16, patch_size=4, in_chans=3, num_classes=0 if kind == "dino" else 10, embed_dim=16,
               depth=1, num_heads=2, mlp_ratio=2.0)
    if kind == "dino":
        train_cfg = T.DINOConfig(epochs=1, batch_size=8, out_dim=8, hidden_dim=16, bottleneck_dim=4, log_every=1,
                                 crops=augment.MultiCropConfig(global_size=16, local_size=8, n_local=1))
    else:
        train_cfg = nb05.TrainConfig(epochs=1, batch_size=8)
    run = nb05.ScenesRun(16, 8, train_cfg, extra_scenes=24, scenes=SceneConfig(size=16, min_side=8, max_side=12))
    recipe = replace(get("dino_scenes" if kind == "dino" else "vit_scenes"), name="tiny", model=vit,
                     presets={p: run for p in ("smoke", "classroom", "full")})
    try:
        metrics = train.run(recipe, "smoke", device="cpu", progress=False).metrics
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST not available")
    assert seen["n"] == 16 + 24
    assert metrics["train_scenes"] == 40 and metrics["bank_scenes"] == 16 and metrics["test_scenes"] == 8


def test_validation_scenes_exclude_every_item_the_bundled_models_trained_on():
    """The full recipe trains on 20,000 bank scenes (seed 0) and 40,000 extra ones (seed 1): validation
    scenes paste none of those items, nor any of a notebook's own bank; test scenes are another split."""
    from vislearn.data import DataNotFoundError

    full = get("dino_scenes").presets["full"]
    try:
        trained = nb05.trained_items(full, 0)
        bank = scenes.make_scenes(50, "train", 3, full.scenes)
        val = nb05.validation_scenes(200, [full], 0, bank=bank)
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST not available")
    assert len(trained) == full.train_scenes + full.extra_scenes
    assert not set(val.items.tolist()) & (set(trained.tolist()) | set(bank.items.tolist()))
    assert val.config == full.scenes and len(val) == 200
