"""Distillation through attention (Touvron et al., 2021, "Training data-efficient image transformers
& distillation through attention", DeiT), on Fashion-MNIST.

A convnet teacher (``vislearn.convnet.ConvNet``) is trained first; a small DeiT student
(``vislearn.deit``: tokens [CLS, DIST, patches]) then learns from the labels through its class token
and from the teacher through its distillation token. The objectives, each a ``DistillationLoss`` (see ``OBJECTIVES``):

    none      no teacher: both heads learn the labels           ½ CE(cls, y) + ½ CE(dist, y)
    soft      the paper's eq. (2), teacher through [DIST]       (1-λ) CE(cls, y) + λ τ² KL(teacher ‖ dist)
    soft_code eq. (2) scaled as DeiT's released code            (1-λ) CE(cls, y) + λ τ² KL(teacher ‖ dist) / classes
    hard      the paper's eq. (3), teacher through [DIST]       ½ CE(cls, y) + ½ CE(dist, argmax teacher)
    hard_cls  hard distillation without a distillation token    ½ CE(cls, y) + ½ CE(cls, argmax teacher)

``hard_cls`` is the paper's "DeiT⁻ hard distillation" row: a ViT with the class token only (same
size otherwise), so the label and the teacher pull on one head.

Recipes (``vislearn/recipes/nb02_deit.py``): ``convnet_fmnist`` (the teacher) and the students
``deit_fmnist_{none,soft,hard,hard_cls}``, all four at the same budget (epochs, batch, optimizer,
schedule, data). The students load the bundled teacher when their training starts. Matches
DeiT's reference ``DistillationLoss`` (facebookresearch/deit, ``losses.py``): ``soft_code`` is its
soft loss term for term, ``soft`` the paper's equation (see ``soft_distillation_loss``); the recipe
``deit_fmnist_soft_code`` trains the first. Built in ``notebooks/02_deit_distillation.ipynb``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_choice
from ..models.layers import eval_mode
from ..train import distributed, weights

TEACHER = "convnet_fmnist"             # the bundled teacher checkpoint the students learn from
TAU = 3.0                              # soft distillation temperature (the paper: τ = 3)
LAMBDA = 0.1                           # soft distillation weight of the teacher term (the paper: λ = 0.1)
OBJECTIVES = ("none", "soft", "soft_code", "hard", "hard_cls")
SCALINGS = ("paper", "code")           # soft distillation: the KL per image (eq. 2) or per logit (DeiT's code)
STUDENT_RECIPES = {  # objective -> the recipe of its student (vislearn/recipes/nb02_deit.py)
    "none": "deit_fmnist_none", "soft": "deit_fmnist_soft", "soft_code": "deit_fmnist_soft_code",
    "hard": "deit_fmnist_hard", "hard_cls": "deit_fmnist_hard_cls",
}


# --- The teacher -----------------------------------------------------------------------------------

def load_teacher(device: torch.device | str = "cpu") -> nn.Module:
    """The bundled teacher, frozen and in eval mode (BatchNorm uses its running statistics)."""
    teacher = weights.load(TEACHER, map_location=device).eval()
    teacher.requires_grad_(False)
    return teacher


# --- The objectives --------------------------------------------------------------------------------

def soft_distillation_loss(cls_logits: torch.Tensor, dist_logits: torch.Tensor, teacher_logits: torch.Tensor,
                           labels: torch.Tensor, *, tau: float = TAU, lam: float = LAMBDA,
                           scaling: str = "paper") -> torch.Tensor:
    """The paper's eq. (2): (1 - λ) CE(cls, y) + λ τ² KL(ψ(Z_t/τ) ‖ ψ(Z_s/τ)), ψ the softmax.

    The KL takes the teacher's softened distribution as the target, as in every distillation code
    (Hinton et al., 2015; DeiT's ``losses.py``). Two scalings of it:

    - ``scaling="paper"``: the KL of each image, averaged over images (``reduction="batchmean"``),
      the equation as printed;
    - ``scaling="code"``: DeiT's released code, ``kl_div(..., reduction="sum") * τ² / numel``, i.e.
      divided by images x classes: the teacher term is ``classes`` times weaker at the same τ, λ.
      This is what produced the paper's soft-distillation numbers: the authors first used PyTorch's
      legacy ``KLDivLoss`` mean, kept its scaling at release, and found ``batchmean`` "slightly
      lower/similar" (H. Touvron, facebookresearch/deit issue #61).

    Args:
        cls_logits, dist_logits, teacher_logits: (B, classes).
        labels: (B,) integer classes.
        scaling: ``paper`` or ``code``.
    """
    check_choice("scaling", scaling, SCALINGS)
    ce = F.cross_entropy(cls_logits, labels)
    log_student = F.log_softmax(dist_logits / tau, dim=-1)       # (B, classes)
    log_teacher = F.log_softmax(teacher_logits / tau, dim=-1)    # (B, classes)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)  # Σ p_t (log p_t - log p_s) / B
    if scaling == "code":
        kl = kl / dist_logits.shape[-1]                          # / (B x classes) in all
    return (1 - lam) * ce + lam * tau ** 2 * kl


def hard_distillation_loss(cls_logits: torch.Tensor, dist_logits: torch.Tensor, teacher_logits: torch.Tensor,
                           labels: torch.Tensor) -> torch.Tensor:
    """The paper's eq. (3): ½ CE(cls, y) + ½ CE(dist, y_t), with y_t = argmax of the teacher's logits.

    For ``hard_cls`` pass the same logits twice: one head then learns both targets.
    """
    teacher_labels = teacher_logits.argmax(dim=-1)               # (B,): the teacher's hard decision
    return 0.5 * F.cross_entropy(cls_logits, labels) + 0.5 * F.cross_entropy(dist_logits, teacher_labels)


def two_heads(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cls_logits, dist_logits) of a DeiT in training: timm's ``distilled_training`` switch makes its
    ``forward`` return both heads instead of their average (evaluation still averages)."""
    inner = distributed.unwrap(model)                           # the model inside DDP, under torchrun
    if not hasattr(inner, "set_distilled_training") or not inner.training:
        raise ValueError(f"two_heads needs a DistilledVisionTransformer in training mode, got a "
                         f"{type(inner).__name__} in {'training' if inner.training else 'eval'} mode")
    inner.set_distilled_training(True)
    return model(x)


class DistillationLoss:
    """``loss(model, x, y)`` for ``vislearn.train.fit``: one of ``OBJECTIVES``, with its teacher.

    Args:
        objective: ``none``, ``soft``, ``soft_code``, ``hard`` or ``hard_cls`` (see the module docstring).
        teacher: a frozen classifier in eval mode (not needed for ``none``).
        tau, lam: temperature and weight of ``soft``.
    """

    def __init__(self, objective: str, teacher: nn.Module | None = None, *, tau: float = TAU, lam: float = LAMBDA):
        self.objective = check_choice("objective", objective, OBJECTIVES)
        if objective != "none" and teacher is None:
            raise ValueError(f"objective={objective!r} needs a teacher")
        self.teacher, self.tau, self.lam = teacher, tau, lam

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher(x).float()                       # (B, classes)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.objective == "hard_cls":                         # a ViT: one head, two targets
            logits = model(x)
            return hard_distillation_loss(logits, logits, self.teacher_logits(x), y)
        cls, dist = two_heads(model, x)                          # (B, classes) each
        if self.objective == "none":
            return 0.5 * F.cross_entropy(cls, y) + 0.5 * F.cross_entropy(dist, y)
        if self.objective in ("soft", "soft_code"):
            return soft_distillation_loss(cls, dist, self.teacher_logits(x), y, tau=self.tau, lam=self.lam,
                                          scaling="code" if self.objective == "soft_code" else "paper")
        return hard_distillation_loss(cls, dist, self.teacher_logits(x), y)

    def __repr__(self) -> str:
        return f"DistillationLoss({self.objective!r}, tau={self.tau}, lam={self.lam})"


def make_loss(objective: str, device: torch.device | str = "cpu") -> DistillationLoss:
    """The objective of a student recipe, with the bundled teacher loaded onto ``device``."""
    check_choice("objective", objective, OBJECTIVES)
    return DistillationLoss(objective, None if objective == "none" else load_teacher(device))


# --- Looking inside --------------------------------------------------------------------------------

@torch.no_grad()
def predict_heads(model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
                  batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """The two heads of a DeiT separately, in eval mode: (cls_logits, dist_logits), each (N, classes).

    Their average is what ``model(images)`` returns at inference.
    """
    device = torch.device(device)
    cls, dist = [], []
    with eval_mode(model):
        for i in range(0, len(images), batch_size):
            feats = model.forward_features(images[i:i + batch_size].to(device))   # (b, 2 + N, D)
            cls.append(model.head(feats[:, 0]).float().cpu())
            dist.append(model.head_dist(feats[:, 1]).float().cpu())
    return torch.cat(cls), torch.cat(dist)


@torch.no_grad()
def token_similarity(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the [CLS] and [DIST] tokens through depth, averaged over images.

    Returns:
        (depth + 2,): the tokens entering block 1 (learned token + its position embedding), after
        each block, and after the final norm (what the two heads read).
    """
    with eval_mode(model):
        x = model.embed(images)                                  # (B, 2 + N, D)
        sims = [F.cosine_similarity(x[:, 0], x[:, 1], dim=-1).mean()]
        for block in model.blocks:
            x = block(x)
            sims.append(F.cosine_similarity(x[:, 0], x[:, 1], dim=-1).mean())
        x = model.norm(x)
        sims.append(F.cosine_similarity(x[:, 0], x[:, 1], dim=-1).mean())
    return torch.stack(sims)
