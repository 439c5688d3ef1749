"""Training: one loop for classifiers, one recipe type, checkpoints with a manifest.

- ``loop``: ``fit`` (progress bar, any device, mixed precision on CUDA, warmup + cosine), ``History``,
  ``predict`` / ``evaluate``, ``param_groups`` (timm's weight-decay rule);
- ``recipe``: ``Recipe`` (a named, preset-dependent run), ``run``, ``bundled``, ``trained_or_bundled``;
- ``weights``: safetensors checkpoints plus a manifest, saved atomically; published (hub) weights.

The recipes themselves live in ``vislearn.recipes``; ``python -m vislearn.train NAME`` runs one.
"""

from .loop import History, TrainConfig, evaluate, fit, lr_at, param_groups, predict
from .recipe import Recipe, Trained, bundled, run, train_supervised, trained_or_bundled

__all__ = ["History", "TrainConfig", "evaluate", "fit", "lr_at", "param_groups", "predict", "Recipe", "Trained",
           "bundled", "run", "trained_or_bundled", "train_supervised"]
