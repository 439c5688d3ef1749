"""Short DINO tuning runs on the scenes (the experiments logged in notes/dino_runs.md).

    python notes/dino_tune.py NAME --minutes 5 --dino '{"lr": 1e-3}' --crops '{"n_local": 2}' \
        --model '{"depth": 4}' --threads 1

Each run trains from scratch, evaluates the teacher every few minutes (k-NN on a 4,000-scene
bank, attention Jaccard on 1,000 test scenes) and writes /tmp/dino/runs/NAME.json (and the
student/teacher weights as NAME.safetensors).

Provenance: the runs r13-r24 of notes/dino_runs.md were made with this script as of commit e480501
(library of that commit and its descendants up to b7b609e). This version runs the same experiment on
the package layout of issue 18 (the scenes are no longer cached in a pickle: they are regenerated,
deterministically, in a few seconds).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from vislearn.analysis.evaluation import EvalSet, backbone_evaluator, extract_features, knn_accuracy
from vislearn.data.augment import MultiCropConfig
from vislearn.data.scenes import SceneConfig, train_test_scenes
from vislearn.methods.dino import DINO
from vislearn.methods.dino_training import DINOConfig, train_dino
from vislearn.models.vit import VisionTransformer, ViTConfig

BASE_VIT = dict(img_size=64, patch_size=8, in_chans=3, num_classes=0, embed_dim=96, depth=6, num_heads=3,
                mlp_ratio=2.0)


def scenes(n_train: int, n_test: int, seed: int, scene_cfg: dict):
    """The tuning runs' scenes: ``n_train`` train and ``n_test`` test scenes of one design."""
    return train_test_scenes(n_train, n_test, seed, SceneConfig(**scene_cfg))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name")
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--epochs", type=float, default=None, help="default: from --ips estimate and minutes")
    p.add_argument("--ips", type=float, default=40, help="expected images/s, to size the schedules")
    p.add_argument("--dino", default="{}")
    p.add_argument("--crops", default="{}")
    p.add_argument("--model", default="{}")
    p.add_argument("--scenes", default="{}")
    p.add_argument("--n-train", type=int, default=20000)
    p.add_argument("--eval-every-min", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train, test = scenes(a.n_train, 2000, a.seed, json.loads(a.scenes))
    crops = MultiCropConfig(**json.loads(a.crops))
    dcfg = json.loads(a.dino)
    epochs = a.epochs or a.minutes * 60 * a.ips / a.n_train
    bs = dcfg.get("batch_size", 64)
    steps = epochs * a.n_train / bs
    eval_every = max(10, round(steps * a.eval_every_min / a.minutes / 10) * 10)
    cfg = replace(DINOConfig(), **{"epochs": epochs, "eval_every": eval_every, "log_every": 10, **dcfg,
                                   "crops": crops})
    vit_cfg = ViTConfig(**{**BASE_VIT, **json.loads(a.model), "drop_path_rate": cfg.drop_path})
    dino = DINO(VisionTransformer(vit_cfg), cfg.out_dim, hidden_dim=cfg.hidden_dim,
                bottleneck_dim=cfg.bottleneck_dim, norm_last_layer=cfg.norm_last_layer)
    ev = EvalSet.from_scenes(train, test, 4000, 1000)
    t = time.time()
    hist = train_dino(dino, train.images, cfg, evaluate=backbone_evaluator(ev), seed=a.seed, progress=True,
                      max_seconds=a.minutes * 60 * 1.15)
    last = hist.steps[-1]
    # What did the features learn? k-NN of the texture name (background) next to the class (object).
    names = sorted(set(train.textures))
    tex = {n: i for i, n in enumerate(names)}
    tex_train = torch.tensor([tex[n] for n in train.textures[:4000]])
    tex_test = torch.tensor([tex[n] for n in test.textures[:1000]])
    fb = extract_features(dino.teacher_backbone, ev.bank_images)
    ft = extract_features(dino.teacher_backbone, ev.test_images)
    sb = extract_features(dino.student["backbone"], ev.bank_images)
    st = extract_features(dino.student["backbone"], ev.test_images)
    probes = {"teacher_texture_knn": knn_accuracy(fb, tex_train, ft, tex_test),
              "student_knn": knn_accuracy(sb, ev.bank_labels, st, ev.test_labels)}
    out = Path("/tmp/dino/runs")
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in dino.state_dict().items()}, str(out / f"{a.name}.safetensors"))
    result = {"name": a.name, "cfg": json.loads(json.dumps(asdict(cfg), default=str)), "model": asdict(vit_cfg),
              "n_train": a.n_train, "threads": a.threads, "wall": round(time.time() - t),
              "train_seconds": round(hist.seconds), "ips": round(hist.images_per_second, 1),
              "final": last, "evals": hist.evals, "probes": probes, "steps": hist.steps}
    (out / f"{a.name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("name", "ips", "train_seconds")} | {"final": last,
                     "evals": hist.evals, "probes": probes}, indent=1))


if __name__ == "__main__":
    main()
