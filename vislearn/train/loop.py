"""One small training loop for classifiers, and the weight-decay rule every loop shares.

``fit`` trains any classifier on in-memory tensors: tqdm progress bar, any device, mixed precision
on CUDA, gradient clipping, warmup + cosine learning rate, periodic evaluation, and a ``History``
that plots as curves. A ``loss_fn(model, x, y)`` argument lets later notebooks (distillation, LPI
ablation, zoom augmentation) reuse the loop with their own objective. ``param_groups`` is timm's
weight-decay rule, used by ``fit`` and by DINO's loop. Built in notebook 01.

Under ``torchrun`` (see ``distributed``) every process draws the same global batch, augments all of
it with the same generator, keeps its shard, and the model runs inside DistributedDataParallel, which
averages the gradients before the step: the losses match a one-process run with the same
``batch_size`` (the global batch) within float error.
BatchNorm layers see their shard's statistics (DDP keeps rank 0's running averages on every rank).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from ..config import ParameterError
from ..data.augment import random_crop_flip
from ..models.layers import eval_mode
from . import distributed, resume

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainConfig:
    epochs: float = 10            # passes over the training set (fractions allowed)
    batch_size: int = 128
    lr: float = 1e-3              # peak learning rate of AdamW
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0    # linear warmup, then cosine decay to 0
    clip_grad: float | None = 1.0  # max gradient norm (None: no clipping)
    label_smoothing: float = 0.0
    augment: bool = True          # random translation (2 px) and horizontal flip
    eval_every: float = 1.0       # evaluate every this many epochs (and at the end)
    log_every: int = 25           # record the training loss every this many steps
    train_limit: int | None = None  # use a random subset of the training set
    test_limit: int | None = None   # evaluate on a random subset of the test set
    wd_skip: tuple[str, ...] | None = None  # parameter names without weight decay, besides biases and norms;
                                            # None: the model's no_weight_decay() (timm's rule)

    def __post_init__(self):
        if not (isinstance(self.epochs, (int, float)) and self.epochs > 0 and math.isfinite(self.epochs)):
            raise ParameterError(f"epochs={self.epochs!r} must be a positive number")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ParameterError(f"batch_size={self.batch_size!r} must be a positive integer")


@dataclass
class History:
    """What happened during training: logged steps and evaluations, ready to plot."""

    steps: list[dict[str, float]] = field(default_factory=list)  # step, epoch, loss, lr
    evals: list[dict[str, float]] = field(default_factory=list)  # step, epoch, test_loss, test_accuracy
    seconds: float = 0.0

    def final(self, key: str = "test_accuracy") -> float:
        return self.evals[-1][key] if self.evals else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(steps=list(d["steps"]), evals=list(d["evals"]), seconds=float(d.get("seconds", 0.0)))

    def plot(self, title: str = ""):
        """Training loss and test accuracy against epochs, side by side."""
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
        ax1.plot([s["epoch"] for s in self.steps], [s["loss"] for s in self.steps], lw=1)
        if self.evals:
            ax1.plot([e["epoch"] for e in self.evals], [e["test_loss"] for e in self.evals], "o-", ms=3,
                     label="test")
            ax1.legend(["train", "test"])
            ax2.plot([e["epoch"] for e in self.evals], [e["test_accuracy"] for e in self.evals], "o-", ms=3)
        ax1.set(xlabel="epoch", ylabel="loss", title="loss")
        ax2.set(xlabel="epoch", ylabel="accuracy", title="test accuracy")
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
        fig.suptitle(title)
        fig.tight_layout()
        return fig


def _autocast(device: torch.device):
    """bf16 autocast on CUDA (fp16 where bf16 is missing), nothing elsewhere."""
    if device.type != "cuda":
        return torch.autocast("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def mixed_precision(device: torch.device):
    """bf16 autocast on a CUDA GPU that has bf16, nothing elsewhere: for the self-supervised loops, which
    keep no gradient scaler (fp16 would need one). The loops cast the network's outputs back to float32
    before their losses (softmaxes at temperature 0.04 and Sinkhorn's exponentials need the precision)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
            batch_size: int = 500) -> torch.Tensor:
    """Logits (N, classes) of ``model`` on images (N, C, H, W), in eval mode, batch by batch."""
    device = torch.device(device)
    out = []
    with eval_mode(model):
        for i in range(0, len(images), batch_size):
            with _autocast(device):
                out.append(model(images[i:i + batch_size].to(device)).float().cpu())
    return torch.cat(out)


def evaluate(model: nn.Module, dataset: TensorDataset, device: torch.device | str = "cpu",
             batch_size: int = 500) -> dict[str, float]:
    """Cross-entropy loss and accuracy of ``model`` on a (images, labels) dataset."""
    images, labels = dataset.tensors
    logits = predict(model, images, device, batch_size)
    return {"loss": F.cross_entropy(logits, labels).item(),
            "accuracy": (logits.argmax(1) == labels).float().mean().item()}


def _evaluate_shards(model: nn.Module, dataset: TensorDataset, device: torch.device) -> dict[str, float]:
    """``evaluate``, each process on a slice of the test set, the sums reduced (``evaluate`` in one process)."""
    n = distributed.world_size()
    if n == 1:
        return evaluate(model, dataset, device)
    images, labels = dataset.tensors
    part = slice(distributed.rank() * len(images) // n, (distributed.rank() + 1) * len(images) // n)
    logits = predict(model, images[part], device)
    sums = torch.tensor([F.cross_entropy(logits, labels[part], reduction="sum").item(),
                         (logits.argmax(1) == labels[part]).sum().item()], dtype=torch.float64)
    total = distributed.mean(sums) * n / len(images)
    return {"loss": total[0].item(), "accuracy": total[1].item()}


def param_groups(model: nn.Module, weight_decay: float, *, skip: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """AdamW parameter groups by timm's rule: no weight decay on biases and norms (1-D parameters,
    LayerScale gammas included) nor on the parameters named in ``skip``; decay on everything else.

    Args:
        skip: names of parameters without decay; None: ``model.no_weight_decay()`` if the model has it
            (ours and timm's: tokens, position tables, XCiT's temperatures). DINO's reference code
            (``utils.get_params_groups``) decays tokens and position tables: it passes ``skip=()``.
    Returns:
        [{"params": decayed, "weight_decay": weight_decay, "decay": True},
         {"params": the rest, "weight_decay": 0.0, "decay": False}], frozen parameters left out.
    """
    skip = set(model.no_weight_decay() if skip is None and hasattr(model, "no_weight_decay") else skip or ())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "decay": True},
            {"params": no_decay, "weight_decay": 0.0, "decay": False}]


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def fit(model: nn.Module, train_set: TensorDataset, test_set: TensorDataset | None = None,
        cfg: TrainConfig | None = None, *, device: torch.device | str = "cpu",
        loss_fn: LossFn | None = None, seed: int = 0, progress: bool = True,
        on_eval: Callable[[nn.Module], dict[str, Any]] | None = None) -> History:
    """Train ``model`` with AdamW on an in-memory dataset and return its History.

    Args:
        train_set: TensorDataset of images (N, C, H, W) and integer labels (N,).
        test_set: evaluated every ``cfg.eval_every`` epochs and at the end, if given.
        loss_fn: ``loss_fn(model, x, y) -> scalar``; default: cross-entropy on ``model(x)``. Under torchrun
            ``model`` is the DistributedDataParallel wrapper: call it; ``distributed.unwrap(model)`` is the model.
        on_eval: ``on_eval(model) -> dict`` of JSON-able values added to every evaluation's record (e.g.
            ConViT's gates, so the history shows how they move during training).
    """
    cfg = cfg or TrainConfig()
    device = torch.device(device)
    distributed.check_batch(cfg.batch_size)     # the global batch splits evenly over the processes
    gen = torch.Generator().manual_seed(seed)
    images, labels = train_set.tensors
    images, labels = images.to(device), labels.to(device)
    n = len(images)
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = max(1, round(cfg.epochs * steps_per_epoch))
    warmup = min(total // 2, round(cfg.warmup_epochs * steps_per_epoch))
    eval_steps = {total} | {round(k * cfg.eval_every * steps_per_epoch)
                            for k in range(1, int(cfg.epochs / cfg.eval_every) + 1)}
    if loss_fn is None:
        def loss_fn(m, x, y):
            return F.cross_entropy(m(x), y, label_smoothing=cfg.label_smoothing)

    model.to(device).train()
    distributed.start_together(model, seed)
    net = distributed.wrap(model, device)      # DistributedDataParallel under torchrun: averages the gradients
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay, skip=cfg.wd_skip), lr=cfg.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())
    history, start, running, order = History(), time.perf_counter(), [], torch.empty(0, dtype=torch.long)
    periodic, first = resume.current(), 0
    if periodic is not None and not periodic.used:            # the run's first fit writes periodic checkpoints
        periodic.used = True
        if periodic.resume:                                   # carry on after the last one
            order, state, _ = periodic.load(model, opt, gen, device, seed)
            first, running, history = state["step"], state["running"], History.from_dict(state["history"])
            start -= history.seconds
            if state["scaler"]:
                scaler.load_state_dict(state["scaler"])
    else:
        periodic = None
    bar = tqdm(range(first, total), desc="training", disable=not progress or not distributed.is_main(),
               leave=True, initial=first, total=total)
    for step in bar:
        pos = (step % steps_per_epoch) * cfg.batch_size
        if pos == 0:
            order = torch.randperm(n, generator=gen).to(device)
        idx = order[pos:pos + cfg.batch_size]
        x, y = images[idx], labels[idx]
        if cfg.augment:
            x = random_crop_flip(x.cpu(), generator=gen).to(device)
        x, y = distributed.shard(x), distributed.shard(y)     # this process's slice of the global batch
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, warmup, cfg.lr)
        with _autocast(device):
            loss = loss_fn(net, x, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.clip_grad:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        scaler.step(opt)
        scaler.update()
        running.append(loss.item())
        epoch = (step + 1) / steps_per_epoch
        if (step + 1) % cfg.log_every == 0 or step + 1 == total:
            history.steps.append({"step": step + 1, "epoch": epoch,
                                  "loss": distributed.mean_floats([sum(running) / len(running)])[0],
                                  "lr": opt.param_groups[0]["lr"]})
            bar.set_postfix(loss=f"{history.steps[-1]['loss']:.3f}")
            running = []
        if test_set is not None and step + 1 in eval_steps:
            metrics = _evaluate_shards(model, test_set, device)
            history.evals.append({"step": step + 1, "epoch": epoch, "test_loss": metrics["loss"],
                                  "test_accuracy": metrics["accuracy"], **(on_eval(model) if on_eval else {})})
            bar.set_postfix(loss=f"{loss.item():.3f}", test_acc=f"{metrics['accuracy']:.3f}")
            model.train()
        if periodic is not None and periodic.due(step + 1, total):
            running = distributed.mean_floats(running) if running else running   # global-batch losses, as logged
            history.seconds = time.perf_counter() - start
            periodic.save(step + 1, model, opt, gen, order, {"running": running, "history": history.to_dict(),
                                                             "scaler": scaler.state_dict()})
    history.seconds = time.perf_counter() - start
    return history
