"""PAWS's training loop: unlabelled multi-crop views classified by a few labelled supports.

``train_paws`` follows ``main`` of facebookresearch/suncet (``src/paws_train.py``): per step, draw a
class-balanced batch of labelled *supports* (``per_class`` images of every class, from the labelled
subset only) and a batch of unlabelled images; augment the supports once and the unlabelled images
into 2 global + ``n_local`` crops; run everything through the encoder, which gives the projection
``h`` and the prediction ``z = pred(h)``; the loss is ``paws_loss`` (anchors: ``z`` of all views and
supports; targets: ``h`` of the two global views, swapped, and of the supports) plus me-max. The
support labels carry label smoothing 0.1, as the reference.

Encoder: our ViT (the backbone of ``dino_scenes``), a projection MLP (Linear, BatchNorm, ReLU,
Linear) and a prediction MLP (Linear, BatchNorm, ReLU, Linear), the reference's ``fc`` and ``pred``
heads at our width. Where we deviate: AdamW with a cosine schedule instead of LARS (to match the
DINO and SwAV recipes); the supports are augmented with a global crop. Under ``torchrun`` the global
batches (unlabelled and supports) are drawn alike on every process and sharded; the supports are
gathered back in rank order by ``snn`` (so the label matrix is the global one), and the me-max mean
is all-reduced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import ParameterError
from ..data.augment import MultiCrop, MultiCropConfig
from ..train import distributed
from ..train.loop import mixed_precision, param_groups
from .dino import backbone_features, cosine_schedule
from .dino_training import DINOHistory, clip_gradients
from .paws import labels_matrix, paws_loss


@dataclass
class PAWSConfig:
    epochs: float = 13                 # passes over the unlabelled images
    batch_size: int = 32               # unlabelled images per step (each gives 2 + n_local crops)
    per_class: int = 4                 # supports of every class per step
    lr: float = 5e-4
    min_lr: float = 1e-5
    warmup_epochs: float = 1 / 3
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    hidden_dim: int = 256
    out_dim: int = 64
    tau: float = 0.1                   # soft nearest neighbours' temperature
    sharpen: float = 0.25              # target sharpening T
    label_smoothing: float = 0.1
    me_max: bool = True
    clip_grad: float | None = 3.0
    drop_path: float = 0.1
    crops: MultiCropConfig = field(default_factory=MultiCropConfig)
    log_every: int = 10
    eval_every: int = 0


def _mlp(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


class PAWS(nn.Module):
    """Backbone -> projection ``h`` -> prediction ``z``.

    ``forward(groups)`` takes a list of image batches, each of one size (supports with the global
    crops, then the local crops), and returns each group's (h, z): one call per step, so that
    DistributedDataParallel sees one forward pass.
    """

    def __init__(self, backbone: nn.Module, cfg: PAWSConfig):
        super().__init__()
        self.backbone = backbone
        self.projection = _mlp(backbone.cfg.embed_dim, cfg.hidden_dim, cfg.out_dim)
        self.prediction = _mlp(cfg.out_dim, cfg.hidden_dim, cfg.out_dim)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.projection(backbone_features(self.backbone, x))
        return h, self.prediction(h)

    def forward(self, groups: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self.embed(x) for x in groups]


def class_balanced(labelled: dict[int, np.ndarray], per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` indices of every class, class by class (the reference's ClassStratifiedSampler),
    with replacement only for a class with fewer labelled images than that."""
    return np.concatenate([rng.choice(idx, per_class, replace=len(idx) < per_class)
                           for _, idx in sorted(labelled.items())])


def train_paws(model: PAWS, images: torch.Tensor, support_images: torch.Tensor, support_labels: torch.Tensor,
               cfg: PAWSConfig | None = None, *, evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
               device: torch.device | str = "cpu", seed: int = 0, progress: bool = True) -> DINOHistory:
    """Train ``model`` on unlabelled ``images`` (N, C, H, W) and the labelled subset ``support_images``
    (S, C, H, W) with ``support_labels`` (S,) in 0..C-1 (every class present)."""
    cfg = cfg or PAWSConfig()
    device = torch.device(device)
    classes = int(support_labels.max()) + 1
    labelled = {c: np.flatnonzero(support_labels.numpy() == c) for c in range(classes)}
    if any(len(v) == 0 for v in labelled.values()):
        missing = [c for c, v in labelled.items() if not len(v)]
        raise ParameterError(f"every class needs a labelled image; missing: {missing}")
    distributed.check_batch(cfg.batch_size)
    distributed.check_batch(classes * cfg.per_class)
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    n = len(images)
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = max(1, round(cfg.epochs * steps_per_epoch))
    lr = cosine_schedule(cfg.lr, cfg.min_lr, total, min(total // 2, round(cfg.warmup_epochs * steps_per_epoch)))
    wd = cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, total)
    labels = labels_matrix(classes, cfg.per_class, cfg.label_smoothing).to(device)     # global supports' labels
    multicrop = MultiCrop(cfg.crops)
    model.to(device).train()
    distributed.start_together(model, seed)
    net = distributed.wrap(model, device)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay, skip=()), lr=cfg.lr)
    history, running, train_time, order = DINOHistory(), [], 0.0, torch.empty(0, dtype=torch.long)
    bar = tqdm(range(total), desc="PAWS", disable=not progress or not distributed.is_main(), leave=True)
    for step in bar:
        t0 = time.perf_counter()
        pos = (step % steps_per_epoch) * cfg.batch_size
        if pos == 0:
            order = torch.randperm(n, generator=gen)
        views = multicrop(images[order[pos:pos + cfg.batch_size]], gen)                 # 2 + n_local crops
        supports = multicrop(support_images[torch.from_numpy(class_balanced(labelled, cfg.per_class, rng))], gen)[0]
        views = [distributed.shard(v).to(device) for v in views]
        supports = distributed.shard(supports).to(device)
        for group in opt.param_groups:
            group["lr"] = float(lr[step])
            group["weight_decay"] = float(wd[step]) if group["decay"] else 0.0
        b, s = len(views[0]), len(supports)
        groups = [torch.cat([supports, *views[:2]])] + ([torch.cat(views[2:])] if len(views) > 2 else [])
        with mixed_precision(device):                                                  # bf16 on a GPU
            outs = [(h.float(), z.float()) for h, z in net(groups)]                    # per crop size: (h, z)
        h, z = outs[0]                                                                 # supports, then 2 globals
        z_views = torch.cat([z[s:]] + [o[1] for o in outs[1:]])                        # ((2 + m) b, d)
        ce, me, stats = paws_loss(z_views, z[:s], h[s:s + 2 * b].detach(), h[:s].detach(), labels,
                                  multicrop=len(views) - 2, tau=cfg.tau, T=cfg.sharpen, me_max=cfg.me_max)
        loss = ce + me
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm, clipped = clip_gradients(model, cfg.clip_grad)
        opt.step()
        train_time += time.perf_counter() - t0
        running.append({"loss": loss.item(), "cross_entropy": ce.item(), "me_max": float(me.detach()), **stats,
                        "grad_norm": grad_norm})
        if (step + 1) % cfg.log_every == 0 or step + 1 == total:
            row = {k: float(np.mean([r[k] for r in running])) for k in running[0]}
            row = dict(zip(row, distributed.mean_floats(list(row.values())), strict=True))
            history.steps.append({"step": step + 1, "epoch": (step + 1) / steps_per_epoch,
                                  **{k: round(v, 5) for k, v in row.items()}, "lr": float(lr[step]),
                                  "seconds": round(train_time, 1)})
            bar.set_postfix(loss=f"{row['loss']:.3f}", H=f"{row['mean_entropy']:.2f}")
            running = []
        if evaluate is not None and cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < total:
            history.evals.append({"step": step + 1, **{k: round(v, 4) for k, v in evaluate(model.backbone).items()}})
            model.train()
    history.seconds = train_time
    history.images_per_second = total * cfg.batch_size / max(train_time, 1e-9)
    if evaluate is not None:
        history.evals.append({"step": total, **{k: round(v, 4) for k, v in evaluate(model.backbone).items()}})
    return history


__all__ = ["PAWS", "PAWSConfig", "class_balanced", "train_paws"]
