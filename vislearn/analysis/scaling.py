"""Time and memory against sequence length, measured and fitted: the cost tools of notebook 04 and later.

- ``measure_scaling`` times layers on sequences of growing length N (medians of interleaved
  repeats, by default on the CPU time of one thread, which load from other programs barely
  changes) and records the peak memory each forward pass allocates (``PeakMemory``: every tensor
  created during the call, counted exactly by a dispatch mode, so it works on any device).
- ``fit_power_law`` fits cost = c * N^slope on a log-log scale; ``crossover`` finds the N beyond
  which one layer stays more expensive; ``scaling_summary`` tabulates both.
- ``torch_threads`` runs a block with a given number of threads and restores the setting.

Theory for the layers of notebook 04 (XCiT, El-Nouby et al., 2021): self-attention costs O(N^2 D)
time and O(h N^2) memory, XCA O(N D d) and O(N D), with d = D / h the channels per head. The figure
is ``vislearn.course.viz.scaling_figure``.
"""

from __future__ import annotations

import math
import statistics
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..config import check_choice
from ..models.layers import Attention
from ..models.xcit import XCA


class PeakMemory(TorchDispatchMode):
    """Count the bytes of every tensor created inside the ``with`` block, and their peak.

    Each new storage an operation returns is added when it appears and subtracted when the last
    tensor using it is freed. Inputs, weights and views of them are not counted, and neither is
    scratch memory a kernel allocates and frees internally (a fused attention kernel's tiles):
    this is the memory of the activations a forward pass keeps alive, exactly and on any device.

    Use: ``with PeakMemory() as m: f(x)``, then ``m.peak`` (bytes).
    """

    def __init__(self):
        super().__init__()
        self.live: dict[tuple[int, int], list[int]] = {}   # storage -> [bytes, live tensors using it]
        self.current = 0
        self.peak = 0

    def _release(self, key: tuple[int, int]) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = (storage.data_ptr(), storage.nbytes())
            if key not in self.live:
                if storage.data_ptr() in inputs:   # a view or in-place result of an input: nothing new
                    continue
                self.live[key] = [storage.nbytes(), 0]
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            self.live[key][1] += 1
            weakref.finalize(t, self._release, key)
        return out


def peak_memory(fn: Callable[[], Any]) -> int:
    """Peak bytes of the tensors ``fn()`` creates (see ``PeakMemory``); its result is dropped."""
    with torch.no_grad(), PeakMemory() as meter:
        result = fn()
        del result
    return meter.peak


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (None: leave as is), then restore the previous setting."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def attention_layers(dim: int = 128, heads: int = 4, seed: int = 0) -> dict[str, Callable[[torch.Tensor], Any]]:
    """The layers compared by ``measure_scaling``, all of width ``dim`` with ``heads`` heads.

    - ``self-attention``: the explicit softmax(Q K^T / sqrt(d)) V, as in the papers (and timm
      without its fused kernel): the N x N weights are materialized.
    - ``self-attention (fused)``: the same layer through ``F.scaled_dot_product_attention``, whose
      memory-efficient kernels never store the N x N weights (but still compute them all).
    - ``XCA``: cross-covariance attention: d x d weights per head.
    """
    torch.manual_seed(seed)
    sa, xca = Attention(dim, heads).eval(), XCA(dim, heads).eval()
    return {
        "self-attention": lambda x: sa(x, return_attention=True)[0],
        "self-attention (fused)": sa,
        "XCA": xca,
    }


def _time_once(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, number: int, clock: Callable[[], float]) -> float:
    start = clock()
    for _ in range(number):
        fn(x)
    return (clock() - start) / number


CLOCKS = ("cpu", "wall")


@torch.no_grad()
def measure_scaling(tokens: Sequence[int], *, dim: int = 128, heads: int = 4, batch: int = 1, repeats: int = 5,
                    threads: int | None = 1, clock: str = "cpu", min_seconds: float = 0.002, memory: bool = True,
                    layers: Mapping[str, Callable[[torch.Tensor], Any]] | None = None,
                    seed: int = 0) -> list[dict[str, Any]]:
    """Forward time and peak memory of attention layers on sequences of ``tokens`` lengths.

    Every (length, layer) pair is warmed up once, then timed ``repeats`` times in interleaved
    rounds (each round visits every length and layer), so a burst of load from elsewhere on the
    machine hits all of them alike; the median is kept. A short call is repeated until one sample
    lasts ``min_seconds``. Memory is counted once (it is deterministic) by ``peak_memory``.

    Args:
        tokens: sequence lengths N.
        threads: torch threads while measuring; 1 (the default) makes every computation run on the
            calling thread, which the ``cpu`` clock needs.
        clock: ``cpu``: CPU time of the calling thread (``time.thread_time``): time spent waiting for
            a core that other programs hold is not counted, so a busy machine changes the result
            little; ``wall``: wall-clock time (``time.perf_counter``), for several threads or a GPU.
        layers: name -> callable on (batch, N, dim) tokens; default ``attention_layers(dim, heads)``.
    Returns:
        one row per (N, layer): ``tokens``, ``layer``, ``ms`` (median), ``ms_spread`` (max - min over
        repeats, ms) and ``peak_mib`` (MiB; None if ``memory`` is False).
    """
    check_choice("clock", clock, CLOCKS)
    if clock == "cpu" and threads != 1:
        raise ValueError(f"clock='cpu' times the calling thread only, so it needs threads=1 (got {threads}); "
                         "use clock='wall' with several threads")
    timer = time.thread_time if clock == "cpu" else time.perf_counter
    layers = dict(layers) if layers is not None else attention_layers(dim, heads, seed)
    gen = torch.Generator().manual_seed(seed)
    inputs = {n: torch.randn(batch, n, dim, generator=gen) for n in tokens}
    samples: dict[tuple[int, str], list[float]] = {(n, name): [] for n in tokens for name in layers}
    with torch_threads(threads):
        number = {}
        for n in tokens:                                    # warm up, and pick how many calls make a sample
            for name, fn in layers.items():
                fn(inputs[n])
                once = min(_time_once(fn, inputs[n], 1, timer) for _ in range(2))
                number[n, name] = max(1, math.ceil(min_seconds / max(once, 1e-7)))
        for _ in range(repeats):
            for n in tokens:
                for name, fn in layers.items():
                    samples[n, name].append(_time_once(fn, inputs[n], number[n, name], timer))
    rows = []
    for n in tokens:
        for name, fn in layers.items():
            s = samples[n, name]
            peak = peak_memory(lambda fn=fn, n=n: fn(inputs[n])) / 2**20 if memory else None
            rows.append({"tokens": n, "layer": name, "ms": 1e3 * statistics.median(s),
                         "ms_spread": 1e3 * (max(s) - min(s)), "peak_mib": peak})
    return rows


def series(rows: Sequence[Mapping[str, Any]], layer: str, key: str = "ms") -> tuple[np.ndarray, np.ndarray]:
    """(N, value) arrays of one layer from ``measure_scaling``'s rows, sorted by N."""
    pairs = sorted((r["tokens"], r[key]) for r in rows if r["layer"] == layer)
    if not pairs:
        raise ValueError(f"no rows for layer {layer!r}")
    n, y = zip(*pairs, strict=True)
    return np.asarray(n, dtype=float), np.asarray(y, dtype=float)


@dataclass(frozen=True)
class PowerLaw:
    """y = coef * n ** slope, fitted by least squares on log y against log n."""

    slope: float
    coef: float
    n_min: float   # the range of n the fit used
    n_max: float

    def __call__(self, n) -> np.ndarray:
        return self.coef * np.asarray(n, dtype=float) ** self.slope


def fit_power_law(n: Sequence[float], y: Sequence[float], min_n: float | None = None,
                  max_n: float | None = None) -> PowerLaw:
    """Fit y = c * n^slope on the points with min_n <= n <= max_n (a straight line on a log-log plot)."""
    n, y = np.asarray(n, dtype=float), np.asarray(y, dtype=float)
    keep = np.ones_like(n, dtype=bool)
    if min_n is not None:
        keep &= n >= min_n
    if max_n is not None:
        keep &= n <= max_n
    if keep.sum() < 2:
        raise ValueError(f"fit_power_law needs at least 2 points in [{min_n}, {max_n}], got {int(keep.sum())}")
    if (y[keep] <= 0).any():
        raise ValueError("fit_power_law needs positive values")
    slope, intercept = np.polyfit(np.log(n[keep]), np.log(y[keep]), 1)
    return PowerLaw(float(slope), float(np.exp(intercept)), float(n[keep].min()), float(n[keep].max()))


def crossover(n: Sequence[float], a: Sequence[float], b: Sequence[float]) -> float | None:
    """The length beyond which ``a`` stays above ``b`` (e.g. a = self-attention time, b = XCA time).

    Between the last measured point where a <= b and the next one, log(a / b) is interpolated
    linearly in log n. Returns None if a is never above b at the longest length; n[0] if a is
    above b everywhere (the crossover is at or below the measured range).
    """
    n, a, b = (np.asarray(v, dtype=float) for v in (n, a, b))
    order = np.argsort(n)
    n, gap = n[order], np.log(a[order]) - np.log(b[order])
    if gap[-1] <= 0:
        return None
    below = np.nonzero(gap <= 0)[0]
    if len(below) == 0:
        return float(n[0])
    i = below[-1]
    t = -gap[i] / (gap[i + 1] - gap[i])                       # where the interpolated gap is 0
    return float(np.exp(np.log(n[i]) + t * (np.log(n[i + 1]) - np.log(n[i]))))


def scaling_summary(rows: Sequence[Mapping[str, Any]], min_tokens: float, reference: str = "XCA") -> list[dict]:
    """Per layer: fitted time and memory slopes on N >= min_tokens, and the crossover with ``reference``."""
    out = []
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    n_ref, t_ref = series(rows, reference, "ms")
    for layer in layers:
        n, t = series(rows, layer, "ms")
        row = {"layer": layer, "time slope": round(fit_power_law(n, t, min_tokens).slope, 3)}
        if all(r["peak_mib"] is not None for r in rows if r["layer"] == layer):
            n_m, m = series(rows, layer, "peak_mib")
            row["memory slope"] = round(fit_power_law(n_m, m, min_tokens).slope, 3)
        if layer != reference:
            cross = crossover(n, t, t_ref)
            row[f"slower than {reference} from N ="] = None if cross is None else round(cross)
        out.append(row)
    return out
