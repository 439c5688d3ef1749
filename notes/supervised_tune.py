"""Supervised baseline runs on the scenes: the same ViT trained with labels (notes/dino_runs.md).

    python notes/supervised_tune.py NAME --epochs 6 --model '{}' --train '{"lr": 1e-3}'

Provenance: the supervised rows of notes/dino_runs.md were made with this script as of commit e480501.
Those runs decayed tokens and position tables (the weight-decay rule before timm's), so this version
passes ``wd_skip=()`` to reproduce them.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from vislearn.analysis.evaluation import EvalSet, evaluate_backbone, knn_accuracy
from vislearn.data.scenes import SceneConfig, train_test_scenes
from vislearn.models.vit import VisionTransformer, ViTConfig
from vislearn.train import TrainConfig, evaluate, fit

# the tuning runs' default backbone (as notes/dino_tune.py)
BASE_VIT = dict(img_size=64, patch_size=8, in_chans=3, num_classes=0, embed_dim=96, depth=6, num_heads=3,
                mlp_ratio=2.0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name")
    p.add_argument("--epochs", type=float, default=5)
    p.add_argument("--train", default="{}")
    p.add_argument("--model", default="{}")
    p.add_argument("--scenes", default="{}")
    p.add_argument("--n-train", type=int, default=20000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train, test = train_test_scenes(a.n_train, 2000, a.seed, SceneConfig(**json.loads(a.scenes)))
    vit_cfg = ViTConfig(**{**BASE_VIT, "num_classes": 10, **json.loads(a.model)})
    model = VisionTransformer(vit_cfg)
    cfg = replace(TrainConfig(epochs=a.epochs, batch_size=128, lr=1e-3, weight_decay=0.05, warmup_epochs=1,
                              eval_every=1.0, wd_skip=()), **json.loads(a.train))
    t = time.time()
    hist = fit(model, train.dataset(), test.subset(range(1000)).dataset(), cfg, seed=a.seed, progress=False)
    ev = EvalSet.from_scenes(train, test, 4000, 1000)
    m = evaluate_backbone(model, ev)
    raw = {"raw_knn_4000": knn_accuracy(ev.bank_images.flatten(1), ev.bank_labels, ev.test_images.flatten(1),
                                        ev.test_labels),
           "raw_knn_full": knn_accuracy(train.images.flatten(1), train.labels, test.images.flatten(1), test.labels)}
    full = evaluate_backbone(model, EvalSet.from_scenes(train, test))
    result = {"name": a.name, "cfg": asdict(cfg), "model": asdict(vit_cfg), "train_seconds": round(hist.seconds),
              "ips": round(cfg.epochs * a.n_train / hist.seconds, 1), "wall": round(time.time() - t),
              "test_accuracy": evaluate(model, test.dataset())["accuracy"], "knn_4000": m["knn"],
              "jaccard_1000": m["jaccard"], "knn_full": full["knn"], "jaccard_full": full["jaccard"],
              **raw, "evals": hist.evals}
    out = Path("/tmp/dino/runs")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("cfg", "model")}, indent=1))


if __name__ == "__main__":
    main()
