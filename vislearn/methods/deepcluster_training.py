"""DeepCluster's training loop: cluster the features, then learn to predict the clusters, every epoch.

``train_deepcluster`` follows ``main.py`` of facebookresearch/deepcluster: at the start of each epoch
it computes the features of every training image with the current network (no augmentation, eval
mode), clusters them (``deepcluster.cluster``: PCA whitening, L2, k-means), records how much the
assignment moved since the last epoch (NMI) and, when labels are given for this purpose only, how
well it matches the classes; then it re-creates the top layer (``new_classifier``) and its optimizer,
and trains backbone, MLP and top layer for one epoch on augmented images drawn uniformly over the
pseudo-labels (``uniform_sampler``), with cross-entropy.

Model: our ViT (the backbone of notebook 05's ``dino_scenes``), then the reference's classifier MLP
(Linear + ReLU; the reference has two such layers with dropout on AlexNet/VGG), then the top layer;
features for clustering are the MLP's output, as the reference takes them before the top layer.

Where we deviate, and why: AdamW with a cosine schedule instead of SGD (momentum 0.9, lr 0.05), to
match the optimizer of the DINO and SwAV recipes it is compared with; one global crop of DINO's
multi-crop as the augmentation (the reference: random resized crop and flip, Sobel filtering). Under
``torchrun`` every process computes the same features of all images and runs the same k-means (so the
pseudo-labels agree without an all-reduce), trains on its shard of each batch inside
DistributedDataParallel (re-wrapped each epoch, since the top layer is new).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.augment import MultiCrop, MultiCropConfig
from ..models.layers import eval_mode
from ..train import distributed
from ..train.loop import mixed_precision, param_groups
from .deepcluster import cluster, new_classifier, nmi, uniform_sampler
from .dino import backbone_features, cosine_schedule
from .dino_training import DINOHistory, clip_gradients


@dataclass
class DeepClusterConfig:
    epochs: int = 13                   # clusterings (each followed by one pass over the images)
    batch_size: int = 64
    lr: float = 5e-4                   # peak AdamW learning rate
    min_lr: float = 1e-5
    warmup_epochs: float = 1 / 3
    weight_decay: float = 0.05
    clusters: int = 100                # k (the reference: 10,000 on ImageNet, ~10x the classes)
    hidden_dim: int = 256              # the classifier MLP's width (the clustered features)
    pca_dim: int = 256                 # PCA-whitening components (at most hidden_dim)
    kmeans_iters: int = 20
    clip_grad: float | None = 3.0
    crops: MultiCropConfig = field(default_factory=lambda: MultiCropConfig(n_local=0))   # one global crop used
    log_every: int = 10


class DeepCluster(nn.Module):
    """Backbone -> MLP (Linear, ReLU) -> top layer (re-created every epoch)."""

    def __init__(self, backbone: nn.Module, cfg: DeepClusterConfig):
        super().__init__()
        self.backbone = backbone
        self.mlp = nn.Sequential(nn.Linear(backbone.cfg.embed_dim, cfg.hidden_dim), nn.ReLU())
        self.top = new_classifier(cfg.hidden_dim, cfg.clusters)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(backbone_features(self.backbone, x))          # (B, hidden): what k-means sees

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.features(x))                              # (B, clusters)


@torch.no_grad()
def features_of(model: DeepCluster, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """What k-means clusters: the MLP's output for every image, in eval mode (no drop path), (N, hidden)."""
    with eval_mode(model):
        return torch.cat([model.features(images[i:i + batch_size].to(device)).float().cpu()
                          for i in range(0, len(images), batch_size)])


def train_deepcluster(model: DeepCluster, images: torch.Tensor, cfg: DeepClusterConfig | None = None, *,
                      labels: torch.Tensor | None = None,
                      evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
                      device: torch.device | str = "cpu", seed: int = 0, progress: bool = True) -> DINOHistory:
    """Train ``model`` on normalised images (N, C, H, W) without labels; returns the history.

    ``labels`` (optional) are used only to report the NMI of each epoch's clusters with the classes.
    Each evaluation record holds the epoch's clustering: NMI with the previous epoch's and with the
    classes, empty clusters, k-means's last objective, and the backbone's metrics from ``evaluate``.
    """
    cfg = cfg or DeepClusterConfig()
    device = torch.device(device)
    distributed.check_batch(cfg.batch_size)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = len(images)
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    lr = cosine_schedule(cfg.lr, cfg.min_lr, total, min(total // 2, round(cfg.warmup_epochs * steps_per_epoch)))
    crop = MultiCrop(cfg.crops)
    model.to(device)
    distributed.start_together(model, seed)
    body = nn.ModuleList([model.backbone, model.mlp])
    opt = torch.optim.AdamW(param_groups(body, cfg.weight_decay), lr=cfg.lr)
    history, previous, train_time, step = DINOHistory(), None, 0.0, 0
    bar = tqdm(total=total, desc="DeepCluster", disable=not progress or not distributed.is_main(), leave=True)
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        feats = features_of(model, images, device)                                          # (N, hidden)
        clusters = cluster(feats, cfg.clusters, dim=min(cfg.pca_dim, cfg.hidden_dim), iters=cfg.kmeans_iters,
                           seed=seed + epoch)
        record = {"epoch": epoch, "empty_clusters": clusters.empty, "kmeans_objective": float(clusters.objective[-1]),
                  "nmi_previous": None if previous is None else round(nmi(clusters.labels, previous), 4)}
        if labels is not None:
            record["nmi_classes"] = round(nmi(clusters.labels, labels.numpy()), 4)
        previous = clusters.labels
        model.top = new_classifier(cfg.hidden_dim, cfg.clusters).to(device)   # a fresh top layer (DDP syncs it)
        top_opt = torch.optim.AdamW(model.top.parameters(), lr=cfg.lr, weight_decay=0.0)
        net = distributed.wrap(model, device)
        order = torch.from_numpy(uniform_sampler(clusters.members, n, rng))
        targets = torch.from_numpy(clusters.labels)
        model.train()
        running = []
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            x = crop(images[idx], gen)[0]                                                   # one global crop
            x, y = distributed.shard(x).to(device), distributed.shard(targets[idx]).to(device)
            for group in [*opt.param_groups, *top_opt.param_groups]:
                group["lr"] = float(lr[step])
            with mixed_precision(device):                                                   # bf16 on a GPU
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            top_opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm, _ = clip_gradients(model, cfg.clip_grad)
            opt.step()
            top_opt.step()
            running.append(loss.item())
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or i + 1 == steps_per_epoch:
                history.steps.append({"step": step, "epoch": step / steps_per_epoch,
                                      "loss": round(distributed.mean_floats([float(np.mean(running))])[0], 5),
                                      "grad_norm": round(grad_norm, 5), "lr": float(lr[step - 1])})
                bar.set_postfix(loss=f"{history.steps[-1]['loss']:.3f}", nmi=record["nmi_previous"])
                running = []
        train_time += time.perf_counter() - t0
        if evaluate is not None:
            record |= {k: round(v, 4) for k, v in evaluate(model.backbone).items()}
        history.evals.append({"step": step, "seconds": round(train_time, 1), **record})
    bar.close()
    history.seconds = train_time
    history.images_per_second = cfg.epochs * steps_per_epoch * cfg.batch_size / max(train_time, 1e-9)
    return history


__all__ = ["DeepCluster", "DeepClusterConfig", "train_deepcluster"]
