"""vislearn.train.recipe: one Recipe type, run (checks before training, saves together), bundled, and
trained_or_bundled; and param_groups, the one weight-decay rule."""

import shlex
from dataclasses import replace

import pytest
import torch
from torch.utils.data import TensorDataset

from vislearn import recipes, train
from vislearn.config import ParameterError, Setup
from vislearn.models.deit import DeiTConfig, DistilledVisionTransformer
from vislearn.models.vit import VisionTransformer, ViTConfig
from vislearn.recipes.cli import build_parser, parse_overrides
from vislearn.train import weights
from vislearn.train.loop import TrainConfig, param_groups

TINY = ViTConfig(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2, num_classes=2)


def toy_data(split, limit, seed):
    n = limit or 64
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)), torch.arange(n) % 2)


def toy_recipe(**kw):
    cfg = TrainConfig(epochs=1, batch_size=16, augment=False, warmup_epochs=0)
    return train.Recipe(name="toy", arch="vit", model=TINY.to_dict(), notebook="00_test", data=toy_data,
                        presets={"smoke": cfg, "classroom": cfg, "full": replace(cfg, train_limit=32)}, **kw)


def test_a_recipe_with_its_own_data_and_loss_trains_and_saves_everything(tmp_path):
    used = []

    def make_loss(device):
        def loss_fn(model, x, y):
            used.append(x.shape[0])
            return torch.nn.functional.cross_entropy(model(x), y)
        return loss_fn

    trained = train.run(toy_recipe(make_loss=make_loss), "full", out=tmp_path, device="cpu", seed=3, progress=False,
                        overrides={"lr": 0.01})
    assert used == [16, 16] and trained.metrics["train_images"] == 32
    e = weights.entry("toy", tmp_path)
    assert e == trained.entry and e["preset"] == "full" and e["seed"] == 3 and e["train_config"]["lr"] == 0.01
    assert e["command"] == f"python -m vislearn.train toy --preset full --out {tmp_path} --seed 3 --set lr=0.01"
    args = build_parser().parse_args(shlex.split(e["command"])[3:])         # the command parses back to the run
    assert (args.recipe, args.preset, args.seed, parse_overrides(args.set)) == ("toy", "full", "3", {"lr": 0.01})
    assert weights.read_history("toy", tmp_path) == trained.history.to_dict()
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(weights.load("toy", tmp_path)(x), trained.model.eval()(x))


def test_the_output_folder_is_checked_before_the_first_step(tmp_path):
    def trainer(*args, **kwargs):
        raise AssertionError("training started before the output folder was checked")

    (tmp_path / "afile").write_text("")
    with pytest.raises(weights.CheckpointError, match="is a file"):
        train.run(toy_recipe(trainer=trainer), "smoke", out=tmp_path / "afile", device="cpu")
    train.run(toy_recipe(), "full", out=tmp_path / "ckpt", device="cpu", progress=False)
    with pytest.raises(weights.CheckpointError, match="--force"):                 # full there: smoke would replace it
        train.run(toy_recipe(trainer=trainer), "smoke", out=tmp_path / "ckpt", device="cpu")


def test_presets_overrides_and_their_errors():
    recipe = recipes.get("vit_fmnist")
    assert recipe.config("full").epochs > recipe.config("classroom").epochs > recipe.config("smoke").epochs
    assert recipe.config("full", {"epochs": 3}).epochs == 3 and recipe.config("full").epochs == 15
    with pytest.raises(ParameterError, match="preset='huge'"):
        recipe.config("huge")
    with pytest.raises(ParameterError, match="--set key='epoch' is not allowed; choose one of: 'epochs'"):
        recipe.config("full", {"epoch": 3})
    dino = recipes.get("dino_scenes")                        # settings that nest a training config
    assert dino.config("smoke", {"lr": 1e-3}).train.lr == 1e-3 and dino.config("smoke").train.lr == 5e-4
    with pytest.raises(ParameterError, match="recipe='nope' is not allowed"):
        recipes.get("nope")


def test_trained_or_bundled():
    bundled = train.trained_or_bundled(recipes.get("vit_fmnist"), Setup("classroom", torch.device("cpu"), 0))
    assert isinstance(bundled.model, VisionTransformer) and not bundled.model.training
    assert bundled.source.startswith("bundled checkpoint (vit_fmnist --preset full") and bundled.history.evals
    assert bundled.metrics == weights.entry("vit_fmnist")["metrics"]
    fresh = train.trained_or_bundled(toy_recipe(), Setup("full", torch.device("cpu"), 0), progress=False)
    assert fresh.source == "trained in this run (toy, preset full)" and fresh.metrics["train_images"] == 32


def test_param_groups_is_timms_rule_and_the_bundled_recipes_pin_theirs():
    model = DistilledVisionTransformer(DeiTConfig(**TINY.to_dict()))
    names = {id(p): n for n, p in model.named_parameters()}
    timm_rule = param_groups(model, 0.05)
    no_decay = {names[id(p)] for p in timm_rule[1]["params"]}
    assert {"cls_token", "dist_token", "pos_embed", "blocks.0.norm1.weight", "head.bias"} <= no_decay
    assert all(names[id(p)].endswith("weight") and p.ndim >= 2 for p in timm_rule[0]["params"])
    assert timm_rule[0]["weight_decay"] == 0.05 and timm_rule[1]["weight_decay"] == 0.0
    dino_rule = {names[id(p)] for p in param_groups(model, 0.05, skip=())[0]["params"]}   # DINO's reference
    assert {"cls_token", "dist_token", "pos_embed"} <= dino_rule
    manifest = weights.read_manifest()
    for name, recipe in recipes.all_recipes().items():       # bundled checkpoints: as they were trained
        settings = recipe.config("full")
        pinned = getattr(settings, "train", settings).__dict__.get("wd_skip", ())
        trained = manifest[name].get("train_config", {})
        trained = trained.get("train", trained).get("wd_skip", ())   # entries before the field: skip=()
        assert (None if pinned is None else list(pinned)) == (None if trained is None else list(trained)), name


def test_every_recipe_is_registered_once_and_names_its_notebook():
    from pathlib import Path

    found = recipes.all_recipes()
    assert len(found) == 21 and set(weights.read_manifest()) == set(found)
    notebooks = {p.stem for p in (Path(recipes.__file__).parents[2] / "notebooks").glob("*.ipynb")}
    for name, recipe in found.items():
        assert recipe.notebook in notebooks, name
        assert set(recipe.presets) == {"smoke", "classroom", "full"}, name
