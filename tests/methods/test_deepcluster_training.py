"""DeepCluster's loop on a tiny ViT: a clustering per epoch, a fresh top layer, NMI recorded."""

import math

import torch

from vislearn.data.augment import MultiCropConfig
from vislearn.methods.deepcluster_training import DeepCluster, DeepClusterConfig, train_deepcluster

from .tiny import tiny_vit

CFG = DeepClusterConfig(epochs=3, batch_size=8, clusters=4, hidden_dim=16, pca_dim=8, kmeans_iters=5, log_every=1,
                        crops=MultiCropConfig(global_size=16, n_local=0, global_scale=(0.8, 1.0), jitter=0.0,
                                              grayscale=0.0, blur=(0.0, 0.0, 0.0), solarize=0.0))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """32 images of 3 colours (the classes), with a little noise."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(32) % 3
    colours = torch.eye(3)[labels].view(32, 3, 1, 1) * 2 - 1
    return colours + 0.1 * torch.randn(32, 3, 16, 16, generator=g), labels


def tiny() -> DeepCluster:
    torch.manual_seed(0)
    return DeepCluster(tiny_vit(), CFG)


def test_one_clustering_per_epoch_with_nmi_and_a_new_top_layer():
    model, (images, labels) = tiny(), data()
    tops = []
    original = torch.nn.Module.__setattr__

    def spy(self, name, value):
        if isinstance(self, DeepCluster) and name == "top":
            tops.append(value)
        original(self, name, value)

    torch.nn.Module.__setattr__ = spy
    try:
        history = train_deepcluster(model, images, CFG, labels=labels, progress=False,
                                    evaluate=lambda backbone: {"probe": float(backbone is model.backbone)})
    finally:
        torch.nn.Module.__setattr__ = original
    assert len(tops) == 3 and len({id(t) for t in tops}) == 3                  # re-created every epoch
    evals = history.evals
    assert [e["epoch"] for e in evals] == [0, 1, 2]
    assert evals[0]["nmi_previous"] is None and all(0 <= e["nmi_previous"] <= 1 for e in evals[1:])
    assert all(0 <= e["nmi_classes"] <= 1 for e in evals) and all(e["empty_clusters"] >= 0 for e in evals)
    assert evals[0]["nmi_classes"] > 0.5                                      # the colours are easy to cluster
    assert len(history.steps) == 12 and all(math.isfinite(s["loss"]) for s in history.steps)
    assert all(e["probe"] == 1.0 for e in evals)                              # the backbone, after each epoch


def test_the_backbone_learns_from_the_pseudo_labels():
    model, (images, _) = tiny(), data()
    start = model.backbone.patch_embed.proj.weight.detach().clone()
    train_deepcluster(model, images, CFG, progress=False)
    assert not torch.allclose(model.backbone.patch_embed.proj.weight, start)
