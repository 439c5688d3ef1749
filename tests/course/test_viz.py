import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from vislearn.course import viz  # noqa: E402


def test_explorer_static_fallback(monkeypatch, capsys):
    calls = []

    def draw(image, head):
        calls.append((image, head))
        fig, ax = plt.subplots()
        return fig

    monkeypatch.setenv(viz.STATIC_ENV, "1")
    assert not viz.is_interactive()
    figs = viz.explorer(draw, {"image": [3, 4], "head": range(2)})
    assert calls == [(3, 0)] and len(figs) == 1 and "static view" in capsys.readouterr().out
    figs = viz.explorer(draw, {"image": [3, 4], "head": range(2)}, static=[{"image": 4, "head": 1}])
    assert calls[-1] == (4, 1)


def test_explorer_widget_when_interactive():
    import ipywidgets

    w = viz.explorer(lambda image, head: plt.figure(), {"image": ["a", "b"], "head": range(3)}, interactive=True)
    assert isinstance(w, ipywidgets.interactive)
    kinds = {c.description: type(c).__name__ for c in w.children[:-1]}
    assert kinds == {"image": "Dropdown", "head": "IntSlider"}
    assert {c.description: c.value for c in w.children[:-1]} == {"image": "a", "head": 0}
    # with a static view, the live widget opens on its first case: the one the fallback shows
    w = viz.explorer(lambda image, head: plt.figure(), {"image": ["a", "b"], "head": range(3)}, interactive=True,
                     static=[{"image": "b", "head": 2}, {"image": "a", "head": 1}])
    assert {c.description: c.value for c in w.children[:-1]} == {"image": "b", "head": 2}


def test_figures_have_the_right_panels():
    maps = torch.rand(2, 3, 7, 7)
    fig = viz.attention_heads_figure(torch.rand(2, 1, 28, 28), maps, ["block 1", "block 6"])
    assert len(fig.axes) == 2 * 4
    fig = viz.position_similarity_figure(torch.rand(4, 4, 4, 4))
    assert len(fig.axes) == 16
    fig = viz.attention_distance_figure(torch.rand(6, 4), uniform=3.0)
    assert len(fig.axes[0].collections) == 4 and fig.axes[0].get_ylim() == (0, 3.0 * 1.15)
    fig = viz.image_grid([torch.rand(1, 8, 8)] * 5, ncols=3)
    assert len(fig.axes) == 6
    plt.close("all")


def test_segmentation_figure_panels_and_outline():
    rows, heads = 3, 4
    truth = torch.zeros(rows, 64, 64, dtype=torch.bool)
    truth[:, 10:30, 10:30] = True
    pred = torch.rand(rows, heads, 64, 64) > 0.5
    scores = torch.rand(rows, heads)
    fig = viz.segmentation_figure(torch.rand(rows, 3, 64, 64), torch.rand(rows, heads, 8, 8), pred, truth, scores,
                                  ["a", "b", "c"], title="t")
    assert len(fig.axes) == rows * (heads + 2)
    best = int(scores[0].argmax())
    assert fig.axes[1 + best].title.get_fontweight() == "bold"
    fig, ax = plt.subplots()
    viz.outline(ax, torch.zeros(8, 8, dtype=torch.bool))    # nothing to outline: no contour, no error
    viz.outline(ax, torch.ones(8, 8, dtype=torch.bool))
    assert len(ax.collections) == 0
    viz.outline(ax, truth[0])
    assert len(ax.collections) == 1
    plt.close("all")


def test_overlap_image_colours():
    pred = torch.tensor([[True, True], [False, False]])
    truth = torch.tensor([[True, False], [True, False]])
    rgb = viz.overlap_image(pred, truth)
    assert rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [1, 1, 0]    # both: yellow
    assert rgb[0, 1].tolist() == [1, 0, 0]    # mask only: red
    assert rgb[1, 0].tolist() == [0, 1, 0]    # truth only: green
    assert rgb[1, 1].tolist() == [0, 0, 0]
