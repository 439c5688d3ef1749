"""SwAV's loop on a tiny ViT: frozen prototypes stay put, the rest trains, Sinkhorn spreads the codes."""

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from vislearn.data.augment import MultiCropConfig
from vislearn.methods.swav_training import SwAV, SwAVConfig, train_swav

from .tiny import tiny_vit

CFG = SwAVConfig(epochs=2, batch_size=8, prototypes=10, hidden_dim=16, out_dim=8, warmup_epochs=0.5,
                 freeze_prototypes_steps=0, log_every=1, drop_path=0.0,
                 crops=MultiCropConfig(global_size=16, local_size=8, n_local=2))


def tiny() -> tuple[SwAV, torch.Tensor]:
    torch.manual_seed(0)
    return SwAV(tiny_vit(), CFG), torch.randn(24, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_frozen_prototypes_only_get_normalised():
    model, images = tiny()
    start = F.normalize(model.head.prototypes.weight.detach().clone(), dim=1)
    backbone_start = model.backbone.patch_embed.proj.weight.detach().clone()
    history = train_swav(model, images, replace(CFG, freeze_prototypes_steps=100), progress=False)
    assert len(history.steps) == 6 and all(math.isfinite(s["loss"]) for s in history.steps)
    torch.testing.assert_close(model.head.prototypes.weight, start)
    assert not torch.allclose(model.backbone.patch_embed.proj.weight, backbone_start)


def test_prototypes_train_after_the_freeze_and_stay_unit_length():
    model, images = tiny()
    start = F.normalize(model.head.prototypes.weight.detach().clone(), dim=1)
    train_swav(model, images, CFG, progress=False)
    assert not torch.allclose(model.head.prototypes.weight, start)
    model.head.prototypes.normalize_()
    torch.testing.assert_close(model.head.prototypes.weight.norm(dim=1), torch.ones(10))


def test_sinkhorn_spreads_the_codes_more_than_a_plain_softmax():
    model, images = tiny()
    sink = train_swav(model, images, replace(CFG, epochs=0.34), progress=False)   # one step each
    model, images = tiny()
    soft = train_swav(model, images, replace(CFG, epochs=0.34, equipartition=False), progress=False)
    assert sink.steps[0]["code_entropy"] > soft.steps[0]["code_entropy"]
    assert sink.steps[0]["code_entropy"] > 0.9 * math.log(10)                      # near-equal shares


def test_a_queue_is_used_once_full():
    model, images = tiny()
    plain = train_swav(model, images, CFG, progress=False)
    model, images = tiny()
    queued = train_swav(model, images, replace(CFG, queue_length=16), progress=False)   # full after 2 batches
    losses = [s["loss"] for s in plain.steps], [s["loss"] for s in queued.steps]
    assert losses[0][:2] == losses[1][:2]                                  # not used while filling
    assert losses[0][2] != losses[1][2] and all(math.isfinite(v) for v in losses[1])


def test_a_run_resumed_from_its_periodic_checkpoint_ends_with_the_same_weights(tmp_path):
    from vislearn.train import resume

    cfg = replace(CFG, queue_length=16)                                    # the queue is part of the state
    model, images = tiny()
    path = resume.resume_path(tmp_path, "swav")
    with resume.periodic(resume.Periodic(path, every=3)):                  # writes the state after step 3
        straight = train_swav(model, images, cfg, progress=False)
    assert path.is_file()
    again, _ = tiny()
    with torch.no_grad():
        for p in again.parameters():
            p.zero_()                                                      # everything must come from the file
    with resume.periodic(resume.Periodic(path, resume=True)):
        resumed = train_swav(again, images, cfg, progress=False)
    assert [s["loss"] for s in resumed.steps] == [s["loss"] for s in straight.steps]
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=k)
