"""Distillation (vislearn.methods.distill) and its convnet teacher (vislearn.models.convnet): losses against hand
computations, models' shapes, the recipes, and one recipe trained end to end on fake data."""

import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from vislearn import train
from vislearn.analysis.attention import cls_attention
from vislearn.config import ParameterError
from vislearn.methods import distill
from vislearn.models.convert import build
from vislearn.models.convnet import ConvNet, ConvNetConfig
from vislearn.models.deit import DeiTConfig, DistilledVisionTransformer
from vislearn.recipes import all_recipes
from vislearn.train import weights

STUDENTS = ("deit_fmnist_none", "deit_fmnist_soft", "deit_fmnist_soft_code", "deit_fmnist_hard", "deit_fmnist_hard_cls")


def tiny_deit(num_classes: int = 3) -> DistilledVisionTransformer:
    return DistilledVisionTransformer(DeiTConfig(img_size=8, patch_size=4, embed_dim=8, depth=2, num_heads=2,
                                                 num_classes=num_classes))


# --- losses against numbers computed by hand -------------------------------------------------------

def test_soft_loss_known_value():
    tau, lam = 3.0, 0.1
    cls = torch.tensor([[0.0, 0.0]])                      # CE with label 0: log 2
    dist = torch.tensor([[0.0, 0.0]])                     # student at τ: (1/2, 1/2)
    teacher = torch.tensor([[tau * math.log(3.0), 0.0]])  # teacher at τ: (3/4, 1/4)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)   # KL(teacher ‖ student)
    expected = (1 - lam) * math.log(2) + lam * tau ** 2 * kl
    got = distill.soft_distillation_loss(cls, dist, teacher, torch.tensor([0]), tau=tau, lam=lam)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_soft_loss_is_a_per_image_mean_and_zero_kl_when_student_equals_teacher():
    g = torch.Generator().manual_seed(0)
    cls, dist, y = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g), torch.tensor([0, 1, 2, 3, 0])
    # the student's distillation head equal to the teacher: only the label term is left
    only_ce = distill.soft_distillation_loss(cls, dist, dist, y, tau=2.0, lam=0.3)
    assert only_ce.item() == pytest.approx(0.7 * F.cross_entropy(cls, y).item(), rel=1e-6)
    # doubling the batch with a copy of itself does not change a per-image mean
    t = torch.randn(5, 4, generator=g)
    one = distill.soft_distillation_loss(cls, dist, t, y)
    two = distill.soft_distillation_loss(cls.repeat(2, 1), dist.repeat(2, 1), t.repeat(2, 1), y.repeat(2))
    assert one.item() == pytest.approx(two.item(), rel=1e-6)


def reference_deit_soft_loss(base_loss, outputs_kd, teacher_outputs, tau, alpha):
    """facebookresearch/deit, losses.DistillationLoss.forward, distillation_type == 'soft', as released."""
    T = tau
    distillation_loss = F.kl_div(
        F.log_softmax(outputs_kd / T, dim=1),
        F.log_softmax(teacher_outputs / T, dim=1),
        reduction='sum',
        log_target=True
    ) * (T * T) / outputs_kd.numel()
    return base_loss * (1 - alpha) + distillation_loss * alpha


def test_soft_loss_code_scaling_equals_deits_losses_py_and_paper_scaling_is_classes_times_stronger():
    g = torch.Generator().manual_seed(1)
    B, C, tau, lam = 128, 10, 3.0, 0.1
    cls, dist, t = (torch.randn(B, C, generator=g) * 3 for _ in range(3))
    y = torch.randint(0, C, (B,), generator=g)
    code = distill.soft_distillation_loss(cls, dist, t, y, tau=tau, lam=lam, scaling="code")
    torch.testing.assert_close(code, reference_deit_soft_loss(F.cross_entropy(cls, y), dist, t, tau, lam))
    paper = distill.soft_distillation_loss(cls, dist, t, y, tau=tau, lam=lam)
    ce = (1 - lam) * F.cross_entropy(cls, y)
    torch.testing.assert_close(paper - ce, (code - ce) * C)             # the teacher term: C x stronger
    loss = distill.DistillationLoss("soft_code", FixedTeacher([0.0, 0.0, 3.0]))
    model, x = tiny_deit().train(), torch.randn(4, 1, 8, 8)
    torch.manual_seed(0)
    a = loss(model, x, y[:4] % 3)
    c, d = distill.two_heads(model, x)
    torch.testing.assert_close(a, reference_deit_soft_loss(F.cross_entropy(c, y[:4] % 3), d,
                                                           loss.teacher_logits(x), distill.TAU, distill.LAMBDA))
    with pytest.raises(ParameterError, match="paper"):
        distill.soft_distillation_loss(cls, dist, t, y, scaling="batch")


def test_hard_loss_known_value_uses_teacher_argmax():
    cls = torch.tensor([[2.0, 0.0]])       # label 0: CE = log(1 + e^-2)
    dist = torch.tensor([[0.0, 0.0]])      # teacher says 1 (it disagrees with the label): CE = log 2
    teacher = torch.tensor([[0.0, 5.0]])
    expected = 0.5 * math.log(1 + math.exp(-2)) + 0.5 * math.log(2)
    got = distill.hard_distillation_loss(cls, dist, teacher, torch.tensor([0]))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # only the teacher's argmax matters, not its confidence
    assert distill.hard_distillation_loss(cls, dist, teacher * 100, torch.tensor([0])).item() == pytest.approx(
        expected, rel=1e-6)


class FixedTeacher(torch.nn.Module):
    """Always answers the same logits."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def test_distillation_loss_objectives_route_heads_and_targets():
    torch.manual_seed(0)
    model, x, y = tiny_deit().train(), torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    teacher = FixedTeacher([0.0, 0.0, 3.0])               # always class 2
    cls, dist = distill.two_heads(model, x)
    assert model.distilled_training and cls.shape == dist.shape == (4, 3)
    two = torch.tensor([2, 2, 2, 2])
    expected = {
        "none": 0.5 * F.cross_entropy(cls, y) + 0.5 * F.cross_entropy(dist, y),
        "hard": 0.5 * F.cross_entropy(cls, y) + 0.5 * F.cross_entropy(dist, two),
        "soft": distill.soft_distillation_loss(cls, dist, teacher(x), y),
    }
    for objective, value in expected.items():
        loss = distill.DistillationLoss(objective, teacher)(model, x, y)
        torch.testing.assert_close(loss, value)
    vit = build("vit", replace(model.cfg).to_dict()).train()   # class token only
    logits = vit(x)
    torch.testing.assert_close(distill.DistillationLoss("hard_cls", teacher)(vit, x, y),
                               0.5 * F.cross_entropy(logits, y) + 0.5 * F.cross_entropy(logits, two))
    model.eval()                                               # evaluation still averages the heads
    assert model(x).shape == (4, 3)


def test_distillation_loss_errors():
    with pytest.raises(ParameterError, match="objective='medium'"):
        distill.DistillationLoss("medium")
    with pytest.raises(ValueError, match="needs a teacher"):
        distill.DistillationLoss("hard")
    with pytest.raises(ValueError, match="DistilledVisionTransformer"):
        distill.two_heads(build("vit", tiny_deit().cfg.to_dict()).train(), torch.randn(1, 1, 8, 8))


def test_gradients_reach_each_head_only_through_its_own_target():
    torch.manual_seed(0)
    model, x, y = tiny_deit().train(), torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    # soft with λ = 0: the teacher term vanishes, so the distillation head gets no gradient
    distill.DistillationLoss("soft", FixedTeacher([0.0, 0.0, 3.0]), lam=0.0)(model, x, y).backward()
    assert model.head.weight.grad.abs().sum() > 0 and model.head_dist.weight.grad.abs().sum() == 0


# --- the teacher -----------------------------------------------------------------------------------

def test_convnet_shapes_and_rebuild():
    net = ConvNet(ConvNetConfig(width=8, stages=3))
    x = torch.randn(5, 1, 28, 28)
    assert net(x).shape == (5, 10) and net.forward_features(x).shape == (5, 32)
    assert net.features(x).shape == (5, 32, 3, 3)             # 28 -> 14 -> 7 -> 3
    rgb = ConvNet(in_chans=3, num_classes=4, width=4, stages=2)
    assert rgb(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    rebuilt = build("convnet", net.cfg.to_dict())
    rebuilt.load_state_dict(net.state_dict())
    torch.testing.assert_close(rebuilt.eval()(x), net.eval()(x))
    with pytest.raises(ValueError, match="stages"):
        ConvNetConfig(stages=0)


def test_bundled_teacher_loads_frozen():
    teacher = distill.load_teacher()
    assert isinstance(teacher, ConvNet) and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert weights.entry(distill.TEACHER)["metrics"]["test_accuracy"] > 0.9


# --- looking inside --------------------------------------------------------------------------------

def test_predict_heads_average_is_the_model_output():
    torch.manual_seed(0)
    model, x = tiny_deit().eval(), torch.randn(7, 1, 8, 8)
    cls, dist = distill.predict_heads(model, x, batch_size=3)
    assert cls.shape == dist.shape == (7, 3)
    torch.testing.assert_close((cls + dist) / 2, model(x))


def test_token_similarity_by_hand():
    torch.manual_seed(0)
    model, x = tiny_deit().eval(), torch.randn(3, 1, 8, 8)
    sims = distill.token_similarity(model, x)
    assert sims.shape == (model.cfg.depth + 2,) and (sims.abs() <= 1 + 1e-6).all()
    tokens = model.embed(x)
    torch.testing.assert_close(sims[0], F.cosine_similarity(tokens[:, 0], tokens[:, 1], dim=-1).mean())
    out = model.forward_features(x)
    torch.testing.assert_close(sims[-1], F.cosine_similarity(out[:, 0], out[:, 1], dim=-1).mean())


def test_token_attention_rows():
    attn = torch.softmax(torch.randn(2, 3, 2 + 16, 2 + 16), dim=-1)
    cls, dist = cls_attention(attn, 2, token=0), cls_attention(attn, 2, token=1)
    assert cls.shape == dist.shape == (2, 3, 4, 4)
    torch.testing.assert_close(dist.flatten(2), attn[:, :, 1, 2:])
    torch.testing.assert_close(cls.flatten(2), attn[:, :, 0, 2:])
    with pytest.raises(ValueError, match="square"):
        cls_attention(attn[..., :-1], 2, token=0)


# --- recipes ---------------------------------------------------------------------------------------

def test_recipes_registered_with_equal_budgets():
    recipes = all_recipes()
    assert recipes[distill.TEACHER].arch == "convnet" and recipes[distill.TEACHER].make_loss is None
    for name in STUDENTS:
        recipe = recipes[name]
        assert set(recipe.presets) == {"smoke", "classroom", "full"} and recipe.make_loss is not None
        assert recipe.arch == ("vit" if name.endswith("hard_cls") else "deit")
        for preset in recipe.presets:
            assert recipe.config(preset) == recipes[STUDENTS[0]].config(preset), (name, preset)  # equal budget
        assert {k: v for k, v in recipe.model.items()} == recipes[STUDENTS[0]].model
    full, smoke = recipes[STUDENTS[0]].config("full"), recipes[STUDENTS[0]].config("smoke")
    assert full.epochs > smoke.epochs and smoke.train_limit is not None and full.train_limit is None


def test_a_student_recipe_trains_end_to_end(monkeypatch, tmp_path):
    """deit_fmnist_hard on fake 8x8 images with a tiny teacher: trains, saves, reloads."""
    teacher = ConvNet(width=2, stages=1, num_classes=3).eval().requires_grad_(False)
    loaded = []

    def fake_teacher(device="cpu"):
        loaded.append(str(device))
        return teacher

    def data(split, limit, seed):
        n = limit or 48
        return TensorDataset(torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)),
                             torch.arange(n) % 3)

    monkeypatch.setattr(distill, "load_teacher", fake_teacher)
    cfg = train.TrainConfig(epochs=1, batch_size=16, augment=False, warmup_epochs=0)
    recipe = replace(all_recipes()["deit_fmnist_hard"], name="toy_hard", data=data,
                     model=tiny_deit().cfg.to_dict(), presets={"smoke": cfg, "classroom": cfg, "full": cfg})
    trained = train.run(recipe, "full", out=tmp_path, device="cpu", progress=False)
    model, hist, metrics = trained.model, trained.history, trained.metrics
    assert loaded == ["cpu"] and len(hist.steps) == 1 and metrics["train_images"] == 48
    reloaded = weights.load("toy_hard", tmp_path)
    assert isinstance(reloaded, DistilledVisionTransformer)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(reloaded(x), model.eval()(x))


def test_python_m_vislearn_train_sees_the_distillation_recipes():
    """Run as a script, the training CLI must see recipes registered by other modules."""
    out = subprocess.run([sys.executable, "-m", "vislearn.train", "no_such_recipe"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "deit_fmnist_hard" in out.stderr and "convnet_fmnist" in out.stderr
