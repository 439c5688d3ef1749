"""PAWS: predicting view assignments with support samples (Assran et al., 2021, "Semi-Supervised
Learning of Visual Features by Non-Parametrically Predicting View Assignments with Support Samples").

A few labelled images (the *support set*, e.g. 1% or 10% of the labels) act as the prototypes. An
unlabelled view is classified *non-parametrically*, by a soft nearest-neighbour vote of the
supports: p = softmax(z s^T / tau) y_s, its similarity to each support turned into weights over the
supports' labels. Two views of the same image should get the same prediction; the target of one is
the other's prediction, *sharpened* (p^(1/T), renormalised), so confident predictions become more
confident; and the average sharpened prediction over the batch is pushed towards uniform
(*me-max*, mean-entropy maximisation), which forbids the collapse to one class. The labels enter
only through the supports: no classifier head is ever trained.

Mapped to the reference implementation (facebookresearch/suncet, ``src/losses.py``, ``paws_train.py``):

- ``sharpen``: p^(1/T) / sum, T = 0.25.
- ``snn``: L2-normalise query and supports, softmax(query @ supports^T / tau) @ labels, tau = 0.1; the
  supports are gathered from every process under torchrun (with gradients), as the reference's
  ``AllGather``.
- ``labels_matrix``: the supports' (S, classes) label matrix, class by class, ``per_class`` images of
  each, with label smoothing (off value smoothing / classes), the reference's ``make_labels_matrix``.
- ``paws_loss``: anchors are the prediction-head outputs of all views; targets are the projection
  outputs of the two global views, *swapped* (view 1 is the target of view 2 and the reverse),
  sharpened, and for each small crop the mean of the two; values below 1e-4 zeroed; the cross-entropy
  mean over views; me-max = -H(mean over the batch of the sharpened anchor predictions), its batch
  mean all-reduced under torchrun.

Built in notebook 10, with SwAV (``swav``) and DeepCluster (``deepcluster``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import ParameterError, check_int
from ..train import distributed


def sharpen(p: torch.Tensor, T: float = 0.25) -> torch.Tensor:
    """p^(1/T), renormalised over the last axis: T < 1 makes a distribution more peaked."""
    if not T > 0:
        raise ParameterError(f"the sharpening temperature T must be > 0; got {T}")
    sharp = p ** (1.0 / T)
    return sharp / sharp.sum(dim=-1, keepdim=True)


def _gather(t: torch.Tensor) -> torch.Tensor:
    """All processes' rows of ``t``, concatenated in rank order, with gradients (itself in one process)."""
    if distributed.world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_gather
    return torch.cat(all_gather(t))


def _mean_over_processes(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the processes, with gradients (the reference's ``AllReduce``)."""
    if distributed.world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_reduce
    return all_reduce(t) / distributed.world_size()


def snn(query: torch.Tensor, supports: torch.Tensor, labels: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Soft nearest-neighbour classifier: (Q, d) queries, (S, d) supports, (S, C) labels -> (Q, C).

    Each query's cosine similarities to the supports, softmaxed at temperature ``tau``, weigh the
    supports' labels. Under torchrun the supports (and ``labels``, which must then hold every
    process's supports in rank order) come from every process.
    """
    if supports.shape[-1] != query.shape[-1]:
        raise ParameterError(f"queries {tuple(query.shape)} and supports {tuple(supports.shape)} differ in width")
    query, supports = F.normalize(query, dim=1), _gather(F.normalize(supports, dim=1))
    if len(supports) != len(labels):
        raise ParameterError(f"{len(supports)} supports but {len(labels)} label rows")
    return F.softmax(query @ supports.t() / tau, dim=1) @ labels


def labels_matrix(classes: int, per_class: int, smoothing: float = 0.1, processes: int = 1) -> torch.Tensor:
    """The supports' labels, (processes * classes * per_class, classes), class by class on each process.

    Row ``r * classes * per_class + c * per_class + j`` (process r, class c, image j) is label c with
    label smoothing: ``1 - smoothing + smoothing / classes`` there, ``smoothing / classes`` elsewhere.
    """
    check_int("classes", classes, minimum=1)
    check_int("per_class", per_class, minimum=1)
    if not 0 <= smoothing < 1:
        raise ParameterError(f"smoothing must be in [0, 1); got {smoothing}")
    off = smoothing / classes
    one = torch.full((classes * per_class, classes), off)
    one[torch.arange(classes * per_class), torch.arange(classes).repeat_interleave(per_class)] = 1 - smoothing + off
    return one.repeat(processes, 1)


def paws_loss(anchor_views: torch.Tensor, anchor_supports: torch.Tensor, target_views: torch.Tensor,
              target_supports: torch.Tensor, labels: torch.Tensor, *, multicrop: int, tau: float = 0.1,
              T: float = 0.25, me_max: bool = True) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """PAWS's loss and its me-max regulariser.

    Args:
        anchor_views: ((2 + multicrop) B, d) prediction-head outputs: global view 1, global view 2, then
            the small crops, B images each.
        anchor_supports: (S, d) prediction-head outputs of the supports.
        target_views: (2 B, d) projection outputs of the two global views (no gradient needed).
        target_supports: (S, d) projection outputs of the supports.
        labels: (S, C) the supports' labels (``labels_matrix``).
    Returns:
        (cross-entropy, me-max term, diagnostics); train on their sum.
    """
    n_views = 2 + multicrop
    if len(anchor_views) % n_views or len(target_views) * n_views != 2 * len(anchor_views):
        raise ParameterError(f"{len(anchor_views)} anchor views and {len(target_views)} target views do not "
                             f"make {n_views} views and 2 global ones of the same images")
    b = len(anchor_views) // n_views
    probs = snn(anchor_views, anchor_supports, labels, tau)                    # ((2 + m) B, C)
    with torch.no_grad():
        swapped = torch.cat([target_views[b:], target_views[:b]])             # view 2 teaches view 1 and back
        targets = sharpen(snn(swapped, target_supports, labels, tau), T)      # (2B, C)
        if multicrop > 0:
            small = 0.5 * (targets[:b] + targets[b:])                         # (B, C): both global views
            targets = torch.cat([targets, *[small] * multicrop])
        targets[targets < 1e-4] = 0.0                                         # numerical stability
    ce = torch.log(probs ** (-targets)).sum(dim=1).mean()                    # H(targets, probs); 0 log 0 = 0
    avg = _mean_over_processes(sharpen(probs, T).mean(dim=0)) if me_max else None
    rloss = (avg * avg.log()).sum() if me_max else probs.new_zeros(())    # -H(mean sharpened prediction)
    stats = {"target_max": float(targets.max(dim=1).values.mean()),
             "mean_entropy": -float(rloss.detach()) if me_max else float("nan")}
    return ce, rloss, stats


__all__ = ["labels_matrix", "paws_loss", "sharpen", "snn"]
