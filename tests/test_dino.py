"""Tests for vislearn.dino: schedules, EMA, the loss by hand, centering, multi-crop, head, training."""

from __future__ import annotations

import ast
import inspect
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from vislearn import dino as D
from vislearn.vit import VisionTransformer, ViTConfig


def tiny_vit(**kw) -> VisionTransformer:
    cfg = dict(img_size=16, patch_size=4, in_chans=3, num_classes=0, embed_dim=16, depth=1, num_heads=2)
    return VisionTransformer(ViTConfig(**{**cfg, **kw}))


def test_cosine_schedule_endpoints_and_shape():
    s = D.cosine_schedule(1.0, 0.1, total_steps=100, warmup_steps=10, warmup_start=0.0)
    assert s.shape == (100,)
    assert s[0] == 0.0 and s[10] == pytest.approx(1.0) and s[-1] == pytest.approx(0.1)
    assert np.all(np.diff(s[:11]) > 0) and np.all(np.diff(s[10:]) <= 0)
    m = D.cosine_schedule(0.996, 1.0, total_steps=50)               # teacher momentum goes up to 1
    assert m[0] == pytest.approx(0.996) and m[-1] == pytest.approx(1.0) and np.all(np.diff(m) >= 0)
    assert m[25] == pytest.approx(0.996 + 0.004 * 0.5 * (1 - math.cos(math.pi * 25 / 49)))


def test_teacher_temperature_warmup():
    t = D.teacher_temperature_schedule(0.04, 0.07, warmup_steps=4, total_steps=10)
    assert t.shape == (10,)
    assert t[0] == pytest.approx(0.04) and t[3] == pytest.approx(0.07) and np.all(t[3:] == 0.07)
    assert t[1] == pytest.approx(0.05)


def test_schedules_from_config_have_one_value_per_step():
    cfg = D.DINOConfig(epochs=3, warmup_epochs=1, warmup_teacher_temp=0.02, warmup_teacher_temp_epochs=1)
    s = D.DINOSchedules.from_config(cfg, steps_per_epoch=10)
    assert all(len(v) == 30 for v in (s.lr, s.weight_decay, s.momentum, s.teacher_temp))
    assert s.lr.max() == pytest.approx(cfg.lr) and s.lr[-1] == pytest.approx(cfg.min_lr)
    assert s.weight_decay[0] == pytest.approx(0.04) and s.weight_decay[-1] == pytest.approx(0.4)
    assert s.teacher_temp[0] == pytest.approx(0.02) and s.teacher_temp[-1] == pytest.approx(0.04)


def test_ema_update_math():
    student, teacher = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    s0 = [p.clone() for p in student.parameters()]
    t0 = [p.clone() for p in teacher.parameters()]
    D.ema_update(teacher, student, 0.9)
    for pt, t, s in zip(teacher.parameters(), t0, s0, strict=True):
        assert torch.allclose(pt, 0.9 * t + 0.1 * s)
    D.ema_update(teacher, student, 0.0)                               # momentum 0: a copy
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), student.parameters(), strict=True))


def _softmax(v, temp):
    e = [math.exp(x / temp) for x in v]
    return [x / sum(e) for x in e]


def test_loss_equals_hand_computation():
    """B=1, K=3, two global views and one local: the mean over the 4 pairs (i, v != i) of
    -sum_k p_teacher_i(k) log p_student_v(k), with a zero centre at step 0."""
    t = [[1.0, 0.0, -1.0], [0.2, 0.4, 0.0]]
    s = [[0.3, -0.2, 0.1], [0.0, 0.5, -0.5], [-0.3, 0.3, 0.2]]
    loss_fn = D.DINOLoss(3, teacher_temps=0.5, student_temp=0.2, center_momentum=0.9)
    loss, stats = loss_fn([torch.tensor([x]) for x in s], [torch.tensor([x]) for x in t])
    expected, pairs = 0.0, 0
    for i, ti in enumerate(t):
        p = _softmax(ti, 0.5)
        for v, sv in enumerate(s):
            if v != i:
                q = _softmax(sv, 0.2)
                expected += -sum(pk * math.log(qk) for pk, qk in zip(p, q, strict=True))
                pairs += 1
    assert pairs == 4
    assert loss.item() == pytest.approx(expected / pairs, rel=1e-5)
    h = [-sum(pk * math.log(pk) for pk in _softmax(ti, 0.5)) for ti in t]
    assert stats["teacher_entropy"] == pytest.approx(sum(h) / 2, rel=1e-5)
    assert stats["kl"] == pytest.approx(expected / pairs - sum(h) / 2, rel=1e-4)


def test_centering_update_and_use():
    loss_fn = D.DINOLoss(3, teacher_temps=1.0, student_temp=1.0, center_momentum=0.9)
    t = [torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]), torch.tensor([[0.0, 0.0, 6.0], [2.0, 2.0, 2.0]])]
    s = [torch.zeros(2, 3)] * 2
    loss_fn(s, t)
    assert torch.allclose(loss_fn.center, 0.1 * torch.tensor([[1.5, 1.5, 3.0]]))
    loss_fn(s, t)
    assert torch.allclose(loss_fn.center, 0.19 * torch.tensor([[1.5, 1.5, 3.0]]))
    centred = loss_fn.teacher_probs([torch.tensor([[0.0, 0.0, 0.0]])], step=0)[0]
    assert torch.allclose(centred, torch.softmax(-loss_fn.center, -1))


def test_teacher_temperature_per_step():
    loss_fn = D.DINOLoss(4, teacher_temps=np.array([0.04, 0.05, 0.06]))
    assert loss_fn.teacher_temp(1) == pytest.approx(0.05) and loss_fn.teacher_temp(99) == pytest.approx(0.06)


def test_multicrop_shapes_and_determinism():
    cfg = D.MultiCropConfig(global_size=16, local_size=8, n_local=3)
    mc = D.MultiCrop(cfg)
    x = torch.randn(5, 3, 16, 16)
    crops = mc(x, torch.Generator().manual_seed(0))
    assert [tuple(c.shape) for c in crops] == [(5, 3, 16, 16)] * 2 + [(5, 3, 8, 8)] * 3
    again = mc(x, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(crops, again, strict=True))
    assert not torch.equal(crops[0], crops[1])
    assert all(torch.isfinite(c).all() for c in crops)


def test_augmentations_keep_the_range():
    x = torch.rand(6, 3, 8, 8)
    g = torch.Generator().manual_seed(1)
    for y in (D.color_jitter(x, 1.0, 0.4, 0.4, 0.2, 0.1, g), D.random_grayscale(x, 1.0, g),
              D.random_blur(x, 1.0, (0.5, 1.0), g), D.random_solarize(x, 1.0, g)):
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 + 1e-6
    assert torch.allclose(D.random_blur(x, 0.0, (0.5, 1.0), g), x)
    assert torch.allclose(D.color_jitter(x, 1.0, 0.0, 0.0, 0.0, 0.0, g), x, atol=1e-5)
    full = D.random_resized_crop(x, 8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0, generator=g)
    assert torch.allclose(full, x, atol=1e-5)                       # the whole image, unflipped
    flipped = D.random_resized_crop(x, 8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=1.0, generator=g)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-5)


def test_head_output_is_a_cosine():
    head = D.DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8)
    x = torch.randn(4, 16)
    out = head(x)
    assert out.shape == (4, 32)
    z = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    w = head.last_layer.weight
    assert torch.allclose(w.norm(dim=1), torch.ones(32), atol=1e-6)      # prototypes of unit norm
    assert torch.allclose(out, z @ torch.nn.functional.normalize(head.last_layer.weight_v, dim=1).T, atol=1e-6)
    assert out.abs().max() <= 1 + 1e-6
    assert not head.last_layer.weight_g.requires_grad
    assert D.DINOHead(16, 32, norm_last_layer=False).last_layer.weight_g.requires_grad


def test_backbone_on_local_crops_interpolates_positions():
    vit = tiny_vit()
    assert D.interpolate_pos_embed(vit.pos_embed, 1, 4) is vit.pos_embed
    assert D.interpolate_pos_embed(vit.pos_embed, 1, 2).shape == (1, 1 + 4, 16)
    x = torch.randn(3, 3, 16, 16)
    assert torch.allclose(D.backbone_features(vit, x), vit.forward_head(vit.forward_features(x), pre_logits=True))
    assert D.backbone_features(vit, torch.randn(3, 3, 8, 8)).shape == (3, 16)


def test_dino_wrapper_teacher_is_a_frozen_copy():
    model = D.DINO(tiny_vit(), out_dim=8, hidden_dim=16, bottleneck_dim=4)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.teacher.parameters(), model.student.parameters(),
                                                 strict=True))
    crops = [torch.randn(2, 3, 16, 16)] * 2 + [torch.randn(2, 3, 8, 8)] * 2
    out = model.student_scores(crops)
    assert [tuple(o.shape) for o in out] == [(2, 8)] * 4
    model.train()
    assert model.student.training and not model.teacher.training


def test_train_dino_runs_and_logs_diagnostics():
    torch.manual_seed(0)
    model = D.DINO(tiny_vit(), out_dim=8, hidden_dim=16, bottleneck_dim=4)
    cfg = D.DINOConfig(epochs=2, batch_size=4, out_dim=8, warmup_epochs=0.5, log_every=1,
                       freeze_last_layer_epochs=1, crops=D.MultiCropConfig(global_size=16, local_size=8, n_local=2))
    prototypes = model.student["head"].last_layer.weight_v.clone()
    teacher0 = [p.clone() for p in model.teacher.parameters()]
    images = torch.randn(8, 3, 16, 16)
    ev = D.EvalSet(images, torch.tensor([0, 1] * 4), images[:4], torch.tensor([0, 1, 0, 1]),
                   torch.zeros(4, 16, 16, dtype=torch.bool))
    h = D.train_dino(model, images, cfg, eval_set=ev, progress=False)
    assert len(h.steps) == 4
    for key in ("loss", "teacher_entropy", "teacher_batch_entropy", "kl", "center_norm", "lr", "momentum"):
        assert all(math.isfinite(s[key]) for s in h.steps)
    assert h.evals and 0 <= h.evals[-1]["knn"] <= 1 and 0 <= h.evals[-1]["jaccard"] <= 1
    assert h.images_per_second > 0
    assert not torch.equal(prototypes, model.student["head"].last_layer.weight_v)  # unfrozen after epoch 1
    assert any(not torch.equal(a, b) for a, b in zip(teacher0, model.teacher.parameters(), strict=True))


def test_prototypes_frozen_during_the_first_epoch():
    model = D.DINO(tiny_vit(), out_dim=8, hidden_dim=16, bottleneck_dim=4)
    cfg = D.DINOConfig(epochs=1, batch_size=4, out_dim=8, freeze_last_layer_epochs=1, log_every=1,
                       crops=D.MultiCropConfig(global_size=16, local_size=8, n_local=1))
    prototypes = model.student["head"].last_layer.weight_v.clone()
    D.train_dino(model, torch.randn(8, 3, 16, 16), cfg, progress=False)
    assert torch.equal(prototypes, model.student["head"].last_layer.weight_v)


def test_single_process_no_torch_distributed(monkeypatch):
    """No import of torch.distributed and no attribute named like its calls in the code (docstrings
    may mention it); and a training step runs with every collective call booby-trapped."""
    tree = ast.parse(inspect.getsource(D))
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not any("distributed" in m for m in imported)
    attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not attributes & {"distributed", "all_reduce", "get_world_size", "get_rank", "barrier"}

    def trap(*args, **kwargs):
        raise AssertionError("torch.distributed was called")

    for name in ("all_reduce", "get_world_size", "get_rank", "barrier", "is_initialized", "broadcast"):
        if hasattr(torch.distributed, name):
            monkeypatch.setattr(torch.distributed, name, trap)
    cfg = D.DINOConfig(epochs=1, batch_size=4, out_dim=8, log_every=1,
                       crops=D.MultiCropConfig(global_size=16, local_size=8, n_local=1))
    D.train_dino(D.DINO(tiny_vit(), out_dim=8, hidden_dim=16, bottleneck_dim=4), torch.randn(4, 3, 16, 16), cfg,
                 progress=False)


def test_recipes_build():
    for name, recipe in D.RECIPES.items():
        assert set(recipe.presets) == {"smoke", "classroom", "full"}, name
        model = D.build("vit", recipe.model)
        assert model.cfg.img_size // model.cfg.patch_size >= 8          # attention grid at least 8 x 8
    assert D.RECIPES["dino_scenes"].kind == "dino" and D.RECIPES["vit_scenes"].kind == "supervised"


def test_cli_rejects_an_unknown_recipe_with_exit_code_2(capsys):
    from vislearn import dino

    assert dino.main(["no_such_recipe"]) == 2
    assert "recipe" in capsys.readouterr().err


def test_dino_recipes_share_the_white_object_scenes_and_the_backbone():
    dino_recipe, supervised = D.RECIPES["dino_scenes"], D.RECIPES["vit_scenes"]
    assert dino_recipe.scenes == supervised.scenes == D.DINO_SCENES
    assert D.DINO_SCENES.saturation == (0.0, 0.0) and D.DINO_SCENES.contrast[1] < 0.1   # white objects, flat textures
    assert {**supervised.model, "num_classes": 0} == dino_recipe.model
    full = dino_recipe.presets["full"]
    assert full.train.crops.n_local >= 1 and full.train.crops.local_size % dino_recipe.model["patch_size"] == 0


def test_train_dino_stops_at_max_steps_with_the_planned_schedules():
    cfg = D.DINOConfig(epochs=3, batch_size=4, out_dim=8, log_every=4, warmup_epochs=1,
                       crops=D.MultiCropConfig(global_size=16, local_size=8, n_local=1))
    images = torch.randn(16, 3, 16, 16)                     # 4 steps per epoch: 12 planned
    hist = D.train_dino(D.DINO(tiny_vit(), out_dim=8, hidden_dim=16, bottleneck_dim=4), images, cfg,
                        progress=False, max_steps=6)
    assert [s["step"] for s in hist.steps] == [4, 6]        # logged every 4 steps, and at the stop
    planned = D.DINOSchedules.from_config(cfg, 4)
    assert len(planned.lr) == 12 and hist.steps[-1]["lr"] == pytest.approx(float(planned.lr[5]))


def test_center_momentum_one_means_no_centering():
    loss_fn = D.DINOLoss(4, teacher_temps=0.04, center_momentum=1.0)
    teacher = [torch.randn(3, 4) + 5, torch.randn(3, 4) + 5]
    for _ in range(3):
        loss_fn([torch.randn(3, 4)] * 3, teacher)
    assert torch.equal(loss_fn.center, torch.zeros(1, 4))
    expected = torch.softmax(teacher[0] / 0.04, dim=-1)     # the teacher is only sharpened
    assert torch.allclose(loss_fn.teacher_probs(teacher, 0)[0], expected)


def test_hub_dino_from_a_local_file_and_photo_batch(tmp_path):
    """weights='hub' offline: timm loads the 'published' DINO ViT-S/16 from a local file we wrote, and
    hub_dino returns it with our converted ViT, equal on real photos; attention is 6 heads on 14 x 14."""
    import timm
    from safetensors.torch import save_file

    from vislearn.evaluation import cls_attention_maps

    reference = timm.create_model(D.HUB_DINO, pretrained=False)
    assert reference.num_classes == 0                       # the published DINO backbone has no head
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    path = tmp_path / "dino_vits16.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    hub, ours = D.hub_dino(file=path)
    x, shown = D.photo_batch(hub, ("chelsea", "coffee"))
    assert x.shape == (2, 3, 224, 224) and shown.min() >= 0 and shown.max() <= 1
    assert abs(float(x.mean())) < 1.5 and float(shown.std()) > 0.05          # normalized inputs of real photos
    with torch.no_grad():
        ref = hub.forward_head(hub.forward_features(x), pre_logits=True)
        assert torch.equal(ref, reference.eval().forward_head(reference.forward_features(x), pre_logits=True))
        assert (ours.forward_head(ours.forward_features(x), pre_logits=True) - ref).abs().max() < 1e-4
    maps = cls_attention_maps(ours, x)
    assert maps.shape == (2, 6, 14, 14) and (maps.sum((2, 3)) <= 1 + 1e-5).all()


def test_same_steps_keeps_the_schedules_step_for_step():
    """The full recipe on 60,000 images and its rescaled config on 20,000: identical schedules."""
    cfg = D.RECIPES["dino_scenes"].presets["full"].train
    run = D.RECIPES["dino_scenes"].presets["full"]
    total = run.train_scenes + run.extra_scenes
    a = D.DINOSchedules.from_config(cfg, total // cfg.batch_size)
    small = D.same_steps(cfg, total, run.train_scenes)
    b = D.DINOSchedules.from_config(small, run.train_scenes // cfg.batch_size)
    for x, y in zip(asdict(a).values(), asdict(b).values(), strict=True):
        assert x.shape == y.shape and np.allclose(x, y)
    assert small.epochs == cfg.epochs * total / run.train_scenes


def test_dino_recipes_train_on_the_same_scenes():
    dino_full, supervised_full = (D.RECIPES[n].presets["full"] for n in ("dino_scenes", "vit_scenes"))
    assert dino_full.train_scenes == supervised_full.train_scenes
    assert dino_full.extra_scenes == supervised_full.extra_scenes
    assert dino_full.extra_scenes > 0                        # more unlabelled scenes than the k-NN bank


@pytest.mark.parametrize("kind", ["dino", "supervised"])
def test_run_recipe_trains_on_the_extra_scenes_but_keeps_the_bank(monkeypatch, kind):
    """``extra_scenes`` are trained on (DINO without labels, supervised with) and stay out of the bank."""
    from vislearn.data import DataNotFoundError
    from vislearn.scenes import SceneConfig

    seen = {}
    real_train_dino, real_fit = D.train_dino, D.fit

    def spy_dino(dino, images, *args, **kwargs):
        seen["n"] = len(images)
        return real_train_dino(dino, images, *args, **kwargs)

    def spy_fit(model, data, *args, **kwargs):
        seen["n"] = len(data)
        return real_fit(model, data, *args, **kwargs)

    monkeypatch.setattr(D, "train_dino", spy_dino)
    monkeypatch.setattr(D, "fit", spy_fit)
    vit = dict(img_size=16, patch_size=4, in_chans=3, num_classes=0 if kind == "dino" else 10, embed_dim=16,
               depth=1, num_heads=2, mlp_ratio=2.0)
    if kind == "dino":
        train_cfg = D.DINOConfig(epochs=1, batch_size=8, out_dim=8, hidden_dim=16, bottleneck_dim=4, log_every=1,
                                 crops=D.MultiCropConfig(global_size=16, local_size=8, n_local=1))
    else:
        train_cfg = D.TrainConfig(epochs=1, batch_size=8)
    run = D.ScenesRun(16, 8, train_cfg, extra_scenes=24)
    recipe = D.ScenesRecipe(name="tiny", kind=kind, model=vit, scenes=SceneConfig(size=16, min_side=8, max_side=12),
                            presets={p: run for p in ("smoke", "classroom", "full")})
    monkeypatch.setitem(D.RECIPES, "tiny", recipe)
    try:
        _, _, metrics = D.run_recipe("tiny", "smoke", device="cpu", progress=False)
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST not available")
    assert seen["n"] == 16 + 24
    assert metrics["train_scenes"] == 40 and metrics["bank_scenes"] == 16 and metrics["test_scenes"] == 8
