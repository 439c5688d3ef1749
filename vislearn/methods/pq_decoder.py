"""The decoder perspective on compact codes: a small network that reconstructs vectors from PQ codes.

Amara, Douze, Sablayrolles & Jégou, "Nearest neighbor search with compact codes: A decoder
perspective", ICMR 2022. A PQ code is usually decoded by looking up one centroid per sub-quantizer and
concatenating them; but the code carries more information than that lookup uses, since the
sub-vectors are not independent. A decoder trained to minimise the reconstruction error (MSE) on
training vectors recovers part of it. Search stays the same: ADC over the codes gives a shortlist,
and the shortlist is re-ranked with the decoded vectors.

Our decoder: ``output = lookup(code) + mlp(concat_m E[m, code_m])``. Each sub-quantizer has an
embedding table ``E[m]`` (``ksub`` rows of ``dsub`` numbers, one ``nn.Embedding`` over all ``M * ksub``
code words) initialised with its centroids, so the concatenated embedding starts as PQ's reconstruction
and is then learned; the MLP's last layer starts at zero, so before training the decoder *is* the
centroid lookup and training starts from PQ's own reconstruction. (Summed random embeddings of width
``hidden``, the other textbook choice, over-fit and re-ranked worse in our measurements on Fashion-MNIST.)
Notebook 06_product_quantization builds it on top of ``pq.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ParameterError, check_int
from ..models.layers import eval_mode
from .kmeans import as_vectors
from .pq import ProductQuantizer, as_codes


@dataclass
class DecoderConfig:
    """Size and training schedule of a ``PQDecoder``."""

    hidden: int = 256  # width of the MLP
    depth: int = 3  # linear layers of the MLP
    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3  # AdamW, with a cosine decay to 0 over all steps
    weight_decay: float = 0.0
    seed: int = 0


class PQDecoder(nn.Module):
    """Maps (n, M) PQ codes to (n, d) reconstructions: centroid lookup plus a learned correction.

    Args:
        centroids: (M, ksub, dsub) PQ centroids (``ProductQuantizer.centroids``).
        hidden: MLP width.
        depth: number of linear layers in the MLP (>= 1).
    """

    def __init__(self, centroids: np.ndarray, hidden: int = 256, depth: int = 3):
        super().__init__()
        M, ksub, dsub = centroids.shape
        hidden, depth = check_int("hidden", hidden, minimum=1), check_int("depth", depth, minimum=1)
        self.M, self.ksub, self.d = M, ksub, M * dsub
        table = torch.as_tensor(centroids, dtype=torch.float32).reshape(M * ksub, dsub)  # (M * ksub, dsub)
        self.register_buffer("table", table.clone())  # the fixed lookup
        self.register_buffer("offsets", torch.arange(M) * ksub)  # (M,) first code word of each sub-quantizer
        self.embed = nn.Embedding(M * ksub, dsub)  # learned, starts as the centroids
        self.embed.weight.data.copy_(table)
        widths = [self.d] + [hidden] * (depth - 1) + [self.d]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < depth - 1:
                layers.append(nn.GELU())
        nn.init.zeros_(layers[-1].weight)  # the correction starts at 0: the decoder starts as the lookup
        nn.init.zeros_(layers[-1].bias)
        self.mlp = nn.Sequential(*layers)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """PQ's own decoding. Args: codes (n, M) int. Returns (n, d)."""
        words = codes.long() + self.offsets  # (n, M) rows of the flat table
        return F.embedding(words, self.table).reshape(len(codes), self.d)  # (n, M, dsub) -> (n, d)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Args: codes (n, M) int. Returns (n, d) reconstructions."""
        words = codes.long() + self.offsets  # (n, M)
        lookup = F.embedding(words, self.table).reshape(len(codes), self.d)  # (n, M, dsub) -> (n, d)
        return lookup + self.mlp(self.embed(words).reshape(len(codes), self.d))  # (n, d)

    @torch.no_grad()
    def decode(self, codes, batch_size: int = 8192) -> np.ndarray:
        """Decode (n, M) codes in batches, without gradients. Returns (n, d) float32."""
        codes = torch.from_numpy(as_codes(codes, self.M, self.ksub).astype(np.int64))
        with eval_mode(self):
            out = torch.cat([self(codes[i:i + batch_size]) for i in range(0, len(codes), batch_size)]) \
                if len(codes) else torch.empty(0, self.d)
        return out.numpy()


def reconstruction_mse(reconstructions, x) -> float:
    """Mean over vectors of the squared L2 reconstruction error, ``mean_i |x_i - x_hat_i|^2``."""
    diff = np.asarray(reconstructions, dtype=np.float64) - np.asarray(x, dtype=np.float64)
    return float((diff ** 2).sum(1).mean())


def train_decoder(pq: ProductQuantizer, x, config: DecoderConfig | None = None,
                  codes=None) -> tuple[PQDecoder, list[float]]:
    """Train a ``PQDecoder`` to reconstruct ``x`` from its PQ codes (MSE, AdamW, cosine schedule).

    Args:
        pq: a trained product quantizer.
        x: (n, d) training vectors (not the database you will evaluate on, or the decoder memorises it).
        config: sizes and schedule; ``DecoderConfig()`` by default.
        codes: (n, M) codes of ``x``, if already computed.

    Returns:
        the decoder (in eval mode) and the mean training loss of every epoch.
    """
    config = config or DecoderConfig()
    if not pq.is_trained:
        raise ParameterError("train_decoder needs a trained ProductQuantizer: call pq.train(x) first")
    x = as_vectors("x", x, pq.d)
    codes = pq.encode(x) if codes is None else as_codes(codes, pq.M, pq.ksub)
    if len(codes) != len(x):
        raise ParameterError(f"{len(codes)} codes for {len(x)} training vectors")
    epochs = check_int("epochs", config.epochs, minimum=1)
    batch_size = check_int("batch_size", config.batch_size, minimum=1)
    generator = torch.Generator().manual_seed(check_int("seed", config.seed, minimum=0))
    torch.manual_seed(config.seed)  # the initial weights
    decoder = PQDecoder(pq.centroids, config.hidden, config.depth)
    xt, ct = torch.from_numpy(x), torch.from_numpy(codes.astype(np.int64))
    steps = epochs * -(-len(x) // batch_size)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    history = []
    decoder.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for i in range(0, len(x), batch_size):
            batch = order[i:i + batch_size]
            loss = ((decoder(ct[batch]) - xt[batch]) ** 2).sum(1).mean()  # squared L2 per vector
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        history.append(total / len(x))
    return decoder.eval(), history


def rerank(queries, shortlist, codes, decoder: PQDecoder, k: int,
           batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Re-order each query's shortlist by its exact distance to the decoded database vectors.

    Args:
        queries: (nq, d).
        shortlist: (nq, r) candidate ids, e.g. the ADC top-r.
        codes: (n, M) database codes.
        decoder: a ``PQDecoder`` (or anything with ``decode(codes) -> (n, d)``).
        k: results kept per query, k <= r.
        batch_size: queries re-ranked at once.

    Returns:
        squared distances (nq, k) float32, increasing, and ids (nq, k) int64.
    """
    q = as_vectors("queries", queries, decoder.d)
    shortlist = np.asarray(shortlist, dtype=np.int64)
    k = check_int("k", k, minimum=1)
    if shortlist.ndim != 2 or len(shortlist) != len(q) or k > shortlist.shape[1]:
        raise ParameterError(f"shortlist must be (nq={len(q)}, r >= k={k}) ids; got shape {shortlist.shape}")
    codes = np.asarray(codes)
    distances = np.empty((len(q), k), dtype=np.float32)
    ids = np.empty((len(q), k), dtype=np.int64)
    for i in range(0, len(q), batch_size):
        cand = shortlist[i:i + batch_size]  # (b, r)
        decoded = decoder.decode(codes[cand.ravel()]).reshape(*cand.shape, -1)  # (b, r, d)
        dis = ((decoded - q[i:i + batch_size, None, :]) ** 2).sum(-1)  # (b, r)
        order = np.argsort(dis, axis=1, kind="stable")[:, :k]  # (b, k)
        distances[i:i + batch_size] = np.take_along_axis(dis, order, 1)
        ids[i:i + batch_size] = np.take_along_axis(cand, order, 1)
    return distances, ids
