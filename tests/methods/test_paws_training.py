"""PAWS's loop on a tiny ViT: class-balanced supports, the loss falls, labels enter only through supports."""

import math

import numpy as np
import pytest
import torch

from vislearn.config import ParameterError
from vislearn.data.augment import MultiCropConfig
from vislearn.methods.paws import snn
from vislearn.methods.paws_training import PAWS, PAWSConfig, class_balanced, train_paws

from .tiny import tiny_vit

CFG = PAWSConfig(epochs=4, batch_size=8, per_class=2, hidden_dim=16, out_dim=8, warmup_epochs=0.5, log_every=1,
                 drop_path=0.0, crops=MultiCropConfig(global_size=16, local_size=8, n_local=2))


def data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    return torch.eye(3)[labels].view(n, 3, 1, 1) * 2 - 1 + 0.2 * torch.randn(n, 3, 16, 16, generator=g), labels


def tiny() -> PAWS:
    torch.manual_seed(0)
    return PAWS(tiny_vit(), CFG)


def test_class_balanced_supports():
    labelled = {0: np.array([0, 3]), 1: np.array([1]), 2: np.array([2, 5, 8])}
    idx = class_balanced(labelled, 2, np.random.default_rng(0))
    assert idx.tolist()[:2] in ([0, 3], [3, 0]) and idx.tolist()[2:4] == [1, 1]     # with replacement for class 1
    assert set(idx.tolist()[4:]) <= {2, 5, 8} and len(set(idx.tolist()[4:])) == 2


def test_paws_trains_and_its_supports_classify():
    model = tiny()
    images, labels = data()
    support = torch.arange(6)                                                # 2 labelled images per class
    history = train_paws(model, images, images[support], labels[support], CFG, progress=False)
    losses = [s["loss"] for s in history.steps]
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert all(-math.log(3) - 1e-4 <= s["me_max"] <= 0 for s in history.steps)
    model.eval()
    with torch.no_grad():
        h, _ = model.embed(images)
        probs = snn(h, h[support], torch.eye(3)[labels[support]])
    assert (probs.argmax(1) == labels).float().mean() > 0.9                   # colours: easy with 6 labels


def test_every_class_needs_a_labelled_image():
    images, labels = data()
    with pytest.raises(ParameterError, match="missing: \\[1\\]"):
        train_paws(tiny(), images, images[:2], torch.tensor([0, 2]), CFG, progress=False)
