"""DINO: self-distillation with no labels (Caron et al., 2021, "Emerging Properties in
Self-Supervised Vision Transformers"), from scratch: head, loss, schedules, student and EMA teacher.

A *student* network learns to predict, from any crop of an image, what a *teacher* network says
about the big crops of the same image. The teacher is not trained by gradients: it is an
exponential moving average (EMA) of the student. Both end in a ``DINOHead`` whose K outputs are
turned into a distribution over K "prototypes" by a softmax with a temperature. Two things keep
this from collapsing to a constant: the teacher's outputs are *centred* (a running mean is
subtracted, so no prototype can win for every image) and *sharpened* (a low teacher temperature,
so each image's distribution is peaked). No labels are used anywhere.

Mapped to the reference implementation (facebookresearch/dino, ``main_dino.py``):

- ``DINOHead``: MLP -> bottleneck -> L2 normalization -> weight-normalized linear layer.
- ``DINOLoss``: cross-entropy between the centred, sharpened teacher and the student over every
  pair of (teacher global view, student view) with different views; centre updated by EMA; teacher
  temperature warmed up. Under torchrun the centre's batch mean is averaged over the processes
  (``vislearn.train.distributed.mean``, a no-op in one process), as the reference's all-reduce.
- ``cosine_schedule``: learning rate, weight decay and teacher momentum as arrays (they plot).
- ``DINO``: student and teacher (backbone + head) and ``ema_update``. The backbone is our ViT, whose
  ``embed`` resizes its position table for the small local crops (``interpolate_pos_encoding``).

The multi-crop augmentation is ``vislearn.data.augment.MultiCrop``; the single-process training
loop is ``vislearn.methods.dino_training``; the recipes ``dino_scenes`` and ``vit_scenes`` are in
``vislearn/recipes/nb05_dino.py``. Built in notebook 05.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.vit import VisionTransformer
from ..train import distributed


def backbone_features(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled features (B, D) of images (B, C, s, s) for any s that is a whole number of patches
    (the position table is resized to the crop's grid by the model's ``embed``)."""
    return vit.forward_head(vit.forward_features(x), pre_logits=True)


# --- Head, loss, schedules ---------------------------------------------------------------------------


class WeightNormLinear(nn.Module):
    """A linear layer without bias whose weight rows are ``g * v / |v|`` (Salimans & Kingma, 2016).

    With ``fix_norm`` (DINO's ``norm_last_layer=True``) g stays 1: every output is the cosine
    between the input and one prototype direction, which stabilizes training.
    """

    def __init__(self, in_dim: int, out_dim: int, fix_norm: bool = True):
        super().__init__()
        # nn.Linear's default init (uniform in +-1/sqrt(in), rows of norm ~0.58), as in the reference,
        # which creates the last layer after ``apply(_init_weights)``: the direction is random either
        # way, but |v| sets the step size of the prototypes (the gradient on v scales as 1/|v|).
        self.weight_v = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach().clone())
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not fix_norm)

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_g * F.normalize(self.weight_v, dim=1)   # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


def by_size(fn, crops: list[torch.Tensor]):
    """``fn`` on every crop, the consecutive crops of the same size in one batch: one output per crop.

    ``fn`` maps a (n B, C, S, S) batch to a tensor of n B rows (a list with one tensor per crop comes
    back) or to a tuple of such tensors (a tuple of such lists comes back).
    """
    parts, tuples, i = [], False, 0              # parts: per crop, a tuple of its outputs
    while i < len(crops):
        j = i
        while j < len(crops) and crops[j].shape[-1] == crops[i].shape[-1]:
            j += 1
        y = fn(torch.cat(crops[i:j]))                                   # ((j - i) B, ...)
        tuples = isinstance(y, tuple)
        parts += zip(*(t.chunk(j - i) for t in (y if tuples else (y,))), strict=True)
        i = j
    outputs = [list(t) for t in zip(*parts, strict=True)]               # per output, one tensor per crop
    return tuple(outputs) if tuples else outputs[0]


class DINOHead(nn.Module):
    """Features (B, D) -> MLP -> bottleneck -> L2-normalize -> weight-normed linear -> (B, K) scores."""

    def __init__(self, in_dim: int, out_dim: int, *, hidden_dim: int = 512, bottleneck_dim: int = 128,
                 n_layers: int = 3, norm_last_layer: bool = True):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < n_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, fix_norm=norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)    # (B, bottleneck), unit length
        return self.last_layer(x)               # (B, K)


def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int = 0,
                    warmup_start: float = 0.0) -> np.ndarray:
    """One value per step, as DINO's ``utils.cosine_scheduler``: a linear warmup from ``warmup_start``
    that ends *on* ``base``, then a half cosine from ``base`` towards ``final``. Shape (total_steps,).

    Two edges follow the reference exactly (``tests/methods/test_dino.py`` compares them with a copy
    of it): the first step after the warmup repeats ``base``, and the cosine stops one step short
    of ``final`` (its last value is ``final + (base - final) (1 + cos(pi (n-1)/n)) / 2``).
    """
    warmup_steps = min(warmup_steps, total_steps)
    warm = np.linspace(warmup_start, base, warmup_steps)
    n = total_steps - warmup_steps
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * np.arange(n) / max(n, 1)))
    return np.concatenate([warm, cos])


def teacher_temperature_schedule(start: float, final: float, warmup_epochs: float, total_steps: int,
                                 steps_per_epoch: int) -> np.ndarray:
    """Teacher temperature per step: constant within an epoch, warmed up linearly over epochs from
    ``start`` (epoch 0) to ``final`` (epoch ``warmup_epochs`` - 1), then ``final``; as DINO's
    ``DINOLoss``, which indexes a per-epoch schedule by the epoch. Shape (total_steps,).

    A teacher too sharp too early can collapse the student onto one prototype; the paper warms
    it from 0.04 to its final value over the first 30 epochs. ``warmup_epochs`` is rounded to a
    whole number of epochs (the reference takes an int)."""
    warm = max(0, round(warmup_epochs))
    n_epochs = max(warm, -(-total_steps // steps_per_epoch))
    per_epoch = np.concatenate([np.linspace(start, final, warm), np.full(n_epochs - warm, final)])
    return per_epoch[np.arange(total_steps) // steps_per_epoch]


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of distributions over the last axis."""
    return -(p * p.clamp(min=1e-12).log()).sum(-1)


class DINOLoss(nn.Module):
    """Cross-entropy from the centred, sharpened teacher to the student, over all view pairs.

    For every teacher view i (the 2 global crops) and every student view v (all crops) with
    v != i: ``H(softmax((t_i - c) / tau_t), softmax(s_v / tau_s))``, averaged over pairs and images.
    We skip pairs where student and teacher see the same view: predicting yourself teaches nothing.

    Args:
        out_dim: K, the number of prototypes.
        teacher_temps: teacher temperature per step, (steps,); see ``teacher_temperature_schedule``.
        student_temp: student temperature (0.1 in the paper).
        center_momentum: EMA rate of the centre c (0.9 in the paper).
    """

    def __init__(self, out_dim: int, teacher_temps: np.ndarray | float, student_temp: float = 0.1,
                 center_momentum: float = 0.9):
        super().__init__()
        self.teacher_temps = np.atleast_1d(np.asarray(teacher_temps, dtype=np.float64))
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temp(self, step: int) -> float:
        return float(self.teacher_temps[min(step, len(self.teacher_temps) - 1)])

    def teacher_probs(self, teacher_out: list[torch.Tensor], step: int) -> list[torch.Tensor]:
        """Centre and sharpen the teacher's scores: softmax((t - c) / tau_t), per global view."""
        return [F.softmax((t - self.center) / self.teacher_temp(step), dim=-1) for t in teacher_out]

    def forward(self, student_out: list[torch.Tensor], teacher_out: list[torch.Tensor],
                step: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        """
        Args:
            student_out: one (B, K) score tensor per crop, the teacher's views first.
            teacher_out: one (B, K) score tensor per global crop.
            step: training step (picks the teacher temperature).
        Returns:
            the loss, and diagnostics: teacher entropy (per image, mean), entropy of the teacher's
            mean distribution (over the batch), KL(teacher || student), centre norm, temperature.
        """
        teacher = [p.detach() for p in self.teacher_probs(teacher_out, step)]
        student = [F.log_softmax(s / self.student_temp, dim=-1) for s in student_out]
        total, kl, pairs = 0.0, 0.0, 0
        for i, t in enumerate(teacher):
            for v, log_s in enumerate(student):
                if v == i:
                    continue
                ce = -(t * log_s).sum(-1).mean()
                total = total + ce
                kl += (ce - entropy(t).mean()).item()
                pairs += 1
        loss = total / pairs
        probs = torch.cat(teacher)                                          # (2B, K)
        stats = {"teacher_entropy": entropy(probs).mean().item(),
                 "teacher_batch_entropy": entropy(distributed.mean(probs.mean(0))).item(),
                 "kl": kl / pairs, "center_norm": self.center.norm().item(),
                 "teacher_temp": self.teacher_temp(step)}
        self.update_center(teacher_out)
        return loss, stats

    @torch.no_grad()
    def update_center(self, teacher_out: list[torch.Tensor]) -> None:
        """c <- m c + (1 - m) mean of this batch's teacher scores.

        Under torchrun each process holds a shard of the batch: the mean of the shards' (equal-size)
        means is the global batch's mean, the reference's ``dist.all_reduce(batch_center)`` then
        ``batch_center / (len(teacher_output) * world_size)``; every rank gets the same centre.
        """
        batch_center = torch.cat(teacher_out).mean(dim=0, keepdim=True)     # (1, K)
        batch_center = distributed.mean(batch_center)                      # over processes (one: itself)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


# --- Student, teacher, EMA ---------------------------------------------------------------------------


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter."""
    for pt, ps in zip(teacher.parameters(), student.parameters(), strict=True):
        pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)


class DINO(nn.Module):
    """A student (backbone + head) trained by gradients, and a teacher (a copy) updated by EMA.

    Args:
        backbone: a ViT without classification head (``num_classes=0``): it returns features.
        out_dim, hidden_dim, bottleneck_dim, norm_last_layer: the DINOHead's sizes.
    """

    def __init__(self, backbone: VisionTransformer, out_dim: int = 1024, *, hidden_dim: int = 512,
                 bottleneck_dim: int = 128, norm_last_layer: bool = True):
        super().__init__()
        head = DINOHead(backbone.cfg.embed_dim, out_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim,
                        norm_last_layer=norm_last_layer)
        self.student = nn.ModuleDict({"backbone": backbone, "head": head})
        self.teacher = copy.deepcopy(self.student)       # starts equal to the student
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()                              # no drop-path in the teacher

    def train(self, mode: bool = True) -> DINO:
        self.student.train(mode)
        self.teacher.eval()
        return self

    @staticmethod
    def _run(net: nn.ModuleDict, crops: list[torch.Tensor]) -> list[torch.Tensor]:
        """Scores of every crop. Crops of the same size go through the backbone together."""
        return by_size(lambda x: net["head"](backbone_features(net["backbone"], x)), crops)

    def student_scores(self, crops: list[torch.Tensor]) -> list[torch.Tensor]:
        return self._run(self.student, crops)

    def student_views(self) -> StudentViews:
        """The student as one module called on all the crops (what DistributedDataParallel wraps)."""
        return StudentViews(self.student)

    @torch.no_grad()
    def teacher_scores(self, global_crops: list[torch.Tensor]) -> list[torch.Tensor]:
        return self._run(self.teacher, global_crops)

    def update_teacher(self, momentum: float) -> None:
        ema_update(self.teacher, self.student, momentum)

    @property
    def teacher_backbone(self) -> VisionTransformer:
        return self.teacher["backbone"]


class StudentViews(nn.Module):
    """``forward(crops)``: the student's scores of every crop, ``DINO.student_scores`` as a module.

    Under torchrun the training loop wraps this in DistributedDataParallel, whose gradient averaging
    covers only what runs through the wrapper's ``forward``: backbone and head, on every crop.
    """

    def __init__(self, student: nn.ModuleDict):
        super().__init__()
        self.student = student

    def forward(self, crops: list[torch.Tensor]) -> list[torch.Tensor]:
        return DINO._run(self.student, crops)
