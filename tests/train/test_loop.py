import math

import pytest
import torch
from torch.utils.data import TensorDataset

from vislearn.train import History, TrainConfig, evaluate, fit, lr_at


def toy_problem(n=256, seed=0):
    """Two classes of 1x4x4 images that differ in mean brightness: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 1, 4, 4, generator=g) * 0.5 + (y.float() * 2 - 1).view(-1, 1, 1, 1)
    return TensorDataset(x, y)


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_lr_schedule_endpoints():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_evaluate_known_accuracy():
    model = Tiny()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([1.0, 0.0]))  # always predicts class 0
    ds = TensorDataset(torch.zeros(4, 1, 4, 4), torch.tensor([0, 0, 0, 1]))
    m = evaluate(model, ds)
    assert m["accuracy"] == 0.75
    expected_loss = -(3 * math.log(math.e / (math.e + 1)) + math.log(1 / (math.e + 1))) / 4
    assert m["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_fit_learns_and_records_history():
    torch.manual_seed(0)
    model, ds = Tiny(), toy_problem()
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.05, warmup_epochs=0.5, augment=False, log_every=4,
                      eval_every=1.0)
    before = evaluate(model, ds)["loss"]
    hist = fit(model, ds, ds, cfg, progress=False)
    assert len(hist.evals) == 3 and [e["epoch"] for e in hist.evals] == [1.0, 2.0, 3.0]
    assert hist.final() > 0.95 and hist.evals[-1]["test_loss"] < before / 2
    assert hist.steps[-1]["step"] == 24 and hist.steps[-1]["lr"] < 0.01  # cosine decayed
    assert History.from_dict(hist.to_dict()).evals == hist.evals
    fig = hist.plot("toy")
    assert len(fig.axes) == 2 and len(fig.axes[1].lines[0].get_xdata()) == 3


def test_evaluation_before_the_first_logged_loss():
    # evaluating every half epoch while logging every 100 steps: an evaluation comes first
    hist = fit(Tiny(), toy_problem(64), toy_problem(32), TrainConfig(epochs=1, batch_size=16, eval_every=0.5,
                                                                     log_every=100, augment=False), progress=False)
    assert [e["step"] for e in hist.evals] == [2, 4] and [s["step"] for s in hist.steps] == [4]


def test_fit_custom_loss_and_clipping():
    model, ds = Tiny(), toy_problem(64)
    seen = []

    def loss_fn(m, x, y):
        seen.append(x.shape)
        return 1000 * torch.nn.functional.cross_entropy(m(x), y)  # huge gradients: clipping must hold them

    w0 = model.fc.weight.detach().clone()
    fit(model, ds, None, TrainConfig(epochs=1, batch_size=16, lr=1e-3, warmup_epochs=0, clip_grad=1.0,
                                     augment=False), loss_fn=loss_fn, progress=False)
    assert seen == [(16, 1, 4, 4)] * 4
    # AdamW steps are ~lr per parameter per step regardless, so the weights moved by about 4 * lr at most
    assert (model.fc.weight - w0).abs().max().item() < 4 * 1e-3 * 1.5


def test_fit_is_reproducible():
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        model = Tiny()
        fit(model, toy_problem(64), None, TrainConfig(epochs=1, batch_size=16, augment=True), seed=3, progress=False)
        runs.append(model.fc.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_on_eval_adds_its_values_to_every_evaluation():
    """The hook sees the model as it is at each evaluation (here: the bias after 1, 2, 3 epochs)."""
    model, ds = Tiny(), toy_problem(64)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05, augment=False, eval_every=1.0)
    hist = fit(model, ds, ds, cfg, progress=False, on_eval=lambda m: {"bias": m.fc.bias.tolist()})
    assert [len(e["bias"]) for e in hist.evals] == [2, 2, 2]
    assert hist.evals[-1]["bias"] == pytest.approx(model.fc.bias.tolist())     # the last one: the final model
    assert hist.evals[0]["bias"] != hist.evals[-1]["bias"]
    assert History.from_dict(hist.to_dict()).evals == hist.evals
