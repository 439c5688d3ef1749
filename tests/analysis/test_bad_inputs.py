"""Library calls with bad inputs: each a clear error naming the value and what is allowed, never a silent
broadcast, an empty result or a deep stack trace."""

import pytest
import torch

from vislearn.analysis.attention import rollout
from vislearn.analysis.evaluation import knn_accuracy, knn_predict, mass_masks
from vislearn.config import ParameterError
from vislearn.models.vit import VisionTransformer, ViTConfig
from vislearn.train.loop import TrainConfig

BANK, LABELS = torch.randn(10, 4), torch.arange(10) % 3
QUERIES, TRUTH = torch.randn(5, 4), torch.arange(5) % 3


@pytest.mark.parametrize("call, error, words", [
    (lambda: knn_accuracy(BANK, LABELS, QUERIES, TRUTH[:1]), ValueError, r"test_labels must be \(5,\)"),
    (lambda: knn_accuracy(BANK, LABELS, QUERIES, torch.tensor(1)), ValueError, r"test_labels must be \(5,\)"),
    (lambda: knn_accuracy(BANK, LABELS[:7], QUERIES, TRUTH), ValueError, r"train_labels must be \(10,\)"),
    (lambda: knn_accuracy(BANK, LABELS, QUERIES, TRUTH, k=0), ValueError, r"k=0 must be a positive integer"),
    (lambda: knn_predict(BANK, LABELS, QUERIES, k=2.5), ValueError, r"k=2.5 must be a positive integer"),
    (lambda: knn_predict(BANK, LABELS, torch.randn(5, 3)), ValueError, r"same D; got \(10, 4\) and \(5, 3\)"),
    (lambda: knn_predict(BANK, LABELS, QUERIES, temperature=0), ValueError, r"temperature=0 must be positive"),
    (lambda: mass_masks(torch.rand(2, 9), keep=1.5), ValueError, r"keep=1.5 must be a fraction .* \(0, 1\]"),
    (lambda: mass_masks(torch.rand(2, 9), keep=0), ValueError, r"keep=0 must be a fraction"),
    (lambda: rollout([]), ValueError, r"at least one layer, got an empty list"),
    (lambda: rollout([torch.rand(1, 2, 5, 5)], residual=2), ValueError, r"residual=2 must be in \[0, 1\]"),
    (lambda: VisionTransformer(ViTConfig(img_size=28, patch_size=4))(torch.randn(1, 1, 30, 30)), ValueError,
     r"30x30 px is not a whole number of 4 px patches \(this model was built for 28 px"),
    (lambda: TrainConfig(epochs=0), ParameterError, r"epochs=0 must be a positive number"),
    (lambda: TrainConfig(epochs=float("nan")), ParameterError, r"epochs=nan must be a positive number"),
    (lambda: TrainConfig(batch_size=0), ParameterError, r"batch_size=0 must be a positive integer"),
])
def test_bad_inputs_are_clear_errors(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_good_inputs_still_work():
    assert 0 <= knn_accuracy(BANK, LABELS, QUERIES, TRUTH, k=3) <= 1
    assert mass_masks(torch.rand(2, 9), keep=1.0).all()            # keeping all the mass keeps everything
    vit = VisionTransformer(ViTConfig(img_size=28, patch_size=4, embed_dim=16, depth=1, num_heads=2)).eval()
    assert vit(torch.randn(1, 1, 32, 32)).shape == (1, 10)     # another whole number of patches: positions resized
