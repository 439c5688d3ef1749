"""vislearn.methods.dino_training: the single-process loop, its diagnostics and schedules."""

from __future__ import annotations

import ast
import inspect
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from vislearn.analysis.evaluation import EvalSet, backbone_evaluator
from vislearn.data import augment
from vislearn.methods import dino as D
from vislearn.methods import dino_training as T
from vislearn.recipes import get

from .tiny import tiny_vit


def test_schedules_from_config_have_one_value_per_step():
    cfg = T.DINOConfig(epochs=3, warmup_epochs=1, warmup_teacher_temp=0.02, warmup_teacher_temp_epochs=1)
    s = T.DINOSchedules.from_config(cfg, steps_per_epoch=10)
    assert all(len(v) == 30 for v in (s.lr, s.weight_decay, s.momentum, s.teacher_temp))
    assert s.lr.max() == pytest.approx(cfg.lr) and s.lr[-1] == pytest.approx(cfg.min_lr, abs=1e-5)
    assert s.weight_decay[0] == pytest.approx(0.04) and s.weight_decay[-1] == pytest.approx(0.4, abs=1e-3)
    assert s.teacher_temp[0] == pytest.approx(0.02) and s.teacher_temp[-1] == pytest.approx(0.04)


def test_train_dino_runs_and_logs_diagnostics():
    torch.manual_seed(0)
    model = D.DINO(tiny_vit(), out_dim=8, hidden_dim=16, bottleneck_dim=4)
    cfg = T.DINOConfig(epochs=2, batch_size=4, out_dim=8, warmup_epochs=0.5, log_every=1,
                       freeze_last_layer_epochs=1,
                       crops=augment.MultiCropConfig(global_size=16, local_size=8, n_local=2))
    prototypes = model.student["head"].last_layer.weight_v.clone()
    teacher0 = [p.clone() for p in model.teacher.parameters()]
    images = torch.randn(8, 3, 16, 16)
    ev = EvalSet(images, torch.tensor([0, 1] * 4), images[:4], torch.tensor([0, 1, 0, 1]),
                   torch.zeros(4, 16, 16, dtype=torch.bool))
    h = T.train_dino(model, images, cfg, evaluate=backbone_evaluator(ev), progress=False)
    assert len(h.steps) == 4
    for key in ("loss", "teacher_entropy", "teacher_batch_entropy", "kl", "center_norm", "lr", "momentum"):
        assert all(math.isfinite(s[key]) for s in h.steps)
    assert h.evals and 0 <= h.evals[-1]["knn"] <= 1 and 0 <= h.evals[-1]["jaccard"] <= 1
    assert h.images_per_second > 0
    assert not torch.equal(prototypes, model.student["head"].last_layer.weight_v)  # unfrozen after epoch 1
    assert any(not torch.equal(a, b) for a, b in zip(teacher0, model.teacher.parameters(), strict=True))


def test_prototypes_frozen_during_the_first_epoch():
    model = D.DINO(tiny_vit(), out_dim=8, hidden_dim=16, bottleneck_dim=4)
    cfg = T.DINOConfig(epochs=1, batch_size=4, out_dim=8, freeze_last_layer_epochs=1, log_every=1,
                       crops=augment.MultiCropConfig(global_size=16, local_size=8, n_local=1))
    prototypes = model.student["head"].last_layer.weight_v.clone()
    T.train_dino(model, torch.randn(8, 3, 16, 16), cfg, progress=False)
    assert torch.equal(prototypes, model.student["head"].last_layer.weight_v)


def test_single_process_no_torch_distributed(monkeypatch):
    """No import of torch.distributed and no attribute named like its calls in the code (docstrings
    may mention it); and a training step runs with every collective call booby-trapped."""
    tree = ast.parse(inspect.getsource(D) + "\n" + inspect.getsource(T))
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
    cfg = T.DINOConfig(epochs=1, batch_size=4, out_dim=8, log_every=1,
                       crops=augment.MultiCropConfig(global_size=16, local_size=8, n_local=1))
    T.train_dino(D.DINO(tiny_vit(), out_dim=8, hidden_dim=16, bottleneck_dim=4), torch.randn(4, 3, 16, 16), cfg,
                 progress=False)


def test_train_dino_stops_at_max_steps_with_the_planned_schedules(capsys):
    cfg = T.DINOConfig(epochs=3, batch_size=4, out_dim=8, log_every=4, warmup_epochs=1,
                       crops=augment.MultiCropConfig(global_size=16, local_size=8, n_local=1))
    images = torch.randn(16, 3, 16, 16)                     # 4 steps per epoch: 12 planned
    hist = T.train_dino(D.DINO(tiny_vit(), out_dim=8, hidden_dim=16, bottleneck_dim=4), images, cfg,
                        progress=True, max_steps=6)
    bar = capsys.readouterr().err
    assert "6/6" in bar and "/12" not in bar                # the bar is sized to the run, and ends full
    assert [s["step"] for s in hist.steps] == [4, 6]        # logged every 4 steps, and at the stop
    planned = T.DINOSchedules.from_config(cfg, 4)
    assert len(planned.lr) == 12 and hist.steps[-1]["lr"] == pytest.approx(float(planned.lr[5]))


def test_center_momentum_one_means_no_centering():
    loss_fn = D.DINOLoss(4, teacher_temps=0.04, center_momentum=1.0)
    teacher = [torch.randn(3, 4) + 5, torch.randn(3, 4) + 5]
    for _ in range(3):
        loss_fn([torch.randn(3, 4)] * 3, teacher)
    assert torch.equal(loss_fn.center, torch.zeros(1, 4))
    expected = torch.softmax(teacher[0] / 0.04, dim=-1)     # the teacher is only sharpened
    assert torch.allclose(loss_fn.teacher_probs(teacher, 0)[0], expected)


def test_same_steps_keeps_the_schedules_step_for_step():
    """The full recipe on 60,000 images and its rescaled config on 20,000: identical schedules."""
    cfg = get("dino_scenes").presets["full"].train
    run = get("dino_scenes").presets["full"]
    total = run.train_scenes + run.extra_scenes
    a = T.DINOSchedules.from_config(cfg, total // cfg.batch_size)
    small = T.same_steps(cfg, total, run.train_scenes)
    b = T.DINOSchedules.from_config(small, run.train_scenes // cfg.batch_size)
    for x, y in zip(asdict(a).values(), asdict(b).values(), strict=True):
        assert x.shape == y.shape and np.allclose(x, y)
    assert small.epochs == cfg.epochs * total / run.train_scenes


def reference_clip_gradients(model, clip):
    """facebookresearch/dino, utils.clip_gradients, as released."""
    norms = []
    for _, p in model.named_parameters():
        if p.grad is not None:
            param_norm = p.grad.data.norm(2)
            norms.append(param_norm.item())
            clip_coef = clip / (param_norm + 1e-6)
            if clip_coef < 1:
                p.grad.data.mul_(clip_coef)
    return norms


def test_gradients_are_clipped_per_tensor_as_dinos_clip_gradients():
    torch.manual_seed(0)
    a, b = tiny_vit(), tiny_vit()
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 3, 16, 16)
    for net in (a, b):
        (net(x).square().sum() * 50).backward()
    norms = reference_clip_gradients(a, 3.0)
    global_norm, clipped = T.clip_gradients(b, 3.0)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=0, atol=0)
    assert global_norm == pytest.approx(math.sqrt(sum(n * n for n in norms)), rel=1e-6)
    assert 0 < clipped < 1 and clipped == pytest.approx(sum(n + 1e-6 > 3.0 for n in norms) / len(norms))
    assert max(p.grad.norm().item() for p in b.parameters()) <= 3.0 + 1e-4     # each tensor at most 3 ...
    assert math.sqrt(sum(p.grad.norm().item() ** 2 for p in b.parameters())) > 3.0   # ... not the global norm


def test_clip_gradients_off_and_small_gradients_untouched():
    lin = torch.nn.Linear(3, 2)
    lin.weight.grad, lin.bias.grad = torch.full((2, 3), 0.1), torch.tensor([4.0, 3.0])
    norm, clipped = T.clip_gradients(lin, None)
    assert norm == pytest.approx(math.sqrt(0.06 + 25)) and clipped == 0.0 and lin.bias.grad[0] == 4.0
    norm, clipped = T.clip_gradients(lin, 1.0)
    assert clipped == 0.5
    torch.testing.assert_close(lin.weight.grad, torch.full((2, 3), 0.1))           # under the norm: unchanged
    torch.testing.assert_close(lin.bias.grad, torch.tensor([0.8, 0.6]), atol=1e-6, rtol=0)   # norm 5 -> 1


def test_mixed_precision_forward_with_float32_losses(monkeypatch):
    """On a GPU the forward runs under bf16 autocast; faked here on the CPU: the scores come out bf16,
    the loss is computed on float32 copies and the run stays finite, and close to the float32 run."""
    from vislearn.train import loop

    assert not torch.is_autocast_enabled("cpu")
    with loop.mixed_precision(torch.device("cpu")):                    # the CPU: no autocast at all
        assert torch.get_autocast_dtype("cpu") is not None and not torch.is_autocast_enabled("cpu")
    cfg = T.DINOConfig(epochs=1, batch_size=4, out_dim=8, log_every=1, drop_path=0.0,
                       crops=augment.MultiCropConfig(global_size=16, local_size=8, n_local=1))
    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))

    def run():
        torch.manual_seed(0)
        return T.train_dino(D.DINO(tiny_vit(), out_dim=8, hidden_dim=16, bottleneck_dim=4), images, cfg,
                            progress=False)

    full = run()
    seen = []
    original = D.DINOLoss.forward

    def spy(self, student_out, teacher_out, step=0):
        seen.append({t.dtype for t in [*student_out, *teacher_out]})
        return original(self, student_out, teacher_out, step)

    heads = []
    head_forward = D.DINOHead.forward

    def spy_head(self, x):
        heads.append((out := head_forward(self, x)).dtype)
        return out

    monkeypatch.setattr(T, "mixed_precision", lambda device: torch.autocast("cpu", dtype=torch.bfloat16))
    monkeypatch.setattr(D.DINOLoss, "forward", spy)
    monkeypatch.setattr(D.DINOHead, "forward", spy_head)
    half = run()
    assert heads and set(heads) == {torch.bfloat16}                       # the networks ran in bf16 ...
    assert seen and all(s == {torch.float32} for s in seen)             # ... the loss in float32
    losses = [s["loss"] for s in half.steps]
    assert all(math.isfinite(v) for v in losses)
    np.testing.assert_allclose(losses, [s["loss"] for s in full.steps], rtol=0.05)
