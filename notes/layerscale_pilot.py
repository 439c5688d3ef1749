"""Pilot runs that chose the settings of notebook 03's LayerScale comparison (see notes/layerscale_runs.md).

    OMP_NUM_THREADS=1 python notes/layerscale_pilot.py NAME DEPTH DIM PATCH HEADS INIT|none LR WARMUP EPOCHS N_TRAIN

One run: a ViT trained with vislearn.train.fit on N_TRAIN Fashion-MNIST images, evaluated on 2,000 test
images; writes /tmp/ls_pilot/NAME.json (training loss every 25 steps, test accuracy, seconds). Example:

    python notes/layerscale_pilot.py LS_d24_lr3e3_w0 24 48 7 4 1e-5 3e-3 0 1 30000
"""

import json
import os
import sys

import torch

from vislearn import data, train
from vislearn.vit import VisionTransformer, ViTConfig

torch.set_num_threads(1)
name, depth, dim, patch, heads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
init = None if sys.argv[6] == "none" else float(sys.argv[6])
lr, warmup, epochs, n_train = float(sys.argv[7]), float(sys.argv[8]), float(sys.argv[9]), int(sys.argv[10])

torch.manual_seed(0)
model = VisionTransformer(ViTConfig(depth=depth, embed_dim=dim, patch_size=patch, num_heads=heads, mlp_ratio=2.0,
                                    init_values=init))
cfg = train.TrainConfig(epochs=epochs, batch_size=128, lr=lr, warmup_epochs=warmup, augment=False,
                        eval_every=epochs, log_every=25)
train_set = data.fashion_mnist("train", n_train if n_train < 60000 else None, seed=0)
test_set = data.fashion_mnist("test", 2000, seed=0)
history = train.fit(model, train_set, test_set, cfg, progress=False)
out = {"name": name, "argv": sys.argv[1:], "losses": [round(s["loss"], 4) for s in history.steps],
       "acc": history.final(), "sec": history.seconds}
print(json.dumps(out))
os.makedirs("/tmp/ls_pilot", exist_ok=True)
with open(f"/tmp/ls_pilot/{name}.json", "w") as f:
    json.dump(out, f)
