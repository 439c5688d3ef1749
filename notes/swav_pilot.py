"""SwAV pilot runs on the scenes of notebook 05, scored on validation scenes only (notes/swav_runs.md).

    python notes/swav_pilot.py NAME --scenes 8000 --epochs 5 --train '{"prototypes": 32, "batch_size": 128}'

Each run trains ``vislearn.methods.swav_training.train_swav`` on the ViT, crops and optimizer of
``dino_scenes`` (``vislearn/recipes/nb05_dino.py``) with the given SwAVConfig fields replaced, then
prints one JSON line: validation k-NN and Jaccard of the backbone, the last logged loss against
log K (a loss stuck at log K means the predictions became uniform: collapse), the mean entropy of
one sample's code, and the training time. Test scenes are never touched. These pilots choose the
settings of the future ``swav_scenes`` recipe (issue 16).

Provenance: the rows of notes/swav_runs.md were made with this script as of the commit that added it.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace

import torch

from vislearn.analysis.evaluation import EvalSet, backbone_evaluator
from vislearn.methods.swav_training import SwAV, SwAVConfig, train_swav
from vislearn.models.vit import VisionTransformer, ViTConfig
from vislearn.recipes.nb05_dino import DINO_SCENES_FULL, SCENES_CROPS, SCENES_VIT, ScenesRun, final_metrics, run_scenes

# dino_scenes' budget and schedule: its batch, learning rate, warmup and crops
BASE = SwAVConfig(batch_size=DINO_SCENES_FULL.batch_size, lr=DINO_SCENES_FULL.lr,
                  warmup_epochs=DINO_SCENES_FULL.warmup_epochs, prototypes=256, hidden_dim=256, out_dim=64,
                  freeze_prototypes_steps=156, crops=SCENES_CROPS, log_every=25)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name")
    p.add_argument("--scenes", type=int, default=8000, help="training scenes (also the k-NN bank)")
    p.add_argument("--val", type=int, default=2000, help="validation scenes")
    p.add_argument("--epochs", type=float, default=5)
    p.add_argument("--train", default="{}", help="SwAVConfig fields to replace, as JSON")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = replace(BASE, epochs=a.epochs, **json.loads(a.train))
    run = ScenesRun(a.scenes, a.val, cfg)
    data = run_scenes(run, a.seed)
    torch.manual_seed(a.seed)
    model = SwAV(VisionTransformer(replace(ViTConfig(**SCENES_VIT.to_dict()), drop_path_rate=cfg.drop_path)), cfg)
    ev = EvalSet.from_scenes(data.bank, data.val)
    history = train_swav(model, data.train_images, cfg, evaluate=backbone_evaluator(ev), seed=a.seed,
                         progress=False)
    model.backbone.eval()
    val = final_metrics(model.backbone, data.bank, data.val, torch.device("cpu"))
    last = history.steps[-1]
    print(json.dumps({"name": a.name, "train": json.loads(a.train), "epochs": a.epochs, "scenes": a.scenes,
                      "val_knn": val["knn_accuracy"], "val_jaccard": val["jaccard"],
                      "loss": last["loss"], "log_K": round(math.log(cfg.prototypes), 4),
                      "sample_code_entropy": last.get("sample_code_entropy"),
                      "train_seconds": round(history.seconds, 1)}))


if __name__ == "__main__":
    main()
