"""Pilot runs of notebook 10's clustering methods on the scenes of notebook 05, scored on validation only.

    python notes/clustering_pilot.py NAME --method swav --scenes 8000 --epochs 5 --train '{"epsilon": 0.03}'
    python notes/clustering_pilot.py NAME --method deepcluster --train '{"clusters": 100}'
    python notes/clustering_pilot.py NAME --method paws --labels 0.1

Each run trains one method (``vislearn.methods.swav_training``, ``deepcluster_training``,
``paws_training``) on the ViT, crops, optimizer and schedule of ``dino_scenes``
(``vislearn/recipes/nb05_dino.py``) with the given config fields replaced, then prints one JSON line:
validation k-NN and Jaccard of the backbone (the k-NN bank: the training scenes), the method's last
logged diagnostics (SwAV: loss against log K, where a loss stuck at log K means uniform predictions,
a collapse, and one sample's code entropy; DeepCluster: NMI with the previous epoch and with the
classes; PAWS: loss and the entropy of the mean prediction) and the training time. PAWS uses
``--labels`` of the training scenes' labels (class-balanced); nothing else sees a label. Test scenes
are never touched. These pilots choose the settings of notebook 10's recipes (issue 16); their
results are in notes/clustering_runs.md, which names the commit of each batch.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace

import numpy as np
import torch

from vislearn.analysis.evaluation import EvalSet, backbone_evaluator
from vislearn.methods.deepcluster_training import DeepCluster, DeepClusterConfig, train_deepcluster
from vislearn.methods.paws_training import PAWS, PAWSConfig, train_paws
from vislearn.methods.swav_training import SwAV, SwAVConfig, train_swav
from vislearn.models.vit import VisionTransformer, ViTConfig
from vislearn.recipes.nb05_dino import DINO_SCENES_FULL, SCENES_CROPS, SCENES_VIT, ScenesRun, final_metrics, run_scenes

D = DINO_SCENES_FULL       # dino_scenes' budget and schedule: its batch, learning rate, warmup and crops
BASE = {
    "swav": SwAVConfig(batch_size=D.batch_size, lr=D.lr, warmup_epochs=D.warmup_epochs, prototypes=256,
                       hidden_dim=256, out_dim=64, freeze_prototypes_steps=156, crops=SCENES_CROPS, log_every=25),
    "deepcluster": DeepClusterConfig(batch_size=D.batch_size, lr=D.lr, warmup_epochs=D.warmup_epochs, clusters=100,
                                     hidden_dim=256, crops=replace(SCENES_CROPS, n_local=0), log_every=25),
    "paws": PAWSConfig(batch_size=D.batch_size, lr=D.lr, warmup_epochs=D.warmup_epochs, per_class=4,
                       hidden_dim=256, out_dim=64, crops=SCENES_CROPS, log_every=25),
}


def labelled_subset(labels: torch.Tensor, fraction: float, seed: int) -> np.ndarray:
    """A class-balanced ``fraction`` of the indices (at least one per class)."""
    rng = np.random.default_rng(seed)
    per_class = max(1, round(fraction * len(labels) / int(labels.max() + 1)))
    return np.concatenate([rng.choice(np.flatnonzero(labels.numpy() == c), per_class, replace=False)
                           for c in range(int(labels.max()) + 1)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name")
    p.add_argument("--method", choices=sorted(BASE), default="swav")
    p.add_argument("--scenes", type=int, default=8000, help="training scenes (also the k-NN bank)")
    p.add_argument("--val", type=int, default=2000, help="validation scenes")
    p.add_argument("--epochs", type=float, default=5)
    p.add_argument("--labels", type=float, default=0.1, help="PAWS: fraction of the training scenes labelled")
    p.add_argument("--train", default="{}", help="config fields to replace, as JSON")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    base = BASE[a.method]
    cfg = replace(base, epochs=type(base.epochs)(a.epochs), **json.loads(a.train))
    data = run_scenes(ScenesRun(a.scenes, a.val, cfg), a.seed)
    torch.manual_seed(a.seed)
    vit = VisionTransformer(replace(ViTConfig(**SCENES_VIT.to_dict()), drop_path_rate=getattr(cfg, "drop_path", 0.0)))
    evaluate = backbone_evaluator(EvalSet.from_scenes(data.bank, data.val))
    extra = {}
    if a.method == "swav":
        model = SwAV(vit, cfg)
        history = train_swav(model, data.train_images, cfg, evaluate=evaluate, seed=a.seed, progress=False)
        extra = {"log_K": round(math.log(cfg.prototypes), 4)}
    elif a.method == "deepcluster":
        model = DeepCluster(vit, cfg)
        history = train_deepcluster(model, data.train_images, cfg, labels=data.train_labels, evaluate=evaluate,
                                    seed=a.seed, progress=False)
        extra = {k: history.evals[-1].get(k) for k in ("nmi_previous", "nmi_classes", "empty_clusters")}
    else:
        model = PAWS(vit, cfg)
        subset = torch.from_numpy(labelled_subset(data.train_labels, a.labels, a.seed))
        history = train_paws(model, data.train_images, data.train_images[subset], data.train_labels[subset], cfg,
                             evaluate=evaluate, seed=a.seed, progress=False)
        extra = {"labelled": len(subset)}
    model.backbone.eval()
    val = final_metrics(model.backbone, data.bank, data.val, torch.device("cpu"))
    last = {k: v for k, v in history.steps[-1].items() if k not in ("step", "epoch", "lr", "seconds")}
    print(json.dumps({"name": a.name, "method": a.method, "train": json.loads(a.train), "epochs": a.epochs,
                      "scenes": a.scenes, "val_knn": val["knn_accuracy"], "val_jaccard": val["jaccard"],
                      **extra, "last": last, "train_seconds": round(history.seconds, 1)}))


if __name__ == "__main__":
    main()
