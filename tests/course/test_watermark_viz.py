import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vislearn.course import watermark_viz as wv  # noqa: E402


def test_cone_figure_has_two_panels_and_counts_inside():
    rng = np.random.default_rng(0)
    pts = rng.standard_normal((500, 3))
    fig = wv.cone_figure(math.cos(math.radians(30)), pts, np.array([0.0, 0.0, 1.0]))
    assert len(fig.axes) == 2
    assert "30°" in fig.axes[0].get_title()
    plt.close(fig)


def test_fpr_figure_lines_and_dots():
    c = np.linspace(0, 1, 11)
    fig = wv.fpr_figure(c, {3: 1 - c, 64: (1 - c) ** 5}, {3: 1 - c}, 1e-6, {64: 1.0})
    ax = fig.axes[0]
    assert len(ax.get_lines()) >= 4
    plt.close(fig)


def test_marking_figure_shows_history_and_images():
    h = {"loss": [3, 2, 1], "psnr": [40, 41, 42], "R": [-1, 0, 1]}
    x = torch.rand(3, 16, 16)
    fig = wv.marking_figure(h, x, x + 0.01, torch.rand(16, 16))
    assert np.allclose(fig.axes[2].get_lines()[0].get_ydata(), [-1, 0, 1])
    titles = [ax.get_title() for ax in fig.axes]
    assert "original" in titles and any(t.startswith("SSIM heat map") for t in titles)
    assert any(t.startswith("where the change goes") for t in titles)
    plt.close(fig)


def test_robustness_figure_one_panel_per_attack():
    rows = [{"attack": "none", "strength": 0, "value": 1.0}, {"attack": "jpeg", "strength": 50, "value": 0.5},
            {"attack": "blur", "strength": 3, "value": 0.8}]
    fig = wv.robustness_figure({"a": rows, "b": rows}, "TPR", "t")
    titles = [ax.get_title() for ax in fig.axes]
    assert "jpeg" in titles and "blur" in titles and "none" not in titles
    assert len(fig.axes[0].get_lines()) == 2
    plt.close(fig)


def test_attacked_figure():
    fig = wv.attacked_figure(torch.rand(3, 8, 8), torch.rand(3, 6, 6), "detected", "0101")
    assert fig.axes[1].get_title() == "detected"
    plt.close(fig)
