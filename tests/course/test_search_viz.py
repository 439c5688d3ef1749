"""The figures of notebook 07: what is drawn equals what was passed, panel by panel."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vislearn.analysis.scaling import fit_power_law  # noqa: E402
from vislearn.course import search_viz  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_scaling_figure_draws_measurements_and_fit():
    n = np.array([1000, 2000, 4000, 8000])
    seconds = 1e-6 * n
    fit = fit_power_law(n, seconds)
    fit2 = fit_power_law(n, 2 * seconds)
    fig = search_viz.scaling_figure([{"x": n, "seconds": seconds, "fit": fit, "xlabel": "n", "title": "a"},
                                     {"x": n, "seconds": 2 * seconds, "fit": fit2, "xlabel": "d"}])
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    measured, fitted = ax.lines[0], ax.lines[1]
    np.testing.assert_allclose(measured.get_xdata(), n)
    np.testing.assert_allclose(measured.get_ydata(), seconds * 1e3)
    np.testing.assert_allclose(fitted.get_ydata(), fitted.get_xdata() * 1e-3, rtol=1e-6)  # the fit is exact here
    assert "slope 1.00" in ax.get_legend().get_texts()[1].get_text()
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), 2 * seconds * 1e3)


def test_warp_select_trace_figure_draws_queues_and_thresholds():
    n, k, t = 96, 4, 2
    values = np.arange(n, dtype=float)[::-1].copy()
    entered = np.zeros(n, bool)
    entered[[0, 5, 40, 70]] = True
    thresholds = np.array([np.inf, 50.0, 20.0])
    kth = np.array([np.sort(values[:i + 1])[k - 1] if i + 1 >= k else np.inf for i in range(n)])
    fig = search_viz.warp_select_trace_figure(values, entered, thresholds, [0, 1], kth, k=k, t=t)
    trace, queues, cumulative = fig.axes[:3]
    rejected, inserted = trace.collections[0].get_offsets(), trace.collections[1].get_offsets()
    np.testing.assert_allclose(inserted[:, 0], [0, 5, 40, 70])
    np.testing.assert_allclose(inserted[:, 1], values[[0, 5, 40, 70]])
    assert len(rejected) == n - 4
    threshold_line = trace.lines[0]
    assert set(np.unique(threshold_line.get_ydata())) == {50.0, 20.0}  # +inf is not drawn
    assert "4 insertions, 2 merges" in trace.get_title()
    grid = queues.images[0].get_array()
    assert grid.shape == (32, 3) and grid.sum() == 4
    assert grid[0, 0] == 1 and grid[5, 0] == 1 and grid[8, 1] == 1 and grid[6, 2] == 1  # lane = i % 32, step = i // 32
    np.testing.assert_array_equal(cumulative.lines[0].get_ydata(), np.cumsum(entered))
    np.testing.assert_allclose(cumulative.lines[2].get_ydata(), np.cumsum(np.minimum(1.0, k / np.arange(1, n + 1))))
    # descending values: every one is a new minimum, so an exact queue takes them all
    np.testing.assert_array_equal(cumulative.lines[1].get_ydata(), np.arange(1, n + 1))


def test_insertions_figure_draws_each_order_and_the_prediction():
    n = [256, 1024]
    fig = search_viz.insertions_figure(n, {"random": [60.0, 100.0], "descending": [256.0, 1024.0]}, [50.0, 90.0], k=32)
    lines = fig.axes[0].lines
    np.testing.assert_allclose(lines[0].get_ydata(), [60.0, 100.0])
    np.testing.assert_allclose(lines[1].get_ydata(), [256.0, 1024.0])
    np.testing.assert_allclose(lines[2].get_ydata(), [50.0, 90.0])
    assert "random" in lines[0].get_label() and "descending" in lines[1].get_label()


def test_ivf_figure_cells_probes_and_histogram():
    rng = np.random.default_rng(0)
    points = rng.standard_normal((300, 2))
    centroids = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    sizes = np.array([10, 20, 30, 40, 50])
    fig = search_viz.ivf_figure(points, centroids, np.array([0.9, 0.9]), [3, 1], sizes, resolution=40)
    cells_ax, hist_ax = fig.axes
    cells = cells_ax.images[0].get_array()
    assert cells.shape == (40, 40) and set(np.unique(cells)) == {0, 1, 2, 3}
    np.testing.assert_allclose(cells_ax.collections[-3].get_offsets(), points)
    np.testing.assert_allclose(cells_ax.collections[-2].get_offsets(), centroids)
    np.testing.assert_allclose(cells_ax.collections[-1].get_offsets(), [[0.9, 0.9]])
    assert "nprobe = 2" in cells_ax.get_title()
    assert sum(p.get_height() for p in hist_ax.patches) == len(sizes)
    assert "sizes 10..50" in hist_ax.get_title()


def test_nearest_labels_are_voronoi_cells():
    centroids = np.array([[0.0, 0.0], [10.0, 0.0]])
    grid = np.array([[[1.0, 5.0], [6.0, -3.0]], [[4.9, 0.0], [5.1, 0.0]]])
    np.testing.assert_array_equal(search_viz.nearest_labels(grid, centroids), [[0, 1], [0, 1]])


def test_recall_curve_figure_draws_both_implementations():
    nprobe = [1, 2, 4]
    curves = {"ours": {"recall": [0.5, 0.7, 0.8], "qps": [900.0, 500.0, 250.0]},
              "faiss": {"recall": [0.51, 0.69, 0.8], "qps": [5000.0, 3000.0, 1500.0]}}
    fig = search_viz.recall_curve_figure(nprobe, curves)
    by_nprobe, by_qps = fig.axes
    for line, name in zip(by_nprobe.lines, curves, strict=True):
        assert line.get_label() == name
        np.testing.assert_allclose(line.get_xdata(), nprobe)
        np.testing.assert_allclose(line.get_ydata(), curves[name]["recall"])
    np.testing.assert_allclose(by_qps.lines[1].get_xdata(), curves["faiss"]["qps"])
    assert [t.get_text() for t in by_qps.texts] == ["1", "2", "4"]
    assert by_nprobe.get_ylabel() == "recall@10"


def test_neighbours_figure_one_row_per_neighbourhood():
    imgs = np.random.default_rng(0).random((3, 28, 28))
    rows = [("exact", imgs, ["a", "b", "c"]), ("approx", imgs[:2], ["a", "b"])]
    fig = search_viz.neighbours_figure(rows, query_images=[imgs[0], imgs[1]], title="t")
    axes = np.array(fig.axes).reshape(2, 4)
    np.testing.assert_allclose(axes[0, 0].images[0].get_array(), imgs[0])
    np.testing.assert_allclose(axes[1, 0].images[0].get_array(), imgs[1])
    assert axes[0, 0].get_ylabel() == "exact" and axes[0, 0].get_title() == "query"
    np.testing.assert_allclose(axes[0, 3].images[0].get_array(), imgs[2])
    assert [axes[0, j].get_title() for j in (1, 2, 3)] == ["a", "b", "c"]
    assert not axes[1, 3].axison and len(axes[1, 3].images) == 0  # a short row leaves its last cell empty
    assert fig._suptitle.get_text() == "t"


def test_scaling_figure_labels_ticks_within_one_decade():
    n = np.array([16, 32, 64, 128, 256])
    seconds = 0.02 + 1e-4 * n  # 20 to 46 ms: less than a decade
    fig = search_viz.scaling_figure([{"x": n, "seconds": seconds, "fit": fit_power_law(n, seconds), "xlabel": "d"}])
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    labels = [t.get_text() for t in ax.get_yticklabels() if lo <= t.get_position()[1] <= hi and t.get_text()]
    assert labels, "the y axis must carry at least one number"
