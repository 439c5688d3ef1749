"""vislearn: the helper library of an interactive course in modern computer vision.

Notebooks import from here; see README.md ("What lives where") for the layout. The package is
layered, and data flows down this list while imports point up it:

    config, results     presets, device, seeding, parameter checks; recorded results
    data/               Fashion-MNIST, bundled photos, scenes with masks, augmentations
    models/             layers and models from scratch, converters from timm, parity checks
    train/              the training loop, the one Recipe type, checkpoints (weights)
    methods/            the ideas: distillation, LayerScale, resolution, LPI, DINO, k-means and PQ, watermarks, ...
    analysis/           attention maps, k-NN, Jaccard, timing and memory fits
    recipes/            the named runs behind the bundled checkpoints, one module per notebook
    course/             figures and widgets, the batch runner and its report, the command line

The names below are re-exported lazily: ``import vislearn`` stays fast (no torch, no timm) until one
of them is used, so ``vislearn --help`` answers at once.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # config and results
    "ParameterError": "vislearn.config", "Setup": "vislearn.config", "setup": "vislearn.config",
    "record": "vislearn.results", "save_figure": "vislearn.results", "Table": "vislearn.results",
    # models
    "from_timm": "vislearn.models.convert", "build": "vislearn.models.convert",
    "parity_table": "vislearn.models.convert", "randomize_": "vislearn.models.convert",
    "eval_mode": "vislearn.models.layers", "resize_pos_embed": "vislearn.models.layers",
    "VisionTransformer": "vislearn.models.vit", "ViTConfig": "vislearn.models.vit",
    "DistilledVisionTransformer": "vislearn.models.deit", "CaiT": "vislearn.models.cait",
    "XCiT": "vislearn.models.xcit", "ConvNet": "vislearn.models.convnet",
    # training
    "fit": "vislearn.train.loop", "TrainConfig": "vislearn.train.loop", "History": "vislearn.train.loop",
    "Recipe": "vislearn.train.recipe", "CheckpointError": "vislearn.train.weights",
    # methods
    "DistillationLoss": "vislearn.methods.distill", "DINO": "vislearn.methods.dino",
    "DINOLoss": "vislearn.methods.dino", "train_dino": "vislearn.methods.dino_training",
    "kmeans": "vislearn.methods.kmeans", "ProductQuantizer": "vislearn.methods.pq", "OPQ": "vislearn.methods.opq",
    "knn_search": "vislearn.methods.search", "IVFPQ": "vislearn.methods.search", "kselect": "vislearn.methods.kselect",
    "Whitening": "vislearn.methods.watermark", "mark": "vislearn.methods.watermark_marking",
    "WatermarkConfig": "vislearn.methods.watermark_marking",
    # analysis
    "knn_accuracy": "vislearn.analysis.evaluation", "attention_jaccard": "vislearn.analysis.evaluation",
    "rollout": "vislearn.analysis.attention", "measure_scaling": "vislearn.analysis.scaling",
    "fit_power_law": "vislearn.analysis.scaling",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vislearn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value          # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [*_EXPORTS, "__version__"]
