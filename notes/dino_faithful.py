"""DINO before and after following the reference code (issue 11), on validation-chosen settings.

    python notes/dino_faithful.py [LABEL=CHECKPOINT_FOLDER ...]   # default: the bundled checkpoints

For each ``dino_scenes`` checkpoint (a folder with a manifest, e.g. one made by
``python -m vislearn.train dino_scenes --preset full --out FOLDER``), and the bundled supervised
``vit_scenes`` for reference, on the scenes of notebook 05 (bank: the 20,000 training scenes;
2,000 validation scenes of items no bundled model trained on; 2,000 test scenes):

- k-NN (k=20, T=0.07) on validation and on test, and raw pixels' on both; on test, the paired
  McNemar test against raw pixels (where exactly one of the two is right);
- the attention threshold (fraction of the mass kept, 30-90%) chosen on **validation**, and the test
  Jaccard (best head) at that threshold and at the paper's 60%.

Test numbers are printed once per checkpoint, for the threshold chosen on validation; nothing
here looks at test to choose anything. The before/after table in notes/dino_runs.md came from this
script at commit 402e9f4: "before" is the checkpoint bundled at commit d88ab4c (extract it with
``git show d88ab4c:data/checkpoints/dino_scenes.safetensors`` and its manifest into a folder),
"after" the one trained at 402e9f4 (bundled since).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from vislearn.analysis import evaluation
from vislearn.data import scenes
from vislearn.recipes import get
from vislearn.recipes import nb05_dino as nb05
from vislearn.train import weights

KEEPS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def knn_right(bank: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return evaluation.knn_predict(bank, labels, query, num_classes=10).argmax(1) == truth


def main(checkpoints: dict[str, str | None]) -> None:
    torch.set_num_threads(1)
    full = get("dino_scenes").presets["full"]
    t0 = time.time()
    bank, test = scenes.train_test_scenes(full.train_scenes, full.test_scenes, 0, full.scenes)
    val = nb05.validation_scenes(full.test_scenes, [full], 0)
    pixels = {name: knn_right(bank.images.flatten(1), bank.labels, s.images.flatten(1), s.labels)
              for name, s in (("val", val), ("test", test))}
    print(f"scenes in {time.time() - t0:.0f} s; raw pixels k-NN: val {pixels['val'].float().mean():.4f}, "
          f"test {pixels['test'].float().mean():.4f}", flush=True)
    nets = {label: ("dino_scenes", root) for label, root in checkpoints.items()}
    nets["supervised (bundled)"] = ("vit_scenes", None)
    for label, (name, root) in nets.items():
        net = weights.load(name, root).eval()
        sets = {"val": val, "test": test}
        feats = {n: evaluation.extract_features(net, s.images) for n, s in {"bank": bank, **sets}.items()}
        right = {n: knn_right(feats["bank"], bank.labels, feats[n], s.labels) for n, s in sets.items()}
        only_net = int((right["test"] & ~pixels["test"]).sum())
        only_pix = int((~right["test"] & pixels["test"]).sum())
        z = (only_net - only_pix) / math.sqrt(max(1, only_net + only_pix))
        val_maps = evaluation.cls_attention_maps(net, val.images)
        sweep = {k: evaluation.jaccard_from_maps(val_maps, val.masks, keep=k)["jaccard"] for k in KEEPS}
        keep = max(sweep, key=sweep.get)                                     # chosen on validation
        test_maps = evaluation.cls_attention_maps(net, test.images)
        j_chosen = evaluation.jaccard_from_maps(test_maps, test.masks, keep=keep)["jaccard"]
        j_60 = evaluation.jaccard_from_maps(test_maps, test.masks, keep=0.6)["jaccard"]
        print(f"{label}: k-NN val {right['val'].float().mean():.4f} test {right['test'].float().mean():.4f} "
              f"(lead over pixels {right['test'].float().mean() - pixels['test'].float().mean():+.4f}; "
              f"McNemar {only_net} vs {only_pix}, z = {z:.1f}, p = {math.erfc(abs(z) / math.sqrt(2)):.1e}) | "
              f"Jaccard val sweep " + " ".join(f"{k:.0%} {v:.3f}" for k, v in sweep.items())
              + f" -> keep {keep:.0%}: test {j_chosen:.4f}; at 60%: test {j_60:.4f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="*", metavar="LABEL=FOLDER",
                        help="dino_scenes checkpoints to compare (default: the bundled one)")
    args = parser.parse_args()
    pairs = dict(c.split("=", 1) for c in args.checkpoints) if args.checkpoints else {"DINO (bundled)": None}
    main(pairs)
