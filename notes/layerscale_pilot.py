"""Pilot runs that chose the settings of notebook 03's LayerScale comparison (see notes/layerscale_runs.md).

    OMP_NUM_THREADS=1 python notes/layerscale_pilot.py NAME DEPTH DIM PATCH HEADS INIT|none LR WARMUP EPOCHS N_TRAIN

One run: a ViT trained with vislearn.train.fit on N_TRAIN Fashion-MNIST images, evaluated on 2,000 test
images; writes /tmp/ls_pilot/NAME.json (training loss every 25 steps, test accuracy, seconds). Example:

    python notes/layerscale_pilot.py LS_d24_lr3e3_w0 24 48 7 4 1e-5 3e-3 0 1 30000

Provenance: the pilot table of notes/layerscale_runs.md was made with this script as of commit e868cf7.
Those runs decayed tokens and position tables (the weight-decay rule before timm's): ``wd_skip=()``.
"""

import argparse
import json
import os

import torch

from vislearn import data, train
from vislearn.models.vit import VisionTransformer, ViTConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, kind in (("name", str), ("depth", int), ("dim", int), ("patch", int), ("heads", int), ("init", str),
                       ("lr", float), ("warmup", float), ("epochs", float), ("n_train", int)):
        p.add_argument(name, type=kind)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    init = None if a.init == "none" else float(a.init)
    model = VisionTransformer(ViTConfig(depth=a.depth, embed_dim=a.dim, patch_size=a.patch, num_heads=a.heads,
                                        mlp_ratio=2.0, init_values=init))
    cfg = train.TrainConfig(epochs=a.epochs, batch_size=128, lr=a.lr, warmup_epochs=a.warmup, augment=False,
                            eval_every=a.epochs, log_every=25, wd_skip=())
    train_set = data.fashion_mnist("train", a.n_train if a.n_train < 60000 else None, seed=0)
    test_set = data.fashion_mnist("test", 2000, seed=0)
    history = train.fit(model, train_set, test_set, cfg, progress=False)
    out = {"name": a.name, "argv": vars(a), "losses": [round(s["loss"], 4) for s in history.steps],
           "acc": history.final(), "sec": history.seconds}
    print(json.dumps(out))
    os.makedirs("/tmp/ls_pilot", exist_ok=True)
    with open(f"/tmp/ls_pilot/{a.name}.json", "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
