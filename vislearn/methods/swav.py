"""SwAV: swapping assignments between views (Caron et al., 2020, "Unsupervised Learning of Visual
Features by Contrasting Cluster Assignments"), from scratch: prototypes, Sinkhorn-Knopp, the swapped loss.

Each image's crops are mapped to L2-normalised embeddings z and scored against K learnable
*prototypes* c_k (unit vectors): s = z c^T. Instead of a teacher network (DINO) or k-means over the
dataset (DeepCluster), the *codes* q are computed online, per batch, by Sinkhorn-Knopp: the
assignment of the B embeddings to the K prototypes that agrees most with the scores while giving
every prototype the same share of the batch (equipartition). Without that constraint the trivial
solution, every image in one cluster, would minimise the loss. Then each crop predicts the code of
another crop of the same image ("swapped prediction"): -sum_k q_k^(t) log softmax(s^(v) / tau)_k.

Mapped to the reference implementation (facebookresearch/swav, ``main_swav.py``):

- ``sinkhorn``: ``distributed_sinkhorn``: Q = exp(s / eps)^T, normalised to total mass 1, then
  ``iterations`` rounds of rows (each prototype 1/K) then columns (each sample 1/B), finally scaled so
  every sample's code sums to 1. The sums are all-reduced under torchrun (B counts every process).
  eps = 0.05, 3 iterations.
- ``Prototypes``: ``nn.Linear(dim, K, bias=False)``, re-normalised to unit rows before every step
  (``normalize_``), as the reference does with ``torch.no_grad`` at the top of each iteration.
- ``swav_loss``: codes from the crops in ``crops_for_assign`` (the two global crops), each predicted by
  every other crop, at temperature 0.1; averaged as the reference does (per assigned crop, over the
  other crops).
- ``Queue``: the last embeddings of the assigned crops, scored by the current prototypes and put in
  front of the batch before Sinkhorn when batches are small (the reference's ``queue``); used once it
  is full.
- Freezing the prototypes for the first iterations (``freeze_prototypes_niters``) is the training
  loop's job: it drops their gradients.

Built in notebook 10, with DeepCluster (``deepcluster``) and PAWS (``paws``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ParameterError, check_int
from ..train import distributed


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over the torchrun processes (itself in one process)."""
    return distributed.mean(t) * distributed.world_size()


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Codes by Sinkhorn-Knopp: (B, K) scores -> (B, K) soft assignments, each row summing to 1.

    Q = exp(scores / epsilon), transposed to (K, B) as in the paper; scaled to total mass 1; then each
    iteration makes every prototype's row sum 1/K and every sample's column sum 1/B. At the end the
    columns are scaled to sum to 1 (a code per sample); the rows' sums approach B/K, equal shares of
    the batch, as the iterations grow (3 are enough in practice). Under torchrun the row sums and the
    total are all-reduced, and B is the global batch, as in the reference's ``distributed_sinkhorn``.
    """
    if scores.dim() != 2:
        raise ParameterError(f"scores must be (B, K); got shape {tuple(scores.shape)}")
    check_int("iterations", iterations, minimum=0)
    if not epsilon > 0:
        raise ParameterError(f"epsilon must be > 0; got {epsilon}")
    q = torch.exp(scores.double() / epsilon).t()                       # (K, B)
    k, b = q.shape
    b_all = b * distributed.world_size()
    q /= _all_sum(q.sum())
    for _ in range(iterations):
        q /= _all_sum(q.sum(dim=1, keepdim=True))                      # each prototype: total 1 ...
        q /= k                                                         # ... then 1/K
        q /= q.sum(dim=0, keepdim=True)                                # each sample: total 1 ...
        q /= b_all                                                     # ... then 1/B
    q *= b_all                                                         # each sample's code sums to 1
    return q.t().to(scores.dtype)                                      # (B, K)


class Prototypes(nn.Module):
    """K prototype vectors of dimension ``dim``: scores = z @ C^T for L2-normalised embeddings z."""

    def __init__(self, dim: int, k: int):
        super().__init__()
        self.linear = nn.Linear(dim, k, bias=False)

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight                                      # (K, dim)

    @torch.no_grad()
    def normalize_(self) -> None:
        """Rescale every prototype to unit length (before each training step, as the reference)."""
        self.linear.weight.copy_(F.normalize(self.linear.weight, dim=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z)                                          # (B, K)


class SwAVHead(nn.Module):
    """Projection MLP (Linear, BatchNorm, ReLU, Linear) -> L2 normalisation -> prototypes.

    ``forward`` returns (embedding, scores): the normalised (B, out_dim) embedding (what the queue
    stores) and its (B, K) prototype scores.
    """

    def __init__(self, in_dim: int, k: int, *, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__()
        self.projection = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(),
                                        nn.Linear(hidden_dim, out_dim))
        self.prototypes = Prototypes(out_dim, k)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = F.normalize(self.projection(features), dim=1)              # (B, out_dim), unit length
        return z, self.prototypes(z)


class Queue:
    """The last ``length`` embeddings of each assigned crop, newest first (the reference's ``queue``).

    ``scores(i, prototypes)`` gives the stored embeddings of crop ``i`` scored by the current
    prototypes, or None until the queue has filled once; ``push(i, z)`` shifts the batch's embeddings in.
    """

    def __init__(self, crops: int, length: int, dim: int):
        self.z = torch.zeros(crops, length, dim)
        self.filled = 0

    def scores(self, i: int, prototypes: Prototypes) -> torch.Tensor | None:
        if self.filled < self.z.shape[1]:
            return None
        return self.z[i].to(prototypes.weight) @ prototypes.weight.detach().t()   # (length, K)

    @torch.no_grad()
    def push(self, i: int, z: torch.Tensor) -> None:
        b = len(z)
        if b > self.z.shape[1]:
            raise ParameterError(f"a batch of {b} does not fit a queue of length {self.z.shape[1]}")
        self.z[i, b:] = self.z[i, :-b].clone()
        self.z[i, :b] = z.detach().to(self.z)
        if i == self.z.shape[0] - 1:
            self.filled = min(self.z.shape[1], self.filled + b)


def swav_loss(scores: Sequence[torch.Tensor], embeddings: Sequence[torch.Tensor] | None = None, *,
              prototypes: Prototypes | None = None, crops_for_assign: Sequence[int] = (0, 1),
              temperature: float = 0.1, epsilon: float = 0.05, iterations: int = 3,
              queue: Queue | None = None, equipartition: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """The swapped-prediction loss over multi-crop scores.

    Args:
        scores: one (B, K) tensor of prototype scores per crop, the global crops first.
        embeddings: the crops' (B, d) embeddings, needed only with a ``queue`` (with ``prototypes``).
        crops_for_assign: the crops whose codes are predicted (the two global crops).
        equipartition: False replaces Sinkhorn by a softmax of the scores at ``epsilon`` (each code sums
            to 1, nothing balances the prototypes): the ablation that collapses.
    Returns:
        the loss, and diagnostics: the entropy of the mean code (log K when the prototypes share the
        batch equally), the mean entropy of one sample's code (log K: it says nothing; 0: one
        prototype) and the number of prototypes that win at least one sample.
    """
    if len(scores) < 2:
        raise ParameterError(f"swav_loss needs at least 2 crops; got {len(scores)}")
    if queue is not None and (embeddings is None or prototypes is None):
        raise ParameterError("a queue needs the crops' embeddings and the prototypes")
    b = len(scores[0])
    total, codes = 0.0, []
    for n, c in enumerate(crops_for_assign):
        with torch.no_grad():
            out = scores[c].detach()
            stored = queue.scores(n, prototypes) if queue is not None else None
            if stored is not None:
                out = torch.cat([stored, out])                          # (L + B, K)
            if queue is not None:
                queue.push(n, embeddings[c])
            q = (sinkhorn(out, epsilon, iterations) if equipartition
                 else F.softmax(out / epsilon, dim=1))[-b:]                # (B, K): this batch's codes
        codes.append(q)
        others = [v for v in range(len(scores)) if v != c]
        sub = sum(-(q * F.log_softmax(scores[v] / temperature, dim=1)).sum(1).mean() for v in others)
        total = total + sub / len(others)
    loss = total / len(crops_for_assign)
    q = torch.cat(codes)                                                 # (2B, K)
    mean_code = q.mean(0)
    stats = {"code_entropy": float(-(mean_code * mean_code.clamp(min=1e-12).log()).sum()),
             "sample_code_entropy": float(-(q * q.clamp(min=1e-12).log()).sum(1).mean()),
             "prototypes_used": int(q.argmax(1).unique().numel())}
    return loss, stats


__all__ = ["Prototypes", "Queue", "SwAVHead", "sinkhorn", "swav_loss"]
