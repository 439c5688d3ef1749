"""Which scene design makes raw pixels weak for a reason DINO's augmentations remove?

    python notes/scene_designs.py            # prints one line per design (notes/dino_runs.md, session 3)

For each design: k-NN (k=20, T=0.07; bank 20,000 train scenes, 2,000 *validation* scenes) of raw pixels,
of the bundled DINO teacher and of the bundled supervised ViT, both trained on ``scenes.DINO_SCENES``:
a proxy, before retraining, for how much each feature space suffers from the change. The design
with the largest lead of DINO over raw pixels is printed last: that is the choice (``VARIED_SCENES``).

The first table in notes/dino_runs.md was measured at commit 520f35c with the r19 checkpoints and
2,000 *test* scenes (the mistake issue 11 fixed); the second, on validation scenes with the
checkpoints bundled after issue 11, is what the choice rests on now.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from vislearn.analysis.evaluation import extract_features, knn_accuracy
from vislearn.data.scenes import DINO_SCENES, make_scenes
from vislearn.recipes import get
from vislearn.recipes.nb05_dino import validation_scenes
from vislearn.train import weights

DESIGNS = {
    "base": {},
    "value.6": dict(value=(0.6, 1.0)),
    "flip": dict(flip=0.5),
    "side24": dict(min_side=24),
    "side24_value.6_flip": dict(min_side=24, value=(0.6, 1.0), flip=0.5),
    "side20": dict(min_side=20),
    "side20_flip": dict(min_side=20, flip=0.5),
    "side20_value.5_flip": dict(min_side=20, value=(0.5, 1.0), flip=0.5),
}


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    nets = {"dino": weights.load("dino_scenes").eval(), "supervised": weights.load("vit_scenes").eval()}
    full = get("dino_scenes").presets["full"]
    lead = {}
    for name in names or DESIGNS:
        t = time.time()
        config = replace(DINO_SCENES, **DESIGNS[name])
        train = make_scenes(20000, "train", 0, config)
        val = validation_scenes(2000, [full], 0, config)
        acc = {"pixels": knn_accuracy(train.images.flatten(1), train.labels, val.images.flatten(1), val.labels)}
        for label, net in nets.items():
            acc[label] = knn_accuracy(extract_features(net, train.images), train.labels,
                                      extract_features(net, val.images), val.labels)
        lead[name] = acc["dino"] - acc["pixels"]
        cov = val.coverage().mean().item()
        print(f"{name:24s} coverage {cov:.3f}  " + "  ".join(f"{k} {v:.4f}" for k, v in acc.items())
              + f"  lead {lead[name]:+.4f}  ({time.time() - t:.0f} s)", flush=True)
    best = max(lead, key=lead.get)
    print(f"largest lead of DINO over raw pixels on validation: {best} ({lead[best]:+.4f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("designs", nargs="*", choices=[[], *DESIGNS], help="default: all")
    main(parser.parse_args().designs)
