"""Training: one loop for classifiers, one recipe type, checkpoints with a manifest.

- ``loop``: ``fit`` (progress bar, any device, mixed precision on CUDA, warmup + cosine), ``History``,
  ``predict`` / ``evaluate``, ``param_groups`` (timm's weight-decay rule);
- ``recipe``: ``Recipe`` (a named, preset-dependent run), ``run``, ``bundled``, ``trained_or_bundled``;
- ``weights``: safetensors checkpoints plus a manifest, saved atomically; published (hub) weights;
- ``distributed``: data-parallel training under ``torchrun`` (a shard of every global batch per
  process, gradients averaged, rank 0 saves); no-ops in one process;
- ``resume``: periodic checkpoints of a running ``fit`` and ``--resume`` from the last one.

The recipes themselves live in ``vislearn.recipes``; ``python -m vislearn.train NAME`` runs one, and
``torchrun --nproc-per-node N -m vislearn.train NAME`` runs it in N processes.
"""

from .loop import History, TrainConfig, evaluate, fit, lr_at, param_groups, predict
from .recipe import Recipe, Trained, bundled, run, train_supervised, trained_or_bundled

__all__ = ["History", "TrainConfig", "evaluate", "fit", "lr_at", "param_groups", "predict", "Recipe", "Trained",
           "bundled", "run", "trained_or_bundled", "train_supervised"]
