"""vislearn.analysis.scaling: power-law fits, crossovers, peak memory, timing."""


import numpy as np
import pytest
import torch

from vislearn.analysis.scaling import (
    PeakMemory,
    crossover,
    fit_power_law,
    measure_scaling,
    peak_memory,
    scaling_summary,
    series,
)
from vislearn.config import ParameterError
from vislearn.models.xcit import XCA


@pytest.mark.parametrize("slope, coef", [(1.0, 0.003), (2.0, 1e-6), (1.5, 3.0), (0.5, 42.0)])
def test_fit_power_law_recovers_exact_slope(slope, coef):
    n = np.array([16, 64, 256, 1024, 4096])
    fit = fit_power_law(n, coef * n ** slope)
    assert fit.slope == pytest.approx(slope, abs=1e-9)
    assert fit.coef == pytest.approx(coef, rel=1e-9)
    np.testing.assert_allclose(fit(n), coef * n ** slope, rtol=1e-9)


def test_fit_power_law_uses_only_the_long_end():
    n = np.array([16, 32, 64, 512, 1024, 2048, 4096], dtype=float)
    y = np.where(n < 512, 5.0, 1e-3 * n ** 2)   # flat overheads on short sequences, quadratic on long ones
    fit = fit_power_law(n, y, min_n=512)
    assert fit.slope == pytest.approx(2.0, abs=1e-9) and (fit.n_min, fit.n_max) == (512, 4096)
    assert fit_power_law(n, y).slope < 1.9        # the whole range mixes both regimes
    with pytest.raises(ValueError, match="at least 2 points"):
        fit_power_law(n, y, min_n=4096)


def test_crossover_of_a_quadratic_and_a_linear_curve():
    n = 2.0 ** np.arange(3, 13)                    # 8 ... 4096
    quadratic, linear = 1e-3 * n ** 2, 0.1 * n     # equal at n = 100
    assert crossover(n, quadratic, linear) == pytest.approx(100.0, rel=1e-9)
    assert crossover(n, linear, quadratic) is None                      # linear never ends above
    assert crossover(n, 100 * quadratic, linear) == n[0]                 # above everywhere: at or below n[0]
    assert crossover(n, 10 * quadratic, linear) == pytest.approx(10.0, rel=1e-9)


def test_crossover_takes_the_last_crossing():
    n = np.array([10.0, 20.0, 40.0, 80.0])
    a = np.array([2.0, 0.5, 1.0, 4.0])             # above, below (noise), equal, above
    b = np.ones(4)
    assert crossover(n, a, b) == pytest.approx(40.0)


def test_measure_scaling_and_summary():
    rows = measure_scaling([16, 64, 256], dim=32, heads=2, repeats=2, min_seconds=0.0)
    assert len(rows) == 9 and {r["layer"] for r in rows} == {"self-attention", "self-attention (fused)", "XCA"}
    assert all(r["ms"] > 0 and r["peak_mib"] > 0 for r in rows)
    n, mib = series(rows, "self-attention", "peak_mib")
    assert list(n) == [16, 64, 256] and mib[-1] > 10 * mib[0]  # the N x N weights
    summary = scaling_summary(rows, min_tokens=64)
    assert [s["layer"] for s in summary] == ["self-attention", "self-attention (fused)", "XCA"]
    # memory is counted exactly: the explicit attention weights grow as N^2, XCA's activations as N
    sa, xca = summary[0], summary[2]
    assert sa["memory slope"] > 1.6 and 0.8 < xca["memory slope"] < 1.2
    with pytest.raises(ParameterError, match="clock"):
        measure_scaling([16], clock="gpu")
    with pytest.raises(ValueError, match="threads=1"):
        measure_scaling([16], threads=2, clock="cpu")


def test_peak_memory_counts_new_tensors_and_frees():
    x = torch.randn(1000)                          # made outside: not counted

    def f():
        a = torch.empty(1000, dtype=torch.float32)  # 4,000 bytes
        b = torch.empty(500, dtype=torch.float64)   # 4,000 bytes: both alive -> 8,000
        del a, b
        c = x * 2                                   # 4,000 bytes, after a and b were freed
        return c.view(10, 100)                      # a view: nothing new

    assert peak_memory(f) == 8000
    with PeakMemory() as meter:
        y = x[:10]                                  # a view of an input
        x.add_(1)                                   # in place
    assert meter.peak == 0 and y.shape == (10,)


def test_peak_memory_of_attention_weights():
    """The explicit path of our Attention stores (B, h, N, N) weights: at least h * N^2 * 4 bytes."""
    layer = XCA(32, 2).eval()
    x = torch.randn(1, 512, 32)
    xca_peak = peak_memory(lambda: layer(x))
    assert 512 * 32 * 4 <= xca_peak < 20 * 512 * 32 * 4   # a few copies of (N, D), no N x N
