"""Which scene design makes raw pixels weak for a reason DINO's augmentations remove?

    python notes/scene_designs.py            # prints one line per design (notes/dino_runs.md, session 3)

For each design: k-NN (k=20, T=0.07; bank 20,000 train scenes, 2,000 test scenes) of raw pixels, of the
bundled DINO teacher and of the bundled supervised ViT, both trained on ``scenes.DINO_SCENES``: a proxy,
before retraining, for how much each feature space suffers from the change. The table in
notes/dino_runs.md was measured at commit 520f35c with the r19 checkpoints (20,000 scenes), bundled at
the time; run today, it uses the bundled 60,000-scene checkpoints.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from vislearn.analysis.evaluation import extract_features, knn_accuracy
from vislearn.data.scenes import DINO_SCENES, train_test_scenes
from vislearn.train import weights

DESIGNS = {
    "base": {},
    "value.6": dict(value=(0.6, 1.0)),
    "flip": dict(flip=0.5),
    "side24": dict(min_side=24),
    "side24_value.6_flip": dict(min_side=24, value=(0.6, 1.0), flip=0.5),
    "side20_value.5_flip": dict(min_side=20, value=(0.5, 1.0), flip=0.5),
}


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    nets = {"dino": weights.load("dino_scenes").eval(), "supervised": weights.load("vit_scenes").eval()}
    for name in names or DESIGNS:
        t = time.time()
        train, test = train_test_scenes(20000, 2000, 0, replace(DINO_SCENES, **DESIGNS[name]))
        acc = {"pixels": knn_accuracy(train.images.flatten(1), train.labels, test.images.flatten(1), test.labels)}
        for label, net in nets.items():
            acc[label] = knn_accuracy(extract_features(net, train.images), train.labels,
                                      extract_features(net, test.images), test.labels)
        cov = test.coverage().mean().item()
        print(f"{name:24s} coverage {cov:.3f}  " + "  ".join(f"{k} {v:.4f}" for k, v in acc.items())
              + f"  ({time.time() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("designs", nargs="*", choices=[[], *DESIGNS], help="default: all")
    main(parser.parse_args().designs)
