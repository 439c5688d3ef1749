"""The figures of notebook 06: what is drawn equals what was passed, panel by panel."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vislearn.course import pq_viz  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_nearest_labels_are_voronoi_cells():
    centroids = np.array([[0.0, 0.0], [10.0, 0.0]])
    grid = np.array([[[1.0, 5.0], [6.0, -3.0]], [[4.9, 0.0], [5.1, 0.0]]])  # (2, 2, 2)
    np.testing.assert_array_equal(pq_viz.nearest_labels(grid, centroids), [[0, 1], [0, 1]])


def test_kmeans_iterations_figure_draws_every_snapshot():
    rng = np.random.default_rng(0)
    points = rng.standard_normal((200, 2))
    snapshots = [(0, points[:5]), (1, points[5:10] * 0.5), (4, points[10:15] * 0.1)]
    objective = np.array([30.0, 20.0, 15.0, 14.0, 13.5])
    fig = pq_viz.kmeans_iterations_figure(points, snapshots, objective=objective, resolution=50)
    assert len(fig.axes) == len(snapshots) + 1
    for ax, (it, centroids) in zip(fig.axes, snapshots, strict=False):
        cells = ax.images[0].get_array()
        assert cells.shape == (50, 50) and set(np.unique(cells)) <= set(range(5))
        drawn = ax.collections[-1].get_offsets()  # the centroids are the last scatter
        np.testing.assert_allclose(drawn, centroids)
        np.testing.assert_allclose(ax.collections[0].get_offsets(), points)
        assert ("iteration" in ax.get_title()) == (it > 0)
        assert len(ax.texts) == (0 if it == 0 else 5)  # one arrow per centroid from the previous panel
    np.testing.assert_allclose(fig.axes[-1].lines[0].get_ydata(), objective)


def test_mosaic_layout():
    tiles = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    out = pq_viz.mosaic(tiles, cols=2)
    assert out.shape == (3 * 3 - 1, 2 * 4 - 1)
    np.testing.assert_array_equal(out[0:2, 0:3], tiles[0])
    np.testing.assert_array_equal(out[0:2, 4:7], tiles[1])
    np.testing.assert_array_equal(out[6:8, 0:3], tiles[4])
    assert np.isnan(out[2]).all() and np.isnan(out[6:8, 4:7]).all()  # gap row; the empty sixth tile


def test_codebook_tiles_figure_places_every_block():
    rng = np.random.default_rng(1)
    centroids = rng.random((6, 16, 4 * 5))  # M = 6 blocks (2 x 3) of 4x5 px, 16 centroids each
    fig = pq_viz.codebook_tiles_figure(centroids, (2, 3), (4, 5), sort=False, title="t")
    assert len(fig.axes) == 6 and fig._suptitle.get_text() == "t"
    for m, ax in enumerate(fig.axes):
        shown = np.asarray(ax.images[0].get_array().filled(np.nan))
        assert shown.shape == (4 * 5 - 1, 4 * 6 - 1)  # 4 x 4 tiles with 1 px gaps
        np.testing.assert_allclose(shown[0:4, 0:5], centroids[m, 0].reshape(4, 5))
        np.testing.assert_allclose(shown[0:4, 6:11], centroids[m, 1].reshape(4, 5))
    fig = pq_viz.codebook_tiles_figure(centroids, (2, 3), (4, 5), sort=True)
    first = np.asarray(fig.axes[0].images[0].get_array().filled(np.nan))[0:4, 0:5]
    assert first.mean() == pytest.approx(centroids[0].mean(1).min())  # the darkest tile first
    fig = pq_viz.codebook_tiles_figure(centroids, (2, 3), (4, 5), sort=False, show=4)   # tiles 0, 5, 10, 15
    shown = np.asarray(fig.axes[1].images[0].get_array().filled(np.nan))
    assert shown.shape == (2 * 5 - 1, 2 * 6 - 1)
    np.testing.assert_allclose(shown[5:9, 6:11], centroids[1, 15].reshape(4, 5))
    np.testing.assert_allclose(shown[0:4, 6:11], centroids[1, 5].reshape(4, 5))
    with pytest.raises(ValueError, match="do not match"):
        pq_viz.codebook_tiles_figure(centroids, (2, 2), (4, 5))


def test_reconstructions_figure_rows_and_columns():
    rng = np.random.default_rng(2)
    rows = {"original": rng.random((4, 28, 28)), "8 B": rng.random((4, 28, 28)), "4 B": rng.random((4, 28, 28))}
    fig = pq_viz.reconstructions_figure(rows, col_titles=list("abcd"))
    assert len(fig.axes) == 3 * 4
    for r, (label, images) in enumerate(rows.items()):
        assert fig.axes[4 * r].get_ylabel() == label
        for j in range(4):
            ax = fig.axes[4 * r + j]
            np.testing.assert_array_equal(ax.images[0].get_array(), images[j])
            assert ax.images[0].get_clim() == (0.0, 1.0)  # one fixed scale for every reconstruction
    assert [fig.axes[j].get_title() for j in range(4)] == list("abcd") and fig.axes[4].get_title() == ""
    with pytest.raises(ValueError, match="has 3 images"):
        pq_viz.reconstructions_figure({"a": rng.random((4, 8, 8)), "b": rng.random((3, 8, 8))})


def test_distance_table_figure_marks_the_selected_entries():
    rng = np.random.default_rng(3)
    table = rng.random((8, 256)) * 10 + 0.1
    own, other = table.argmin(1), rng.integers(0, 256, 8)
    fig = pq_viz.distance_table_figure(table, {"own": own, "other": other})
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), table)
    for collection, codes in zip(ax.collections, (own, other), strict=True):
        np.testing.assert_array_equal(collection.get_offsets(), np.stack([codes, np.arange(8)], 1))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == f"own: sum = {table[np.arange(8), own].sum():.2f}"
    assert labels[1] == f"other: sum = {table[np.arange(8), other].sum():.2f}"


def test_distance_estimates_figure():
    true = np.linspace(1, 10, 30)
    estimates = {"ADC": true * 0.9, "SDC": true * 0.8}
    fig = pq_viz.distance_estimates_figure(true, estimates)
    assert len(fig.axes) == 2
    for ax, (name, est) in zip(fig.axes, estimates.items(), strict=True):
        np.testing.assert_allclose(ax.collections[0].get_offsets(), np.stack([true, est], 1))
        assert ax.get_title().startswith(name)
    assert "10.0%" in fig.axes[0].get_title() and "20.0%" in fig.axes[1].get_title()


def test_recall_curve_figure_draws_one_line_per_rank_and_implementation():
    recalls = {"ours": {1: [0.1, 0.3, 0.6], 10: [0.4, 0.8, 0.95], 100: [0.9, 1.0, 1.0]},
               "faiss": {1: [0.11, 0.3, 0.6], 10: [0.4, 0.81, 0.95], 100: [0.9, 1.0, 1.0]}}
    fig = pq_viz.recall_curve_figure([4, 8, 16], recalls)
    ax = fig.axes[0]
    assert len(ax.lines) == 6
    for line, (impl, r) in zip(ax.lines, [(i, r) for i in recalls for r in (1, 10, 100)], strict=True):
        assert line.get_label() == f"{impl}, R@{r}"
        np.testing.assert_allclose(line.get_xdata(), [4, 8, 16])
        np.testing.assert_allclose(line.get_ydata(), recalls[impl][r])
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["4", "8", "16"]


def test_mse_figure_against_M_and_bytes():
    mse = {(4, 4): 20.0, (8, 4): 16.0, (4, 8): 10.0, (8, 8): 7.0}
    fig = pq_viz.mse_figure(mse)
    left, right = fig.axes
    assert len(left.lines) == len(right.lines) == 2
    np.testing.assert_allclose(left.lines[0].get_xdata(), [4, 8])
    np.testing.assert_allclose(left.lines[0].get_ydata(), [20.0, 16.0])
    np.testing.assert_allclose(right.lines[1].get_xdata(), [4, 8])  # nbits = 8: M bytes
    np.testing.assert_allclose(right.lines[1].get_ydata(), [10.0, 7.0])
    np.testing.assert_allclose(right.lines[0].get_xdata(), [2, 4])  # nbits = 4: M / 2 bytes


def test_decoder_figure_bars_equal_the_numbers():
    recall = {"R@1": {"ADC": 0.40, "re-rank": 0.42}, "R@10": {"ADC": 0.75, "re-rank": 0.77}}
    fig = pq_viz.decoder_figure([5.0, 4.5, 4.4], {"lookup": 6.0, "decoder": 5.1}, recall, start_loss=5.5)
    loss, mse_ax, recall_ax = fig.axes
    np.testing.assert_allclose(loss.lines[0].get_ydata(), [5.0, 4.5, 4.4])
    assert loss.lines[1].get_ydata()[0] == 5.5
    assert [b.get_height() for b in mse_ax.patches] == [6.0, 5.1]
    assert [t.get_text() for t in mse_ax.texts] == ["6.000", "5.100"] and "-15.0%" in mse_ax.get_title()
    assert [b.get_height() for b in recall_ax.patches] == [0.40, 0.75, 0.42, 0.77]   # method by method
    assert [t.get_text() for t in recall_ax.get_xticklabels()] == ["R@1", "R@10"]
    assert [t.get_text() for t in recall_ax.get_legend().get_texts()] == ["ADC", "re-rank"]


def test_subspace_figure_grouped_bars():
    variance = {"PQ": [0.7, 0.2, 0.1], "OPQ": [0.34, 0.33, 0.33]}
    error = {"PQ": [3.0, 1.0, 0.5], "OPQ": [1.5, 1.4, 1.5]}
    fig = pq_viz.subspace_figure(variance, error)
    for ax, data in zip(fig.axes, (variance, error), strict=True):
        heights = [b.get_height() for b in ax.patches]
        np.testing.assert_allclose(heights, data["PQ"] + data["OPQ"])


def test_neighbours_figure_with_the_true_neighbour():
    rng = np.random.default_rng(4)
    query, recon, truth = (rng.random((28, 28)) for _ in range(3))
    neighbours = rng.random((3, 28, 28))
    fig = pq_viz.neighbours_figure(query, recon, neighbours, ["a", "b", "c"], extra=(truth, "true"))
    assert len(fig.axes) == 2 + 3 + 1
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), query)
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), recon)
    for j in range(3):
        np.testing.assert_array_equal(fig.axes[2 + j].images[0].get_array(), neighbours[j])
        assert fig.axes[2 + j].get_title() == "abc"[j]
    np.testing.assert_array_equal(fig.axes[-1].images[0].get_array(), truth)
    assert fig.axes[-1].get_title() == "true"
    assert len(pq_viz.neighbours_figure(query, recon, neighbours, ["a", "b", "c"]).axes) == 5
