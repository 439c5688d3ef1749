"""What every model test checks against timm: logits, features, the explicit-softmax path, registry models.

Built on the library's own parity pieces (``vislearn.models.convert``: ``randomize_``, ``output_diff``,
``parity_table``), so the tests and the notebooks prove equality the same way.
"""

from __future__ import annotations

import timm
import torch

from vislearn.models.convert import DIFF, output_diff, parity_table

ATOL = 1e-5  # max |ours - timm| allowed, fp32


def batch(model, n: int = 2, size: int | None = None) -> torch.Tensor:
    c, s = model.cfg.in_chans, size or model.cfg.img_size
    return torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def assert_equal_to_timm(ours, theirs, x: torch.Tensor, label: str) -> dict[str, float]:
    """Logits and features equal within ATOL, and the path that returns attention computes the same
    features as the fused one. Returns the differences (printed with ``pytest -s``)."""
    diffs = {"logits": output_diff(ours, theirs, x),
             "features": output_diff(ours.forward_features, theirs.forward_features, x)}
    feats, _ = ours.forward_features(x, return_attention=True)
    diffs["explicit softmax"] = (feats - ours.forward_features(x)).abs().max().item()
    print(f"parity {label}: " + ", ".join(f"{v:.2e} ({k})" for k, v in diffs.items()))
    assert max(diffs.values()) <= ATOL, diffs
    return diffs


def assert_registry_model_equal(name: str, size: int = 64) -> float:
    """A real timm size, randomized, at a small input size: ``parity_table`` raises above ATOL."""
    rows = parity_table({name: (timm.create_model(name, pretrained=False, img_size=size, num_classes=4), [size])},
                        batch=2, atol=ATOL)
    print(f"parity {name}: max|ours - timm| = {rows[0][DIFF]:.2e}")
    return rows[0][DIFF]
