"""vislearn.methods.dino: schedules, EMA, the loss by hand, centering, head, backbone, hub weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vislearn.data import photos
from vislearn.methods import dino as D
from vislearn.models.layers import resize_pos_embed
from vislearn.models.vit import VisionTransformer, ViTConfig
from vislearn.train import weights


def tiny_vit(**kw) -> VisionTransformer:
    cfg = dict(img_size=16, patch_size=4, in_chans=3, num_classes=0, embed_dim=16, depth=1, num_heads=2)
    return VisionTransformer(ViTConfig(**{**cfg, **kw}))


def reference_cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0,
                               start_warmup_value=0):
    """facebookresearch/dino, utils.cosine_scheduler, as released (asserts kept)."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


@pytest.mark.parametrize("base, final, epochs, niter, warmup, start", [
    (5e-4, 1e-6, 10, 7, 2, 0.0),         # learning rate: warmup from 0
    (0.04, 0.4, 3, 5, 0, 0.0),           # weight decay goes up, no warmup
    (0.996, 1.0, 4, 1, 0, 0.0),          # teacher momentum, one step per epoch
    (1.0, 0.1, 2, 3, 1, 0.5)])           # warmup from a non-zero start
def test_cosine_schedule_equals_dinos_cosine_scheduler_edges_included(base, final, epochs, niter, warmup, start):
    ours = D.cosine_schedule(base, final, epochs * niter, warmup * niter, warmup_start=start)
    ref = reference_cosine_scheduler(base, final, epochs, niter, warmup, start)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-15)
    w = warmup * niter
    if w:
        assert ours[w - 1] == ours[w] == base         # the warmup ends on base, and the cosine repeats it
    n = epochs * niter - w                                                  # the cosine stops one step short
    last = final + 0.5 * (base - final) * (1 + math.cos(math.pi * (n - 1) / n))
    assert ours[-1] != final and ours[-1] == pytest.approx(last)


def test_teacher_temperature_warmup_is_per_epoch_as_dinos_loss():
    # DINOLoss: linspace(warmup_teacher_temp, teacher_temp, warmup_epochs), then teacher_temp, indexed by epoch
    warm, epochs, per_epoch = 3, 5, 4
    ref = np.concatenate([np.linspace(0.04, 0.07, warm), np.ones(epochs - warm) * 0.07])
    t = D.teacher_temperature_schedule(0.04, 0.07, warm, epochs * per_epoch, per_epoch)
    assert t.shape == (20,)
    np.testing.assert_array_equal(t, np.repeat(ref, per_epoch))          # constant within each epoch
    assert t[3] == 0.04 and t[4] == pytest.approx(0.055) and t[8] == pytest.approx(0.07)
    # no warmup; and a run that ends mid-epoch
    assert np.all(D.teacher_temperature_schedule(0.04, 0.07, 0, 10, 4) == 0.07)
    assert D.teacher_temperature_schedule(0.04, 0.07, 2, 6, 4).tolist() == [0.04] * 4 + [0.07] * 2


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
    assert vit.positions(4) is vit.pos_embed
    assert vit.positions(2).shape == (1, 1 + 4, 16)
    torch.testing.assert_close(vit.positions(2), resize_pos_embed(vit.pos_embed, 2, 1, antialias=False,
                                                                  scale_offset=0.1))
    x = torch.randn(3, 3, 16, 16)
    assert torch.allclose(D.backbone_features(vit, x), vit.forward_head(vit.forward_features(x), pre_logits=True))
    assert D.backbone_features(vit, torch.randn(3, 3, 8, 8)).shape == (3, 16)


def reference_interpolate_pos_encoding(pos_embed, npatch_side, patch_size=1):
    """facebookresearch/dino, vision_transformer.VisionTransformer.interpolate_pos_encoding, on a square
    crop of ``npatch_side`` patches (w = h = npatch_side * patch_size)."""
    N = pos_embed.shape[1] - 1
    class_pos_embed, patch_pos_embed = pos_embed[:, 0], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    w0 = h0 = npatch_side * patch_size // patch_size
    w0, h0 = w0 + 0.1, h0 + 0.1
    patch_pos_embed = torch.nn.functional.interpolate(
        patch_pos_embed.reshape(1, int(math.sqrt(N)), int(math.sqrt(N)), dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)), mode="bicubic")
    assert int(w0) == patch_pos_embed.shape[-2] and int(h0) == patch_pos_embed.shape[-1]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


@pytest.mark.parametrize("g, new", [(8, 4), (8, 6), (4, 2), (14, 6), (4, 8)])
def test_local_crop_positions_equal_dinos_interpolate_pos_encoding(g, new):
    torch.manual_seed(g * new)
    pe = torch.randn(1, 1 + g * g, 12)
    ours = resize_pos_embed(pe, new, 1, antialias=False, scale_offset=0.1)
    torch.testing.assert_close(ours, reference_interpolate_pos_encoding(pe, new), rtol=0, atol=1e-6)
    by_size = resize_pos_embed(pe, new, 1, antialias=False)                 # what we did before: same shape
    assert by_size.shape == ours.shape and (by_size - ours).abs().max() > 1e-3   # other values


def test_local_crop_positions_of_the_bundled_dino_differ_from_resizing_by_size():
    """The issue's numbers: on the bundled DINO's 8 x 8 table, resized to the 4 x 4 grid of a local crop."""
    vit = weights.load("dino_scenes")
    ours = vit.positions(4)
    torch.testing.assert_close(ours, reference_interpolate_pos_encoding(vit.pos_embed, 4), rtol=0, atol=1e-6)
    diff = (ours - resize_pos_embed(vit.pos_embed, 4, 1, antialias=False)).abs().max().item()
    assert 0.005 < diff < 0.2, diff


def test_head_last_layer_keeps_nn_linears_default_init():
    torch.manual_seed(0)
    head = D.DINOHead(64, 256, hidden_dim=32, bottleneck_dim=64)
    v = head.last_layer.weight_v
    assert v.abs().max() <= 1 / math.sqrt(64)                              # uniform in +-1/sqrt(in)
    assert v.norm(dim=1).mean().item() == pytest.approx(1 / math.sqrt(3), rel=0.05)   # rows of norm ~0.58
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(256))    # g = 1: unit prototypes
    for m in head.mlp:                                                      # the MLP keeps trunc_normal(0.02)
        if isinstance(m, torch.nn.Linear):
            assert m.weight.std().item() == pytest.approx(0.02, rel=0.15) and torch.all(m.bias == 0)


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


def test_hub_dino_from_a_local_file_and_photo_batch(tmp_path):
    """weights='hub' offline: timm loads the 'published' DINO ViT-S/16 from a local file we wrote, and
    hub_dino returns it with our converted ViT, equal on real photos; attention is 6 heads on 14 x 14."""
    import timm
    from safetensors.torch import save_file

    from vislearn.analysis.evaluation import cls_attention_maps

    reference = timm.create_model(weights.HUB_DINO, pretrained=False)
    assert reference.num_classes == 0                       # the published DINO backbone has no head
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    path = tmp_path / "dino_vits16.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    hub, ours = weights.hub_dino(file=path)
    x, shown = photos.photo_batch(hub, ("chelsea", "coffee"))
    assert x.shape == (2, 3, 224, 224) and shown.min() >= 0 and shown.max() <= 1
    assert abs(float(x.mean())) < 1.5 and float(shown.std()) > 0.05          # normalized inputs of real photos
    with torch.no_grad():
        ref = hub.forward_head(hub.forward_features(x), pre_logits=True)
        assert torch.equal(ref, reference.eval().forward_head(reference.forward_features(x), pre_logits=True))
        assert (ours.forward_head(ours.forward_features(x), pre_logits=True) - ref).abs().max() < 1e-4
    maps = cls_attention_maps(ours, x)
    assert maps.shape == (2, 6, 14, 14) and (maps.sum((2, 3)) <= 1 + 1e-5).all()


def test_backbone_features_of_a_deit_on_small_crops_keep_both_prefix_tokens():
    """[CLS] and [DIST] keep their own positions when the patch table is resized for a local crop."""
    from vislearn.models.deit import DeiTConfig, DistilledVisionTransformer

    deit = DistilledVisionTransformer(DeiTConfig(img_size=16, patch_size=4, in_chans=3, num_classes=0, embed_dim=16,
                                                 depth=1, num_heads=2)).eval()
    x = torch.randn(2, 3, 8, 8)                                          # a 2 x 2 grid instead of 4 x 4
    with torch.no_grad():
        pos = resize_pos_embed(deit.pos_embed, 2, 2, antialias=False, scale_offset=0.1)    # (1, 2 + 4, D)
        tokens = torch.cat([deit.cls_token.expand(2, -1, -1), deit.dist_token.expand(2, -1, -1),
                            deit.patch_embed(x)], dim=1) + pos
        tokens = deit.norm(deit.blocks[0](tokens))
        expected = (tokens[:, 0] + tokens[:, 1]) / 2
        torch.testing.assert_close(D.backbone_features(deit, x), expected)


def test_by_size_batches_crops_of_one_size_and_splits_them_back():
    from vislearn.methods.dino import by_size

    crops = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
    calls = []

    def fn(x):
        calls.append(len(x))
        return x.mean((1, 2, 3)), x.amax((1, 2, 3))

    means, maxes = by_size(fn, crops)
    assert calls == [4, 2]                                        # the two 8-px crops together, then the 4-px one
    for c, m, x in zip(crops, means, maxes, strict=True):
        torch.testing.assert_close(m, c.mean((1, 2, 3)))
        torch.testing.assert_close(x, c.amax((1, 2, 3)))
    single = by_size(lambda x: x.sum((1, 2, 3)), crops)            # one output: a plain list
    assert isinstance(single, list) and len(single) == 3
