"""The figures and measurements of notebook 09: what is drawn and computed equals what was passed."""

import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from vislearn.course import arch_viz  # noqa: E402
from vislearn.models.levit import relative_bias_index  # noqa: E402
from vislearn.recipes.nb09_architectures import mixing_distance  # noqa: E402
from vislearn.train.loop import History  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def hand_table() -> torch.Tensor:
    """A (2 heads, 3, 3) offset map whose entry says where it sits: 10 * |d_row| + |d_col|, head 1 negated."""
    t = torch.tensor([[0.0, 1, 2], [10, 11, 12], [20, 21, 22]])
    return torch.stack([t, -t])


def test_bias_for_query_reads_the_offset_table():
    table = hand_table()
    centre = arch_viz.bias_for_query(table, 1, 1)
    assert centre.shape == (2, 3, 3)
    torch.testing.assert_close(centre[0], torch.tensor([[11.0, 10, 11], [1, 0, 1], [11, 10, 11]]))
    torch.testing.assert_close(centre[1], -centre[0])
    torch.testing.assert_close(arch_viz.bias_for_query(table, 0, 0), table)     # from the corner: offset = position
    torch.testing.assert_close(arch_viz.bias_for_query(table, 2, 0)[0], torch.tensor([[20.0, 21, 22], [10, 11, 12],
                                                                                      [0, 1, 2]]))


def test_bias_for_query_equals_the_library_gather():
    """What LeViT adds to the logits of query q is attention_biases[:, relative_bias_index(R)[q]]."""
    R = 4
    biases = torch.randn(3, R * R, generator=torch.Generator().manual_seed(0))
    gathered = biases[:, relative_bias_index(R)]                                 # (h, N, N)
    table = biases.reshape(3, R, R)
    for q in (0, 5, 10, 15):
        torch.testing.assert_close(arch_viz.bias_for_query(table, q // R, q % R), gathered[:, q].reshape(3, R, R))


def test_bias_distance_trend_signs():
    near = -arch_viz.offset_distance(4)                                          # bias falls with distance
    maps = torch.stack([near, -near, torch.zeros(4, 4), torch.full((4, 4), 3.0)])
    trend = arch_viz.bias_distance_trend(maps)
    torch.testing.assert_close(trend, torch.tensor([-1.0, 1.0, 0.0, 0.0]))
    assert arch_viz.offset_distance(3)[1, 2].item() == pytest.approx(5 ** 0.5)


def test_bias_maps_figure_draws_every_head_of_every_layer():
    maps = [hand_table(), torch.randn(3, 2, 2)]
    fig = arch_viz.bias_maps_figure(maps, ["layer a", "layer b"])
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 5                                                      # 2 + 3 heads, one panel unused
    np.testing.assert_array_equal(drawn[1].images[0].get_array(), -hand_table()[0].numpy())
    assert drawn[0].get_title().startswith("head 0") and "r=" in drawn[0].get_title()
    lo, hi = drawn[0].images[0].get_clim()
    assert lo == -hi == -22.0                                                   # a symmetric scale per layer
    assert "±22" in drawn[0].get_ylabel()


def test_mixing_filters_figure_rows_and_values():
    maps = {"init": torch.randn(3, 16, 4, 4), "trained": torch.randn(3, 16, 4, 4)}
    fig = arch_viz.mixing_filters_figure(maps, blocks=[0, 2], patches=[5, 10])
    axes = np.array(fig.axes).reshape(4, 2)                                     # (block, state) rows, patch columns
    np.testing.assert_allclose(axes[0, 1].images[0].get_array(), maps["init"][0, 10].numpy())
    np.testing.assert_allclose(axes[1, 0].images[0].get_array(), maps["trained"][0, 5].numpy())
    np.testing.assert_allclose(axes[3, 1].images[0].get_array(), maps["trained"][2, 10].numpy())
    outline = axes[0, 1].patches[0]
    assert outline.get_xy() == (10 % 4 - 0.5, 10 // 4 - 0.5)                    # the output patch itself
    assert "trained" in axes[1, 0].get_ylabel() and "block 1" in axes[1, 0].get_ylabel()


def test_series_by_epoch_prepends_the_initial_value():
    evals = [{"epoch": 1.0, "test_accuracy": 0.5, "gates": [[0.7, 0.6]]},
             {"epoch": 2.0, "test_accuracy": 0.6},
             {"epoch": 3.0, "test_accuracy": 0.7, "gates": [[0.5, 0.4]]}]
    epochs, gates = arch_viz.series_by_epoch(evals, "gates", initial=[[0.73, 0.73]])
    np.testing.assert_array_equal(epochs, [0.0, 1.0, 3.0])
    assert gates.shape == (3, 1, 2)
    np.testing.assert_allclose(gates[:, 0, 1], [0.73, 0.6, 0.4])
    epochs, acc = arch_viz.series_by_epoch(evals, "test_accuracy")
    np.testing.assert_allclose(acc, [0.5, 0.6, 0.7])
    with pytest.raises(ValueError, match="mixing_distance"):
        arch_viz.series_by_epoch(evals, "mixing_distance")


def test_gates_figure_plots_heads_and_layer_means():
    gates = np.random.default_rng(0).uniform(0, 1, (4, 2, 3))                   # (epochs, layers, heads)
    epochs = np.arange(4.0)
    fig = arch_viz.gates_figure(epochs, gates)
    left, right = fig.axes
    assert len(left.lines) == 6 and len(right.lines) == 2
    np.testing.assert_allclose(left.lines[4].get_ydata(), gates[:, 1, 1])
    np.testing.assert_allclose(right.lines[1].get_ydata(), gates[:, 1].mean(1))


def test_attention_received_with_and_without_class_token():
    attn = torch.softmax(torch.randn(2, 3, 1 + 9, 1 + 9), dim=-1)              # (B, h, T, T), [CLS] first
    with_cls = arch_viz.attention_received(attn, 3, prefix=1)
    torch.testing.assert_close(with_cls, attn[:, :, 0, 1:].mean(1).reshape(2, 3, 3))
    patches = torch.softmax(torch.randn(2, 3, 9, 9), dim=-1)
    received = arch_viz.attention_received(patches, 3)
    torch.testing.assert_close(received.sum((1, 2)), torch.ones(2))              # mean of rows that sum to 1
    torch.testing.assert_close(received[1, 2, 0], patches[1, :, :, 6].mean())
    with pytest.raises(ValueError, match="do not make a 4 x 4 grid"):
        arch_viz.attention_received(patches, 4)
    one = arch_viz.attention_received(patches, 3, head=2)                     # one head instead of the mean
    torch.testing.assert_close(one[0, 1, 1], patches[0, 2, :, 4].mean())
    per_head = torch.stack([arch_viz.attention_received(attn, 3, prefix=1, head=h) for h in range(3)])
    torch.testing.assert_close(per_head.mean(0), with_cls)                      # the heads average to the mean
    with pytest.raises(ValueError, match="this layer has 3 heads"):
        arch_viz.attention_received(patches, 3, head=3)


def test_pooling_and_curves_figures_draw_what_they_get():
    images = [torch.rand(1, 28, 28) for _ in range(3)]
    maps = torch.rand(3, 7, 7)
    fig = arch_viz.pooling_figure(images, maps, ["a", "b", "c"])
    axes = np.array(fig.axes).reshape(2, 3)
    np.testing.assert_allclose(axes[1, 2].images[1].get_array(), maps[2].numpy(), rtol=1e-6)
    assert axes[0, 1].get_title() == "b" and f"{maps[0].max():.2f}" in axes[1, 0].get_xlabel()
    h1 = History(steps=[{"step": 1, "epoch": 0.5, "loss": 2.0, "lr": 1e-3}],
                 evals=[{"epoch": 1.0, "test_accuracy": 0.4}, {"epoch": 2.0, "test_accuracy": 0.6}])
    h2 = History(steps=[{"step": 1, "epoch": 0.5, "loss": 1.5, "lr": 1e-3}],
                 evals=[{"epoch": 1.0, "test_accuracy": 0.3}])
    fig = arch_viz.curves_figure({"one": h1, "two": h2})
    acc = fig.axes[0]
    np.testing.assert_allclose(acc.lines[0].get_ydata(), [0.4, 0.6])
    assert [line.get_label() for line in acc.lines] == ["one", "two"]


def test_mixing_distance_is_small_for_a_local_filter():
    """The recipe's locality measure, as the notebook reads it: identity mixing is at distance 0."""
    eye = torch.eye(9).reshape(1, 9, 3, 3)
    assert mixing_distance(eye).item() == 0.0
    neighbours = torch.zeros(1, 9, 3, 3)
    neighbours[0, 4, 0, 1] = neighbours[0, 4, 1, 0] = 1.0                        # output (1, 1) reads 2 neighbours
    assert mixing_distance(neighbours).item() == pytest.approx(1.0)


class Sleepy(nn.Module):
    """A model whose forward takes a known time: throughput must come out as batch / that time."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        time.sleep(self.seconds)
        return self.linear(x)


def test_throughput_measures_images_per_second_and_leaves_the_model_alone():
    model = Sleepy(0.02).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    speed = arch_viz.throughput({"sleepy": model, "slower": Sleepy(0.04)}, x, y, steps=2, rounds=2)
    assert set(speed) == {"sleepy", "slower"}
    assert speed["sleepy"]["infer"] == pytest.approx(10 / 0.02, rel=0.3)        # 500 img/s, minus overhead
    assert speed["sleepy"]["train"] == pytest.approx(10 / 0.02, rel=0.3)
    assert speed["slower"]["infer"] == pytest.approx(10 / 0.04, rel=0.3)
    assert not model.training                                                   # its mode is restored
    for k, v in model.state_dict().items():                                     # training ran on a copy
        torch.testing.assert_close(v, before[k])
