"""Every recipe in one process and under torchrun (2 processes, gloo): same losses, same test metric.

    python benchmarks/ddp_recipes.py                       # all recipes, smoke preset, 1 thread per process
    python benchmarks/ddp_recipes.py vit_fmnist dino_scenes --preset smoke --out /tmp/ddp

For each recipe it runs ``python -m vislearn.train NAME --preset P --out OUT/1proc/NAME`` and
``torchrun --standalone --nproc-per-node 2 -m vislearn.train NAME --preset P --out OUT/2proc/NAME``
(the same global batch, split over the two ranks; the loss logged at every step), then reads both
histories and manifests and prints one row per recipe: the steps logged, the largest relative
difference between the two logged loss curves, the final test metric of each (accuracy for the
supervised recipes, k-NN accuracy for DINO) and each run's wall time.

Two things are not bitwise the same in two processes, by design (``vislearn/train/distributed.py``):
BatchNorm normalizes with its shard's statistics, and drop path is drawn per rank. The script says
which applies to each recipe; where drop path is a training setting (DINO's student) it is set to 0
in both runs, so the curves can be compared exactly; BatchNorm recipes are compared as they are and
reported, not failed. A recipe whose torchrun launch fails, or whose curves (without BatchNorm)
differ by more than ``--rtol``, makes the script exit 1 after the table. The two cores of a laptop are enough: each
process uses one thread. ``tests/train/test_distributed.py`` checks the same property in CI on tiny
models; this script checks it on the real recipes. The table in README.md ("Scaling up") was printed
by this script as of commit f1cd8ce.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from torch import nn

from vislearn.models.convert import build
from vislearn.recipes import all_recipes


def not_bitwise(name: str, preset: str) -> tuple[list[str], list[str]]:
    """Why ``name`` cannot match bitwise in two processes, and the ``--set`` overrides that remove what can."""
    recipe = all_recipes()[name]
    model = build(recipe.arch, recipe.model)
    reasons, overrides = [], []
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        reasons.append("BatchNorm per shard")
    if recipe.model.get("drop_path_rate", 0) > 0:
        reasons.append("drop path per rank")
    settings = recipe.config(preset)
    train_cfg = getattr(settings, "train", settings)
    if getattr(train_cfg, "drop_path", 0) > 0:
        overrides.append("drop_path=0")
    return reasons, overrides


def train(name: str, preset: str, out: Path, processes: int, timeout: float,
          overrides: list[str] = ()) -> tuple[float, str]:
    """One training of ``name`` into ``out``; returns its wall time and, on failure, the last of stderr."""
    launcher = [sys.executable, "-m", "vislearn.train"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
        "-m", "vislearn.train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    sets = [a for o in ["log_every=1", *overrides] for a in ("--set", o)]
    done = subprocess.run([*launcher, name, "--preset", preset, "--out", str(out), "--force", *sets],
                          capture_output=True, text=True, timeout=timeout, env=env)
    return time.perf_counter() - start, "" if done.returncode == 0 else done.stderr[-2000:]


def read(out: Path, name: str) -> tuple[list[float], dict]:
    """The logged losses and the manifest metrics of the checkpoint ``name`` saved in ``out``."""
    entry = json.loads((out / "manifest.json").read_text())[name]
    history = json.loads((out / entry["history"]).read_text())
    return [float(s["loss"]) for s in history["steps"]], entry["metrics"]


def final_metric(metrics: dict) -> tuple[str, float]:
    """The supervised recipes' test accuracy, or the self-supervised ones' k-NN accuracy."""
    key = "test_accuracy" if "test_accuracy" in metrics else "knn_accuracy"
    return key, float(metrics[key])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="*", help="recipe names (default: every recipe)")
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--out", type=Path, default=Path("runs/ddp-recipes"))
    parser.add_argument("--rtol", type=float, default=1e-3, help="largest relative loss difference allowed")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per training")
    args = parser.parse_args(argv)
    names = args.recipes or list(all_recipes())
    for name in names:
        if name not in all_recipes():
            parser.error(f"unknown recipe {name!r}; known: {', '.join(all_recipes())}")

    print("| recipe | steps | max rel. loss diff | final metric (1 proc / 2 proc) | 1 proc s | 2 proc s "
          "| not bitwise |")
    print("|---|---|---|---|---|---|---|")
    failed = []
    for name in names:
        row = []
        reasons, overrides = not_bitwise(name, args.preset)
        for processes in (1, 2):
            seconds, error = train(name, args.preset, args.out / f"{processes}proc" / name, processes, args.timeout,
                                   overrides)
            if error:
                failed.append(name)
                print(f"| {name} | {processes}-process run failed: {error.strip().splitlines()[-1]} ||||||", flush=True)
                break
            row.append((seconds, *read(args.out / f"{processes}proc" / name, name)))
        if len(row) < 2:
            continue
        (s1, loss1, m1), (s2, loss2, m2) = row
        if len(loss1) != len(loss2):
            failed.append(name)
            print(f"| {name} | {len(loss1)} vs {len(loss2)} logged steps ||||||", flush=True)
            continue
        diff = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(loss1, loss2, strict=True))
        key, v1 = final_metric(m1)
        _, v2 = final_metric(m2)
        if not diff <= args.rtol and "BatchNorm per shard" not in reasons:
            failed.append(name)
        why = ", ".join(reasons + [f"run with {o}" for o in overrides]) or "-"
        print(f"| {name} | {len(loss1)} | {diff:.2e} | {key} {v1:.4f} / {v2:.4f} | {s1:.0f} | {s2:.0f} | {why} |",
              flush=True)
    print(f"{len(names) - len(failed)} of {len(names)} recipes agree (preset {args.preset}, rtol {args.rtol:g})"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
