"""Estimate each notebook's full-preset training time on a GPU from measured FLOP counts (no GPU needed).

    python benchmarks/gpu_estimate.py                        # every recipe, grouped by notebook
    python benchmarks/gpu_estimate.py --tflops 20 --step-ms 5

For every recipe: the FLOPs of one training step of its full preset are *counted* (PyTorch's
``FlopCounterMode`` on one real-sized batch, which counts matrix products and convolutions, not
element-wise work, so it is a lower bound: forward and backward of the model; for DINO the
student on all crops and the teacher on the global ones; for a distilled student the teacher's
forward too), times the number of steps. The bundled checkpoint's measured CPU training time gives
the throughput the CPU reached on that work (GFLOP/s), a check that the counts are the work done.

The GPU time is an *estimate*, and says so: ``max(FLOPs / sustained throughput, steps x per-step
overhead)``. These models are tiny (D = 64), so a GPU is far from its peak: ``--tflops`` (default 20,
a few % of an H100/H200's dense bf16 peak) is what such small matrix products sustain, and
``--step-ms`` (default 4 ms: a few hundred kernel launches and the optimizer step) bounds a step from
below. Evaluation passes and data preparation are not counted. Replace both numbers with ones
measured on your GPU (``benchmarks/train_speed.py --device cuda``). The table in README.md
("Scaling up") was printed by this script at commit b5e8cd5.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vislearn.methods.dino import DINO
from vislearn.methods.dino_training import DINOConfig
from vislearn.models.convert import build
from vislearn.models.vit import VisionTransformer, ViTConfig
from vislearn.recipes import all_recipes
from vislearn.train import weights

FMNIST_TRAIN = 60_000


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def supervised_step_flops(recipe, batch: int) -> int:
    model = build(recipe.arch, recipe.model).train()
    cfg = recipe.model
    x = torch.randn(batch, cfg.get("in_chans", 1), cfg.get("img_size", 28), cfg.get("img_size", 28))
    y = torch.randint(0, cfg.get("num_classes", 10), (batch,))

    def step():
        F.cross_entropy(model(x), y).backward()

    flops = counted(step)
    if recipe.name.startswith("deit_fmnist_") and recipe.name != "deit_fmnist_none":     # a teacher's forward too
        teacher = build("convnet", weights.entry("convnet_fmnist")["config"]).eval()
        with torch.no_grad():
            flops += counted(lambda: teacher(x))
    return flops


def dino_step_flops(recipe, cfg: DINOConfig) -> int:
    dino = DINO(VisionTransformer(ViTConfig(**recipe.model)), cfg.out_dim, hidden_dim=cfg.hidden_dim,
                bottleneck_dim=cfg.bottleneck_dim)
    b, c = cfg.batch_size, cfg.crops
    crops = ([torch.randn(b, 3, c.global_size, c.global_size)] * 2
             + [torch.randn(b, 3, c.local_size, c.local_size)] * c.n_local)

    def step():
        dino.teacher_scores(crops[:2])
        sum(s.sum() for s in dino.student_scores(crops)).backward()

    return counted(step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tflops", type=float, default=20.0, help="sustained GPU TFLOP/s on these models")
    parser.add_argument("--step-ms", type=float, default=4.0, help="lower bound of one training step, ms")
    args = parser.parse_args()
    torch.set_num_threads(1)
    per_notebook: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    print(f"{'recipe':28s} {'steps':>7s} {'GFLOP/step':>10s} {'PFLOP':>7s} {'CPU s':>7s} {'CPU GFLOP/s':>11s} "
          f"{'GPU s (est.)':>12s}")
    for name, recipe in all_recipes().items():
        settings = recipe.config("full")
        if hasattr(settings, "train_scenes"):          # scenes recipes (notebook 05)
            n, cfg = settings.train_scenes + settings.extra_scenes, settings.train
        else:
            n, cfg = settings.train_limit or FMNIST_TRAIN, settings
        steps = round(cfg.epochs * (n // cfg.batch_size))
        is_dino = isinstance(cfg, DINOConfig)
        step = dino_step_flops(recipe, cfg) if is_dino else supervised_step_flops(recipe, cfg.batch_size)
        total = step * steps
        cpu = weights.entry(name)["metrics"].get("train_seconds") if name in weights.read_manifest() else None
        gpu = max(total / (args.tflops * 1e12), steps * args.step_ms / 1e3)
        print(f"{name:28s} {steps:7d} {step / 1e9:10.2f} {total / 1e15:7.2f} {cpu or float('nan'):7.0f} "
              f"{(total / cpu / 1e9) if cpu else float('nan'):11.1f} {gpu:12.0f}", flush=True)
        acc = per_notebook[recipe.notebook]
        acc[0] += total
        acc[1] += cpu or 0.0
        acc[2] += gpu
    print(f"\n{'notebook':28s} {'PFLOP':>7s} {'CPU min':>8s} {'GPU min (est.)':>14s}")
    for nb, (flops, cpu, gpu) in sorted(per_notebook.items()):
        print(f"{nb:28s} {flops / 1e15:7.2f} {cpu / 60:8.0f} {gpu / 60:14.1f}")


if __name__ == "__main__":
    main()
