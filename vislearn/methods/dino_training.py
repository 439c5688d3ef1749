"""DINO's training loop, its settings, diagnostics and the evaluation it runs.

``train_dino`` follows ``train_one_epoch`` of facebookresearch/dino: per step, multi-crop the batch,
set the scheduled learning rate and weight decay, teacher scores on the 2 global crops, student
scores on all crops, the DINO loss, backward, gradient clipping, the prototypes frozen during the
first epoch, an optimizer step and the EMA update of the teacher. It records per-step diagnostics
(loss, teacher entropy, KL, centre norm, lr, momentum) and evaluates the teacher every
``eval_every`` steps with the function it is given (weighted k-NN and attention Jaccard on scenes in
notebook 05: ``vislearn.analysis.evaluation.backbone_evaluator``). Built in notebook 05.

Under ``torchrun`` (``vislearn.train.distributed``) each process multi-crops the whole global batch
with the same generator and keeps its shard; the student runs inside DistributedDataParallel
(``DINO.student_views``), which averages the gradients, and the centre is updated with
the batch mean over all processes (as the reference's ``dist.all_reduce``), so student, teacher
(EMA) and centre stay identical on every rank. Every rank runs ``evaluate`` on its (identical) teacher.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.augment import MultiCrop, MultiCropConfig
from ..train import distributed, resume
from ..train.loop import mixed_precision, param_groups
from .dino import DINO, DINOLoss, cosine_schedule, teacher_temperature_schedule


@dataclass
class DINOConfig:
    epochs: float = 30                 # passes over the training images
    batch_size: int = 64               # images per step (each gives 2 + n_local crops)
    lr: float = 1e-3                   # peak learning rate of AdamW, after warmup
    min_lr: float = 1e-5               # learning rate at the end of the cosine decay
    warmup_epochs: float = 2           # linear learning-rate warmup
    weight_decay: float = 0.04         # weight decay at the start ...
    weight_decay_end: float = 0.4      # ... and at the end (cosine), as in the paper
    momentum_teacher: float = 0.996    # teacher EMA momentum at the start; cosine to 1 at the end
    out_dim: int = 1024                # K, number of prototypes
    hidden_dim: int = 512              # width of the head's MLP
    bottleneck_dim: int = 128          # width before the L2 normalization
    norm_last_layer: bool = True       # fix the prototypes' norm to 1 (stabler)
    teacher_temp: float = 0.04         # teacher temperature after warm-up
    warmup_teacher_temp: float = 0.04  # teacher temperature at step 0
    warmup_teacher_temp_epochs: float = 0  # warm-up of the teacher temperature, per epoch (whole epochs)
    student_temp: float = 0.1          # student temperature
    center_momentum: float = 0.9       # EMA rate of the teacher centre (1.0: it stays 0, no centering)
    freeze_last_layer_epochs: float = 1  # keep the prototypes fixed at first (helps escape collapse)
    clip_grad: float | None = 3.0      # max gradient norm of each parameter tensor (None: off)
    drop_path: float = 0.1             # stochastic depth of the student
    crops: MultiCropConfig = field(default_factory=MultiCropConfig)
    log_every: int = 10                # record the diagnostics every this many steps
    eval_every: int = 0                # evaluate the teacher every this many steps (0: only at the end)


@dataclass
class DINOSchedules:
    """Per-step values, precomputed as arrays (as in the reference code), so they plot."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray

    @classmethod
    def from_config(cls, cfg: DINOConfig, steps_per_epoch: int) -> DINOSchedules:
        total = max(1, round(cfg.epochs * steps_per_epoch))
        warmup = min(total // 2, round(cfg.warmup_epochs * steps_per_epoch))
        return cls(lr=cosine_schedule(cfg.lr, cfg.min_lr, total, warmup),
                   weight_decay=cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, total),
                   momentum=cosine_schedule(cfg.momentum_teacher, 1.0, total),
                   teacher_temp=teacher_temperature_schedule(
                       cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_temp_epochs, total,
                       steps_per_epoch))

    def plot(self):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 4, figsize=(12, 2.6))
        for ax, (name, values) in zip(axes, asdict(self).items(), strict=True):
            ax.plot(values)
            ax.set(title=name, xlabel="step")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        return fig


@dataclass
class DINOHistory:
    """Diagnostics per logged step, teacher evaluations, and timings."""

    steps: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0               # training time, evaluations excluded
    images_per_second: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DINOHistory:
        return cls(**{k: d[k] for k in ("steps", "evals", "seconds", "images_per_second") if k in d})

    def plot(self, keys: tuple[str, ...] = ("loss", "teacher_entropy", "teacher_batch_entropy", "kl")):
        """The diagnostics against epochs, and the teacher's k-NN accuracy and Jaccard if evaluated."""
        import matplotlib.pyplot as plt

        n = len(keys) + bool(self.evals)
        fig, axes = plt.subplots(1, n, figsize=(3 * n, 2.6), squeeze=False)
        axes = axes[0]
        for ax, key in zip(axes, keys, strict=False):
            ax.plot([s["epoch"] for s in self.steps], [s[key] for s in self.steps], lw=1)
            ax.set(title=key, xlabel="epoch")
            ax.grid(alpha=0.3)
        if self.evals:
            ax = axes[-1]
            for key in ("knn", "jaccard"):
                ax.plot([e["epoch"] for e in self.evals], [e[key] for e in self.evals], "o-", ms=3, label=key)
            ax.set(title="teacher", xlabel="epoch")
            ax.legend()
            ax.grid(alpha=0.3)
        fig.tight_layout()
        return fig


@torch.no_grad()
def clip_gradients(model: nn.Module, clip: float | None) -> tuple[float, float]:
    """Clip the gradient of each parameter tensor separately to norm ``clip``, as DINO's
    ``utils.clip_gradients`` (``grad *= clip / (norm + 1e-6)`` where that factor is < 1).

    Not ``torch.nn.utils.clip_grad_norm_``, which rescales all gradients together by their global
    norm: at the first step of the bundled recipe that norm is ~89 and 33 of 61 tensors are above 3,
    so one rule shrinks every tensor 30x and the other only the large ones, each to norm 3.

    Returns:
        (global gradient norm before clipping, fraction of the tensors that were clipped).
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0, 0.0
    norms = torch.stack([g.norm(2) for g in grads])
    global_norm = float(norms.square().sum().sqrt())
    if clip is None:
        return global_norm, 0.0
    factors = (clip / (norms + 1e-6)).tolist()
    for g, factor in zip(grads, factors, strict=True):
        if factor < 1:
            g.mul_(factor)
    return global_norm, sum(f < 1 for f in factors) / len(factors)


def same_steps(cfg: DINOConfig, from_images: int, to_images: int) -> DINOConfig:
    """``cfg`` for ``to_images`` training images with the schedules, step for step, of ``cfg`` on
    ``from_images``: every length given in epochs is scaled by ``from_images / to_images``.

    Notebook 05 reruns the first steps of the bundled recipe (60,000 scenes) on its 20,000. A teacher
    temperature warm-up, which is per epoch, then steps at the shorter epochs' ends (the bundled
    recipe has none).
    """
    k = from_images / to_images
    return replace(cfg, epochs=cfg.epochs * k, warmup_epochs=cfg.warmup_epochs * k,
                   warmup_teacher_temp_epochs=cfg.warmup_teacher_temp_epochs * k,
                   freeze_last_layer_epochs=cfg.freeze_last_layer_epochs * k)


def train_dino(dino: DINO, images: torch.Tensor, cfg: DINOConfig | None = None, *,
               evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
               device: torch.device | str = "cpu", seed: int = 0,
               progress: bool = True, max_seconds: float | None = None,
               max_steps: int | None = None) -> DINOHistory:
    """Train ``dino`` on normalized images (N, C, H, W) with no labels (one process, or torchrun's).

    Args:
        evaluate: ``evaluate(teacher_backbone) -> {"knn": ..., "jaccard": ...}``, called every
            ``cfg.eval_every`` steps and at the end (e.g. ``vislearn.analysis.evaluation.backbone_evaluator``).
        max_seconds: stop early after this much training time (schedules stay as planned).
        max_steps: stop early after this many steps (schedules stay as planned: the first steps of
            a long run, as in the collapse experiments of notebook 05).
    """
    cfg = cfg or DINOConfig()
    device = torch.device(device)
    distributed.check_batch(cfg.batch_size)     # the global batch splits evenly over the processes
    gen = torch.Generator().manual_seed(seed)
    n = len(images)
    steps_per_epoch = max(1, n // cfg.batch_size)
    sched = DINOSchedules.from_config(cfg, steps_per_epoch)
    total = len(sched.lr)
    freeze_steps = round(cfg.freeze_last_layer_epochs * steps_per_epoch)
    multicrop = MultiCrop(cfg.crops)
    loss_fn = DINOLoss(cfg.out_dim, sched.teacher_temp, cfg.student_temp, cfg.center_momentum).to(device)
    dino.to(device).train()
    distributed.start_together(dino, seed)
    student = distributed.wrap(dino.student_views(), device)   # DistributedDataParallel under torchrun
    # DINO's reference (utils.get_params_groups) decays everything but biases and norms: skip=()
    opt = torch.optim.AdamW(param_groups(dino.student, cfg.weight_decay, skip=()), lr=cfg.lr)
    last_layer = list(dino.student["head"].last_layer.parameters())
    history, running = DINOHistory(), []
    train_time, seen, order = 0.0, 0, torch.empty(0, dtype=torch.long)
    planned = total if max_steps is None else min(total, max_steps)   # the bar ends full when the run ends as planned
    periodic, first = resume.current(), 0          # periodic checkpoints (vislearn.train.resume), if asked for
    if periodic is not None and not periodic.used:
        periodic.used = True
        if periodic.resume:
            order, state, extra = periodic.load(dino, opt, gen, device, seed)
            loss_fn.center.copy_(extra["center"])
            first, running, history = state["step"], state["running"], DINOHistory.from_dict(state["history"])
            train_time, seen = state["train_time"], state["seen"]
    else:
        periodic = None
    bar = tqdm(range(first, planned), desc="DINO", disable=not progress or not distributed.is_main(), leave=True,
               initial=first, total=planned)

    def run_eval(step: int) -> None:
        if evaluate is None:
            return
        metrics = evaluate(dino.teacher_backbone)
        history.evals.append({"step": step, "epoch": step / steps_per_epoch, "seconds": round(train_time, 1),
                              **{k: round(v, 4) for k, v in metrics.items()}})
        if distributed.is_main():     # one process prints
            bar.write(f"step {step}: teacher k-NN {metrics['knn']:.3f}  Jaccard {metrics['jaccard']:.3f}  "
                      f"({train_time / 60:.1f} min)")

    for step in bar:
        t0 = time.perf_counter()
        pos = (step % steps_per_epoch) * cfg.batch_size
        if pos == 0:
            order = torch.randperm(n, generator=gen)
        crops = multicrop(images[order[pos:pos + cfg.batch_size]], gen)       # the global batch's crops
        seen += len(crops[0])
        crops = [distributed.shard(c).to(device) for c in crops]              # this process's slice
        for group in opt.param_groups:
            group["lr"] = float(sched.lr[step])
            group["weight_decay"] = float(sched.weight_decay[step]) if group["decay"] else 0.0
        with mixed_precision(device):                                          # bf16 on a GPU
            teacher_out = dino.teacher_scores(crops[:2])
            student_out = student(crops)
        teacher_out, student_out = [t.float() for t in teacher_out], [s.float() for s in student_out]
        loss, stats = loss_fn(student_out, teacher_out, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm, clipped = clip_gradients(dino.student, cfg.clip_grad)
        if step < freeze_steps:       # the paper freezes the prototypes during the first epoch
            for p in last_layer:
                p.grad = None
        opt.step()
        dino.update_teacher(float(sched.momentum[step]))
        train_time += time.perf_counter() - t0
        running.append({"loss": loss.item(), **stats, "grad_norm": grad_norm, "clipped": clipped})
        if (step + 1) % cfg.log_every == 0 or step + 1 == total or step + 1 == max_steps:
            row = {k: sum(r[k] for r in running) / len(running) for k in running[0]}
            row = dict(zip(row, distributed.mean_floats(list(row.values())), strict=True))   # over processes
            history.steps.append({"step": step + 1, "epoch": (step + 1) / steps_per_epoch,
                                  **{k: round(v, 5) for k, v in row.items()},
                                  "lr": float(sched.lr[step]), "momentum": float(sched.momentum[step]),
                                  "weight_decay": float(sched.weight_decay[step]),
                                  "seconds": round(train_time, 1)})
            bar.set_postfix(loss=f"{row['loss']:.3f}", H=f"{row['teacher_entropy']:.2f}",
                            Hb=f"{row['teacher_batch_entropy']:.2f}", ips=f"{seen / train_time:.0f}")
            running = []
        done = max_seconds is not None and train_time >= max_seconds and step + 1 < planned   # out of time
        done = distributed.any_true(done) if max_seconds is not None else done   # all processes stop together
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < planned and not done:
            run_eval(step + 1)
        if done:
            break
        if periodic is not None and periodic.due(step + 1, planned):
            running = [dict(zip(r, distributed.mean_floats(list(r.values())), strict=True)) for r in running]
            periodic.save(step + 1, dino, opt, gen, order, {"running": running, "history": history.to_dict(),
                                                            "train_time": train_time, "seen": seen},
                          {"center": loss_fn.center})
    history.seconds = train_time
    history.images_per_second = seen / max(train_time, 1e-9)
    run_eval(len(history.steps) and history.steps[-1]["step"])
    return history
