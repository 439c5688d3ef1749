"""DINO: self-distillation with no labels (Caron et al., 2021, "Emerging Properties in
Self-Supervised Vision Transformers"), from scratch, in one process.

A *student* network learns to predict, from any crop of an image, what a *teacher* network says
about the big crops of the same image. The teacher is not trained by gradients: it is an
exponential moving average (EMA) of the student. Both end in a ``DINOHead`` whose K outputs are
turned into a distribution over K "prototypes" by a softmax with a temperature. Two things keep
this from collapsing to a constant: the teacher's outputs are *centred* (a running mean is
subtracted, so no prototype can win for every image) and *sharpened* (a low teacher temperature,
so each image's distribution is peaked). No labels are used anywhere.

What is here, mapped to the reference implementation (facebookresearch/dino, ``main_dino.py``):

- ``MultiCrop``: 2 global + several local crops, batched tensor ops (random resized crop, flip,
  colour jitter, grayscale, blur, solarize), so it runs fast on a CPU (``DataAugmentationDINO``).
- ``DINOHead``: MLP -> bottleneck -> L2 normalization -> weight-normalized linear layer.
- ``DINOLoss``: cross-entropy between the centred, sharpened teacher and the student over every
  pair of (teacher global view, student view) with different views; centre updated by EMA; teacher
  temperature warmed up. No ``torch.distributed``: one process, one batch, one mean.
- ``cosine_schedule``: learning rate, weight decay and teacher momentum as arrays (they plot).
- ``DINO``: student and teacher (backbone + head), ``ema_update``, and ``train_dino``, a single
  process loop with a progress bar and per-step diagnostics (loss, teacher entropy, KL, centre
  norm, lr, momentum) plus periodic k-NN / attention-Jaccard evaluation of the teacher.
- Recipes: ``python -m vislearn.dino dino_scenes --preset full --out data/checkpoints`` trains on
  ``vislearn.scenes`` and saves the teacher's backbone through ``vislearn.weights``;
  ``vit_scenes`` trains the same ViT *with* labels, for a fair comparison.

Built in notebook 05. Evaluation (k-NN, attention masks, Jaccard) lives in ``vislearn.evaluation``.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from . import weights
from .config import check_choice, resolve_device, resolve_preset, seed_everything
from .evaluation import attention_jaccard, extract_features, knn_accuracy
from .models import build, from_timm
from .results import write_json_atomic
from .scenes import DINO_SCENES, SCENES_MEAN, SCENES_STD, SceneConfig, Scenes, make_scenes, train_test_scenes
from .train import TrainConfig, evaluate, fit, recipe_parser, run_and_report
from .vit import VisionTransformer, ViTConfig

# --- Multi-crop augmentation -------------------------------------------------------------------------


@dataclass(frozen=True)
class MultiCropConfig:
    global_size: int = 64                              # side of the 2 global crops (the model's img_size)
    local_size: int = 32                               # side of the local crops (a multiple of the patch)
    n_local: int = 4                                   # number of local crops (0: global crops only)
    global_scale: tuple[float, float] = (0.4, 1.0)     # area of a global crop, as a fraction of the image
    local_scale: tuple[float, float] = (0.05, 0.4)     # area of a local crop
    ratio: tuple[float, float] = (3 / 4, 4 / 3)        # aspect ratio range of every crop
    flip: float = 0.5                                  # probability of a horizontal flip
    jitter: float = 0.8                                # probability of colour jitter
    brightness: float = 0.4                            # jitter strengths, as torchvision's ColorJitter
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1                                   # max hue rotation, as a fraction of the circle
    grayscale: float = 0.2                             # probability of dropping colour
    blur: tuple[float, float, float] = (1.0, 0.1, 0.5)  # blur probability: global 1, global 2, locals
    blur_sigma: tuple[float, float] = (0.1, 1.0)       # Gaussian blur sigma range, pixels
    solarize: float = 0.2                              # solarization probability of global crop 2


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _uniform(n: int, low: float, high: float, gen: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def random_resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float], ratio: tuple[float, float],
                        flip: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random crop of each image (area ``scale``, aspect ``ratio``), resized to size x size, with
    a random horizontal flip: all images at once, by one ``grid_sample``.

    Args:
        x: images (B, C, H, W).
    Returns:
        (B, C, size, size).
    """
    B = x.shape[0]
    area = _uniform(B, *scale, generator)
    log_r = _uniform(B, math.log(ratio[0]), math.log(ratio[1]), generator)
    w = (area * log_r.exp()).sqrt().clamp(max=1.0)     # crop width, as a fraction of the image width
    h = (area / log_r.exp()).sqrt().clamp(max=1.0)
    cx = (2 * torch.rand(B, generator=generator) - 1) * (1 - w)   # crop centre in [-1, 1] coordinates
    cy = (2 * torch.rand(B, generator=generator) - 1) * (1 - h)
    sign = torch.where(torch.rand(B, generator=generator) < flip, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta.to(x), [B, x.shape[1], size, size], align_corners=False)  # (B, s, s, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def color_jitter(x: torch.Tensor, p: float, brightness: float, contrast: float, saturation: float, hue: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """torchvision's ColorJitter, batched, on images in [0, 1] (B, 3, H, W); each image with prob. p.

    Hue is rotated in the YIQ colour space (a rotation of the two chroma axes), which is what a
    hue shift is, up to the small differences between YIQ and HSV.
    """
    B = x.shape[0]
    on = (torch.rand(B, generator=generator) < p).float().view(B, 1, 1, 1)
    b = 1 + on * _uniform(B, -brightness, brightness, generator).view(B, 1, 1, 1)
    c = 1 + on * _uniform(B, -contrast, contrast, generator).view(B, 1, 1, 1)
    s = 1 + on * _uniform(B, -saturation, saturation, generator).view(B, 1, 1, 1)
    angle = on.view(B) * _uniform(B, -hue, hue, generator) * 2 * math.pi
    x = (x * b).clamp(0, 1)
    luma = _LUMA.to(x).view(1, 3, 1, 1)
    mean = (x * luma).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)    # (B, 1, 1, 1)
    x = ((x - mean) * c + mean).clamp(0, 1)
    grey = (x * luma).sum(1, keepdim=True)                                    # (B, 1, H, W)
    x = ((x - grey) * s + grey).clamp(0, 1)
    cos, sin = angle.cos(), angle.sin()
    rot = torch.zeros(B, 3, 3)
    rot[:, 0, 0], rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = 1, cos, -sin, sin, cos
    m = (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).to(x)                                                   # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", m, x).clamp(0, 1)


def random_grayscale(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each image (B, 3, H, W) by its luma, repeated on 3 channels, with probability p."""
    on = (torch.rand(x.shape[0], generator=generator) < p).view(-1, 1, 1, 1)
    grey = (x * _LUMA.to(x).view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(x)
    return torch.where(on, grey, x)


def random_blur(x: torch.Tensor, p: float, sigma: tuple[float, float],
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian blur with a random sigma per image, with probability p: one grouped convolution."""
    B, C, H, W = x.shape
    if p <= 0:
        return x
    radius = max(1, math.ceil(2 * sigma[1]))
    s = _uniform(B, *sigma, generator)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-t[None] ** 2 / (2 * s[:, None] ** 2))                  # (B, 2r + 1)
    k = k / k.sum(1, keepdim=True)
    on = torch.rand(B, generator=generator) < p
    k[~on] = 0
    k[~on, radius] = 1                                                    # identity kernel: no blur
    k = k.to(x.device).repeat_interleave(C, 0)                            # (B * C, 2r + 1)
    y = F.pad(x.reshape(1, B * C, H, W), (radius,) * 4, mode="reflect")   # (1, B*C, H + 2r, W + 2r)
    y = F.conv2d(y, k.view(B * C, 1, 1, -1), groups=B * C)               # blur along rows
    y = F.conv2d(y, k.view(B * C, 1, -1, 1), groups=B * C)               # then along columns
    return y.view(B, C, H, W)


def random_solarize(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Invert the pixels above 0.5 (PIL's solarize at 128), with probability p per image."""
    on = (torch.rand(x.shape[0], generator=generator) < p).view(-1, 1, 1, 1)
    return torch.where(on & (x >= 0.5), 1 - x, x)


class MultiCrop:
    """DINO's augmentation: 2 global crops and ``n_local`` small local crops of every image.

    The two global views are augmented asymmetrically, as in the paper: the first always blurred,
    the second rarely blurred but sometimes solarized. Local crops see a small part of the image
    at low resolution; asking them to predict what the teacher says about a global view is the
    "local-to-global" correspondence that makes DINO's features object-aware.

    Args:
        cfg: crop sizes, scales and augmentation strengths.
        mean, std: per-channel normalization of the input images (undone, then redone).
    """

    def __init__(self, cfg: MultiCropConfig | None = None, mean: tuple[float, ...] = SCENES_MEAN,
                 std: tuple[float, ...] = SCENES_STD):
        self.cfg = cfg or MultiCropConfig()
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def _augment(self, x: torch.Tensor, size: int, scale, blur: float, solarize: float,
                 gen: torch.Generator | None) -> torch.Tensor:
        c = self.cfg
        x = random_resized_crop(x, size, scale, c.ratio, c.flip, gen)
        x = color_jitter(x, c.jitter, c.brightness, c.contrast, c.saturation, c.hue, gen)
        x = random_grayscale(x, c.grayscale, gen)
        x = random_blur(x, blur, c.blur_sigma, gen)
        x = random_solarize(x, solarize, gen)
        return (x - self.mean.to(x)) / self.std.to(x)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Normalized images (B, C, H, W) -> [global 1, global 2, local 1, ...]; globals are
        (B, C, global_size, global_size), locals (B, C, local_size, local_size)."""
        c = self.cfg
        x = (images * self.std.to(images) + self.mean.to(images)).clamp(0, 1)
        crops = [self._augment(x, c.global_size, c.global_scale, c.blur[0], 0.0, generator),
                 self._augment(x, c.global_size, c.global_scale, c.blur[1], c.solarize, generator)]
        crops += [self._augment(x, c.local_size, c.local_scale, c.blur[2], 0.0, generator)
                  for _ in range(c.n_local)]
        return crops


# --- Backbone on crops of any size -------------------------------------------------------------------


def interpolate_pos_embed(pos_embed: torch.Tensor, num_prefix_tokens: int, grid: int) -> torch.Tensor:
    """Resize a ViT's position table (1, prefix + g*g, D) to a grid x grid patch grid (bicubic).

    Local crops are smaller than the global ones, so they have fewer patches than the table has
    positions; like DINO's ``interpolate_pos_encoding``, we resample the table as an image.
    """
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    g = math.isqrt(patches.shape[1])
    if g == grid:
        return pos_embed
    D = patches.shape[-1]
    patches = patches.reshape(1, g, g, D).permute(0, 3, 1, 2)                              # (1, D, g, g)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([prefix, patches.permute(0, 2, 3, 1).reshape(1, grid * grid, D)], dim=1)  # (1, P + G, D)


def backbone_features(vit: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Pooled features (B, D) of images (B, C, s, s) for any s that is a multiple of the patch."""
    if x.shape[-1] == vit.cfg.img_size:
        return vit.forward_head(vit.forward_features(x), pre_logits=True)
    tokens = vit.patch_embed(x)                                                # (B, n, D)
    if vit.cls_token is not None:
        tokens = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)  # (B, 1 + n, D)
    grid = x.shape[-1] // vit.cfg.patch_size
    tokens = tokens + interpolate_pos_embed(vit.pos_embed, vit.num_prefix_tokens, grid)
    for block in vit.blocks:
        tokens = block(tokens)
    return vit.forward_head(vit.norm(tokens), pre_logits=True)                 # (B, D)


# --- Head, loss, schedules ---------------------------------------------------------------------------


class WeightNormLinear(nn.Module):
    """A linear layer without bias whose weight rows are ``g * v / |v|`` (Salimans & Kingma, 2016).

    With ``fix_norm`` (DINO's ``norm_last_layer=True``) g stays 1: every output is the cosine
    between the input and one prototype direction, which stabilizes training.
    """

    def __init__(self, in_dim: int, out_dim: int, fix_norm: bool = True):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight_v, std=0.02)
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not fix_norm)

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_g * F.normalize(self.weight_v, dim=1)   # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


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
    """One value per step: linear warmup from ``warmup_start`` to ``base``, then a half cosine from
    ``base`` down (or up) to exactly ``final`` at the last step. Shape (total_steps,)."""
    warmup_steps = min(warmup_steps, total_steps)
    warm = np.linspace(warmup_start, base, warmup_steps, endpoint=False) if warmup_steps else np.zeros(0)
    n = total_steps - warmup_steps
    t = np.arange(n) / max(1, n - 1)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * t))
    return np.concatenate([warm, cos])


def teacher_temperature_schedule(start: float, final: float, warmup_steps: int,
                                 total_steps: int) -> np.ndarray:
    """Linear warm-up of the teacher temperature from ``start`` to ``final``, then constant.

    A teacher too sharp too early can collapse the student onto one prototype; the paper warms
    it from 0.04 to its final value over the first 30 epochs."""
    warmup_steps = min(warmup_steps, total_steps)
    return np.concatenate([np.linspace(start, final, warmup_steps),
                           np.full(total_steps - warmup_steps, final)])


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
                 "teacher_batch_entropy": entropy(probs.mean(0)).item(),
                 "kl": kl / pairs, "center_norm": self.center.norm().item(),
                 "teacher_temp": self.teacher_temp(step)}
        self.update_center(teacher_out)
        return loss, stats

    @torch.no_grad()
    def update_center(self, teacher_out: list[torch.Tensor]) -> None:
        """c <- m c + (1 - m) mean of this batch's teacher scores (one process: no all-reduce)."""
        batch_center = torch.cat(teacher_out).mean(dim=0, keepdim=True)     # (1, K)
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
        out: list[torch.Tensor] = []
        i = 0
        while i < len(crops):
            j = i
            while j < len(crops) and crops[j].shape[-1] == crops[i].shape[-1]:
                j += 1
            scores = net["head"](backbone_features(net["backbone"], torch.cat(crops[i:j])))  # ((j-i) B, K)
            out += list(scores.chunk(j - i))
            i = j
        return out

    def student_scores(self, crops: list[torch.Tensor]) -> list[torch.Tensor]:
        return self._run(self.student, crops)

    @torch.no_grad()
    def teacher_scores(self, global_crops: list[torch.Tensor]) -> list[torch.Tensor]:
        return self._run(self.teacher, global_crops)

    def update_teacher(self, momentum: float) -> None:
        ema_update(self.teacher, self.student, momentum)

    @property
    def teacher_backbone(self) -> VisionTransformer:
        return self.teacher["backbone"]


# --- Training -----------------------------------------------------------------------------------------


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
    warmup_teacher_temp_epochs: float = 0  # linear warm-up of the teacher temperature
    student_temp: float = 0.1          # student temperature
    center_momentum: float = 0.9       # EMA rate of the teacher centre (1.0: it stays 0, no centering)
    freeze_last_layer_epochs: float = 1  # keep the prototypes fixed at first (helps escape collapse)
    clip_grad: float | None = 3.0      # max gradient norm per parameter tensor group (None: off)
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
                       cfg.warmup_teacher_temp, cfg.teacher_temp,
                       round(cfg.warmup_teacher_temp_epochs * steps_per_epoch), total))

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


@dataclass
class EvalSet:
    """What ``train_dino`` evaluates the teacher on: a labelled k-NN bank, and test scenes with masks."""

    bank_images: torch.Tensor    # (N, C, H, W)
    bank_labels: torch.Tensor    # (N,)
    test_images: torch.Tensor    # (M, C, H, W)
    test_labels: torch.Tensor    # (M,)
    test_masks: torch.Tensor     # (M, H, W) bool

    @classmethod
    def from_scenes(cls, train: Scenes, test: Scenes, n_bank: int | None = None, n_test: int | None = None):
        n_bank, n_test = n_bank or len(train), n_test or len(test)
        return cls(train.images[:n_bank], train.labels[:n_bank], test.images[:n_test], test.labels[:n_test],
                   test.masks[:n_test])


def evaluate_backbone(backbone: nn.Module, ev: EvalSet,
                      device: torch.device | str = "cpu") -> dict[str, float]:
    """k-NN accuracy (k=20, T=0.07) of the pooled features, and the attention Jaccard (best head, 60%)."""
    bank = extract_features(backbone, ev.bank_images, device=device)
    test = extract_features(backbone, ev.test_images, device=device)
    att = attention_jaccard(backbone, ev.test_images, ev.test_masks, device=device)
    return {"knn": knn_accuracy(bank, ev.bank_labels, test, ev.test_labels), "jaccard": att["jaccard"],
            "jaccard_mean_head": att["mean_head"]}


def param_groups(module: nn.Module) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only; not on biases, norms, tokens and position tables."""
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "decay": True}, {"params": no_decay, "decay": False}]


def same_steps(cfg: DINOConfig, from_images: int, to_images: int) -> DINOConfig:
    """``cfg`` for ``to_images`` training images with the schedules, step for step, of ``cfg`` on
    ``from_images``: every length given in epochs is scaled by ``from_images / to_images``.

    Notebook 05 reruns the first steps of the bundled recipe (60,000 scenes) on its 20,000.
    """
    k = from_images / to_images
    return replace(cfg, epochs=cfg.epochs * k, warmup_epochs=cfg.warmup_epochs * k,
                   warmup_teacher_temp_epochs=cfg.warmup_teacher_temp_epochs * k,
                   freeze_last_layer_epochs=cfg.freeze_last_layer_epochs * k)


def train_dino(dino: DINO, images: torch.Tensor, cfg: DINOConfig | None = None, *,
               eval_set: EvalSet | None = None, device: torch.device | str = "cpu", seed: int = 0,
               progress: bool = True, max_seconds: float | None = None,
               max_steps: int | None = None) -> DINOHistory:
    """Train ``dino`` on normalized images (N, C, H, W) with no labels; one process.

    Args:
        eval_set: if given, the teacher is evaluated every ``cfg.eval_every`` steps and at the end.
        max_seconds: stop early after this much training time (schedules stay as planned).
        max_steps: stop early after this many steps (schedules stay as planned: the first steps of
            a long run, as in the collapse experiments of notebook 05).
    """
    cfg = cfg or DINOConfig()
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    n = len(images)
    steps_per_epoch = max(1, n // cfg.batch_size)
    sched = DINOSchedules.from_config(cfg, steps_per_epoch)
    total = len(sched.lr)
    freeze_steps = round(cfg.freeze_last_layer_epochs * steps_per_epoch)
    multicrop = MultiCrop(cfg.crops)
    loss_fn = DINOLoss(cfg.out_dim, sched.teacher_temp, cfg.student_temp, cfg.center_momentum).to(device)
    dino.to(device).train()
    opt = torch.optim.AdamW(param_groups(dino.student), lr=cfg.lr)
    last_layer = list(dino.student["head"].last_layer.parameters())
    history, running = DINOHistory(), []
    train_time, seen, order = 0.0, 0, torch.empty(0, dtype=torch.long)
    bar = tqdm(range(total), desc="DINO", disable=not progress, leave=True)

    def run_eval(step: int) -> None:
        if eval_set is None:
            return
        metrics = evaluate_backbone(dino.teacher_backbone, eval_set, device)
        history.evals.append({"step": step, "epoch": step / steps_per_epoch, "seconds": round(train_time, 1),
                              **{k: round(v, 4) for k, v in metrics.items()}})
        bar.write(f"step {step}: teacher k-NN {metrics['knn']:.3f}  Jaccard {metrics['jaccard']:.3f}  "
                  f"({train_time / 60:.1f} min)")

    for step in bar:
        t0 = time.perf_counter()
        pos = (step % steps_per_epoch) * cfg.batch_size
        if pos == 0:
            order = torch.randperm(n, generator=gen)
        crops = [c.to(device) for c in multicrop(images[order[pos:pos + cfg.batch_size]], gen)]
        for group in opt.param_groups:
            group["lr"] = float(sched.lr[step])
            group["weight_decay"] = float(sched.weight_decay[step]) if group["decay"] else 0.0
        teacher_out = dino.teacher_scores(crops[:2])
        student_out = dino.student_scores(crops)
        loss, stats = loss_fn(student_out, teacher_out, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(dino.student.parameters(), cfg.clip_grad or math.inf).item()
        if step < freeze_steps:       # the paper freezes the prototypes during the first epoch
            for p in last_layer:
                p.grad = None
        opt.step()
        dino.update_teacher(float(sched.momentum[step]))
        train_time += time.perf_counter() - t0
        seen += len(crops[0])
        running.append({"loss": loss.item(), **stats, "grad_norm": grad_norm})
        if (step + 1) % cfg.log_every == 0 or step + 1 == total or step + 1 == max_steps:
            row = {k: sum(r[k] for r in running) / len(running) for k in running[0]}
            history.steps.append({"step": step + 1, "epoch": (step + 1) / steps_per_epoch,
                                  **{k: round(v, 5) for k, v in row.items()},
                                  "lr": float(sched.lr[step]), "momentum": float(sched.momentum[step]),
                                  "weight_decay": float(sched.weight_decay[step]),
                                  "seconds": round(train_time, 1)})
            bar.set_postfix(loss=f"{row['loss']:.3f}", H=f"{row['teacher_entropy']:.2f}",
                            Hb=f"{row['teacher_batch_entropy']:.2f}", ips=f"{seen / train_time:.0f}")
            running = []
        done = (max_seconds is not None and train_time >= max_seconds) or \
            (max_steps is not None and step + 1 >= max_steps)
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 != total and not done:
            run_eval(step + 1)
        if done:
            break
    history.seconds = train_time
    history.images_per_second = seen / max(train_time, 1e-9)
    run_eval(len(history.steps) and history.steps[-1]["step"])
    return history


# --- Published weights ---------------------------------------------------------------------------------

HUB_DINO = "vit_small_patch16_224.dino"   # the paper's ViT-S/16 trained with DINO on ImageNet, through timm


def hub_dino(name: str = HUB_DINO, *, file: str | Path | None = None) -> tuple[nn.Module, VisionTransformer]:
    """A published DINO ViT through timm, and the same network as our ``VisionTransformer``.

    ``from_timm`` checks that the two give the same features before returning. Online, timm downloads
    the weights; ``file`` loads them from a local file instead (how the tests check this path offline).

    Raises:
        weights.HubUnavailable: offline, or the weights could not be loaded.
    """
    reference = weights.hub_model(name, file=file)
    return reference, from_timm(reference).eval()


def photo_batch(model: nn.Module, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bundled photos prepared as ``model`` expects them (timm's eval transform: resize, centre crop,
    normalize): (B, 3, 224, 224) inputs, and the same crops in [0, 1] for display."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from .data import photo

    data_cfg = resolve_data_config({}, model=model)
    transform = create_transform(**data_cfg)
    x = torch.stack([transform(Image.fromarray(photo(n))) for n in names])                # (B, 3, S, S)
    mean = torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(data_cfg["std"]).view(1, 3, 1, 1)
    return x, (x * std + mean).clamp(0, 1)


# --- Recipes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenesRun:
    """One preset of a scenes recipe: how many scenes, and the training config."""

    train_scenes: int                      # scenes to train on (and the k-NN bank)
    test_scenes: int                       # test scenes (k-NN queries and Jaccard)
    train: DINOConfig | TrainConfig        # DINO or supervised training
    eval_bank: int | None = None           # k-NN bank size for evaluations during training (None: all)
    eval_test: int | None = 1000           # test scenes for evaluations during training
    extra_scenes: int = 0                  # more training scenes (split "train", seed + 1): trained on, not in the bank


@dataclass(frozen=True)
class ScenesRecipe:
    """A named run on ``vislearn.scenes``: DINO (no labels) or supervised (labels), same ViT."""

    name: str
    kind: str                              # "dino" or "supervised"
    model: dict[str, Any]                  # ViTConfig of the backbone (num_classes=0 for DINO)
    presets: dict[str, ScenesRun]
    scenes: SceneConfig = SceneConfig()
    description: str = ""


# The settings below were chosen by the tuning runs of notes/dino_runs.md (r17, r18): a small ViT
# (D=64, 4 blocks, 4 heads: ~255 scenes/s on one CPU thread), 256 prototypes, a fast-moving teacher
# (momentum 0.99 -> 1), and local crops large enough (25-60% of the scene) to contain part of the object.
SCENES_VIT = ViTConfig(img_size=64, patch_size=8, in_chans=3, num_classes=0, embed_dim=64, depth=4,
                       num_heads=4, mlp_ratio=2.0)
SCENES_CROPS = MultiCropConfig(global_scale=(0.5, 1.0), local_scale=(0.25, 0.6), n_local=2, hue=0.5,
                               grayscale=0.5)
# The full recipes train on 60,000 scenes: the 20,000 that are also the k-NN bank, and 40,000 more
# (seed + 1). Unlabelled images are what self-supervision can use, and DINO's k-NN stopped improving
# after ~28 epochs of 20,000 scenes (notes/dino_runs.md, r19); the supervised ViT gets the same scenes.
DINO_SCENES_FULL = DINOConfig(epochs=13, batch_size=32, lr=5e-4, warmup_epochs=1 / 3, momentum_teacher=0.99,
                              out_dim=256, hidden_dim=256, bottleneck_dim=64, freeze_last_layer_epochs=1 / 12,
                              crops=SCENES_CROPS, eval_every=1250)
# The supervised baseline gets at least DINO's compute: one DINO step (32 scenes, 2 + 2 crops, a
# teacher) costs about as much CPU time as one supervised step of 128 scenes (0.18 s on one thread),
# so 60 supervised epochs (28,125 steps) > 13 DINO epochs (24,375 steps). Both times are recorded in
# the manifest (train_seconds), and notebook 05 checks the inequality.
VIT_SCENES_FULL = TrainConfig(epochs=60, batch_size=128, lr=1e-3, weight_decay=0.05, warmup_epochs=1,
                              eval_every=5.0)
RECIPES: dict[str, ScenesRecipe] = {
    "dino_scenes": ScenesRecipe(
        name="dino_scenes", kind="dino", model=SCENES_VIT.to_dict(), scenes=DINO_SCENES,
        presets={"smoke": ScenesRun(512, 256, replace(DINO_SCENES_FULL, epochs=1, warmup_epochs=0.2,
                                                        log_every=2, eval_every=0)),
                 "classroom": ScenesRun(8000, 2000, replace(DINO_SCENES_FULL, epochs=5, eval_every=0)),
                 "full": ScenesRun(20000, 2000, DINO_SCENES_FULL, eval_bank=4000, extra_scenes=40000)},
        description="DINO (no labels) on 64 px scenes of white objects: ViT, 8 x 8 patches of 8 px, D=64, "
                    "4 blocks, 4 heads."),
    "vit_scenes": ScenesRecipe(
        name="vit_scenes", kind="supervised", model={**SCENES_VIT.to_dict(), "num_classes": 10},
        scenes=DINO_SCENES,
        presets={"smoke": ScenesRun(512, 256, replace(VIT_SCENES_FULL, epochs=1, warmup_epochs=0.2,
                                                        eval_every=1.0)),
                 "classroom": ScenesRun(8000, 2000, replace(VIT_SCENES_FULL, epochs=5, warmup_epochs=1,
                                                            eval_every=1.0)),
                 "full": ScenesRun(20000, 2000, VIT_SCENES_FULL, extra_scenes=40000)},
        description="The same ViT trained with labels on the same scenes, for at least DINO's compute."),
}


def final_metrics(backbone: nn.Module, train: Scenes, test: Scenes, device: torch.device) -> dict[str, float]:
    """k-NN (bank: all training scenes) and attention Jaccard (all test scenes) of a backbone."""
    m = evaluate_backbone(backbone, EvalSet.from_scenes(train, test), device)
    return {"knn_accuracy": round(m["knn"], 4), "jaccard": round(m["jaccard"], 4),
            "jaccard_mean_head": round(m["jaccard_mean_head"], 4)}


def run_recipe(name: str, preset: str = "auto", *, out: Path | str | None = None, device: str = "auto",
               seed: int = 0, progress: bool = True, overrides: dict[str, Any] | None = None):
    """Train recipe ``name`` at ``preset``; with ``out``, save the checkpoint, history and manifest entry.

    For DINO the teacher's backbone is saved (the paper evaluates the teacher), as arch "vit".
    ``overrides`` replaces fields of the preset's training config (for experiments).
    Returns (model, history, metrics).
    """
    check_choice("recipe", name, tuple(RECIPES))
    recipe = RECIPES[name]
    preset, dev = resolve_preset(preset), resolve_device(device)
    check_choice("preset", preset, tuple(recipe.presets))
    run = recipe.presets[preset]
    cfg = replace(run.train, **(overrides or {}))
    seed_everything(seed)
    train, test = train_test_scenes(run.train_scenes, run.test_scenes, seed, recipe.scenes)
    images, labels = train.images, train.labels                  # what the model trains on: (N, 3, S, S), (N,)
    if run.extra_scenes:
        extra = make_scenes(run.extra_scenes, "train", seed + 1, recipe.scenes)
        images, labels = torch.cat([images, extra.images]), torch.cat([labels, extra.labels])
    model = build("vit", recipe.model)
    if recipe.kind == "dino":
        student = VisionTransformer(replace(ViTConfig(**recipe.model), drop_path_rate=cfg.drop_path))
        dino = DINO(student, cfg.out_dim, hidden_dim=cfg.hidden_dim, bottleneck_dim=cfg.bottleneck_dim,
                    norm_last_layer=cfg.norm_last_layer)
        ev = EvalSet.from_scenes(train, test, run.eval_bank, run.eval_test)
        history = train_dino(dino, images, cfg, eval_set=ev, device=dev, seed=seed, progress=progress)
        model.load_state_dict(dino.teacher_backbone.state_dict())
        extra_metrics = {"images_per_second": round(history.images_per_second, 1)}
    else:
        history = fit(model, TensorDataset(images, labels), test.dataset(), cfg, device=dev, seed=seed,
                      progress=progress)
        extra_metrics = {"test_accuracy": round(evaluate(model, test.dataset(), dev)["accuracy"], 4)}
    model.eval()
    metrics = {**final_metrics(model, train, test, dev), **extra_metrics,
               "train_seconds": round(history.seconds, 1), "device": str(dev),
               "threads": torch.get_num_threads(), "params": sum(p.numel() for p in model.parameters()),
               "epochs": cfg.epochs, "train_scenes": len(images), "bank_scenes": len(train),
               "test_scenes": len(test)}
    if out is not None:
        out = Path(out)
        weights.save(model.cpu(), name, arch="vit", config=recipe.model, recipe=name, preset=preset,
                     metrics=metrics, root=out,
                     extra={"seed": seed, "train_config": _jsonable_config(cfg),
                            "scenes": recipe.scenes.to_dict(),
                            "command": f"python -m vislearn.dino {name} --preset {preset} --out {out}"})
        write_json_atomic(out / f"{name}.history.json", history.to_dict())
    return model, history, metrics


def _jsonable_config(cfg) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg), default=str))


def main(argv: list[str] | None = None) -> int:
    parser = recipe_parser("python -m vislearn.dino", __doc__.split("\n\n")[0], RECIPES)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training-config field, e.g. --set epochs=5 (JSON values)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return run_and_report(lambda: run_recipe(args.recipe, args.preset, out=args.out, device=args.device,
                                             seed=args.seed, overrides=overrides))


if __name__ == "__main__":
    sys.exit(main())
