"""Judging features and attention without training anything: weighted k-NN, and attention as masks.

- **Weighted k-NN** (Wu et al., 2018; used by DINO's ``eval_knn.py``): L2-normalize the features,
  find the k most cosine-similar training images, and let each vote for its label with weight
  ``exp(similarity / T)``. No parameters are learned, so the accuracy says how well the feature
  space itself groups images by class. DINO uses k=20, T=0.07.
- **Attention as segmentation** (Caron et al., 2021, DINO, Figure 1 and Table 8): take the [CLS]
  token's attention over the patches in the last block, per head; keep the most attended patches
  until they hold 60% of the attention mass (DINO's ``visualize_attention.py``: sort, cumulative
  sum, threshold); upsample the patch mask to pixels; compare it with the ground-truth mask by
  the Jaccard index (intersection over union). The paper reports, per image, the best head, and
  averages over images.

Any model with ``forward_features`` / ``forward_head`` and ``get_last_selfattention`` works (our
ViT; timm's models after ``from_timm``). Built in notebook 05 (DINO).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.scenes import Scenes
from ..models.layers import eval_mode
from .attention import cls_attention, upsample_map


@torch.no_grad()
def extract_features(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                     batch_size: int = 256, device: torch.device | str = "cpu") -> torch.Tensor:
    """Pooled features (N, D) of images (N, C, H, W), in eval mode, batch by batch.

    A ViT gives its pooled token (the [CLS] token after the final norm, ``forward_head(...,
    pre_logits=True)``), not its logits; any other callable is applied as it is.
    """
    out = []
    with eval_mode(*([model] if isinstance(model, nn.Module) else [])):
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(device)
            if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
                f = model.forward_head(model.forward_features(x), pre_logits=True)   # (b, D)
            else:
                f = model(x)
            out.append(f.float().cpu())
    return torch.cat(out)


def knn_predict(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                k: int = 20, temperature: float = 0.07, num_classes: int | None = None,
                batch_size: int = 1024) -> torch.Tensor:
    """Weighted k-NN class scores, as in DINO's ``eval_knn.py``.

    Args:
        train_features: (N, D); normalized here, so any scale works.
        train_labels: (N,) integer classes.
        test_features: (M, D).
        k: neighbours that vote.
        temperature: a neighbour with cosine similarity s votes with weight exp(s / temperature).
    Returns:
        (M, classes) summed vote weights; ``argmax(1)`` is the prediction.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be a positive integer (neighbours that vote)")
    if train_features.ndim != 2 or test_features.ndim != 2 or train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"features must be (N, D) and (M, D) with the same D; got {tuple(train_features.shape)} "
                         f"and {tuple(test_features.shape)}")
    if train_labels.shape != (len(train_features),):
        raise ValueError(f"train_labels must be ({len(train_features)},), one per training feature; "
                         f"got {tuple(train_labels.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be positive")
    num_classes = num_classes or int(train_labels.max()) + 1
    k = min(k, len(train_features))
    bank = F.normalize(train_features.float(), dim=1)                   # (N, D)
    scores = []
    for i in range(0, len(test_features), batch_size):
        q = F.normalize(test_features[i:i + batch_size].float(), dim=1)  # (b, D)
        sim, idx = (q @ bank.T).topk(k, dim=1)                          # (b, k) each
        weight = (sim / temperature).exp()                               # (b, k)
        votes = F.one_hot(train_labels[idx], num_classes).float()        # (b, k, classes)
        scores.append((votes * weight[..., None]).sum(1))                # (b, classes)
    return torch.cat(scores)


def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, k: int = 20, temperature: float = 0.07) -> float:
    """Accuracy of the weighted k-NN classifier (k=20, T=0.07 as in DINO)."""
    if test_labels.shape != (len(test_features),):
        raise ValueError(f"test_labels must be ({len(test_features)},), one per test feature; "
                         f"got {tuple(test_labels.shape)}")
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    scores = knn_predict(train_features, train_labels, test_features, k, temperature, num_classes)
    return (scores.argmax(1) == test_labels).float().mean().item()


def mass_masks(attn: torch.Tensor, keep: float = 0.6) -> torch.Tensor:
    """Keep the most attended positions until they hold a fraction ``keep`` of the mass.

    DINO's ``visualize_attention.py``: sort ascending, cumulative sum of the normalized weights,
    keep a position where the cumulative sum exceeds ``1 - keep``. The kept set is the smallest
    set of top positions whose mass is at least ``keep``.

    Args:
        attn: (..., N) non-negative weights (normalized here over the last axis).
    Returns:
        (..., N) bool masks.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep={keep!r} must be a fraction of the attention mass in (0, 1]")
    val, idx = attn.sort(dim=-1)                              # ascending
    val = val / val.sum(dim=-1, keepdim=True)
    kept_sorted = val.cumsum(dim=-1) > (1 - keep)             # (..., N), in sorted order
    return torch.zeros_like(kept_sorted).scatter(-1, idx, kept_sorted)  # back to the original order


def jaccard(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Jaccard index |pred & target| / |pred | target| over the last two axes, (..., H, W) -> (...).

    Two empty masks agree perfectly: 1.0.
    """
    pred, target = pred.bool(), target.bool()
    inter = (pred & target).flatten(-2).sum(-1).float()
    union = (pred | target).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@torch.no_grad()
def cls_attention_maps(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """The last block's [CLS] attention over the patch grid, per head: (N, heads, g, g), on the CPU."""
    out = []
    with eval_mode(model):
        for i in range(0, len(images), batch_size):
            attn = model.get_last_selfattention(images[i:i + batch_size].to(device))   # (b, h, T, T)
            out.append(cls_attention(attn, getattr(model, "num_prefix_tokens", 1)).float().cpu())  # (b, h, g, g)
    return torch.cat(out)


def masks_from_maps(maps: torch.Tensor, size: int, keep: float = 0.6) -> torch.Tensor:
    """Attention maps (..., g, g) -> masks (..., size, size) bool that keep ``keep`` of the mass
    (``mass_masks`` on the patch grid, then nearest-neighbour upsampling to pixels)."""
    m = mass_masks(maps.flatten(-2), keep).reshape(maps.shape)                 # (..., g, g)
    return upsample_map(m, size).bool()                                       # (..., size, size)


def jaccard_from_maps(maps: torch.Tensor, masks: torch.Tensor, keep: float = 0.6) -> dict[str, Any]:
    """Jaccard of attention maps (N, h, g, g) with ground-truth masks (N, H, W), as in DINO.

    Returns:
        ``jaccard``: mean over images of the best head's Jaccard (the paper's number);
        ``per_image``: (N,) best head's Jaccard; ``per_head``: (N, heads); ``best_head``: (N,);
        ``mean_head``: the mean over images and heads (no choosing).
    """
    pred = masks_from_maps(maps, masks.shape[-1], keep)                # (N, h, H, W)
    per_head = jaccard(pred, masks[:, None])                           # (N, h)
    best, best_head = per_head.max(dim=1)
    return {"jaccard": best.mean().item(), "per_image": best, "per_head": per_head,
            "best_head": best_head, "mean_head": per_head.mean().item()}


def attention_masks(model: nn.Module, images: torch.Tensor, keep: float = 0.6, batch_size: int = 256,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Per-head masks from the last block's [CLS] attention: (N, heads, H, W) bool, at image size.

    Each head's attention over the patches keeps ``keep`` of its mass (``mass_masks``); the patch
    mask is upsampled to pixels by nearest neighbour.
    """
    return masks_from_maps(cls_attention_maps(model, images, batch_size, device), images.shape[-1], keep)


def attention_jaccard(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, keep: float = 0.6,
                      batch_size: int = 256, device: torch.device | str = "cpu") -> dict[str, Any]:
    """How well the [CLS] attention segments the objects: Jaccard with the ground truth, as in DINO.

    Args:
        images: (N, C, H, W).
        masks: (N, H, W) bool ground truth.
    Returns:
        see ``jaccard_from_maps``.
    """
    return jaccard_from_maps(cls_attention_maps(model, images, batch_size, device), masks, keep)


# --- A backbone on scenes: what DINO's training loop evaluates (notebook 05) ---------------------------


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


def backbone_evaluator(ev: EvalSet, device: torch.device | str = "cpu") -> Callable[[nn.Module], dict[str, float]]:
    """``evaluate(backbone)`` for ``train_dino``: ``evaluate_backbone`` on a fixed EvalSet."""
    return lambda backbone: evaluate_backbone(backbone, ev, device)
