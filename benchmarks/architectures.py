"""Images per second of LeViT, ResMLP, ConViT and PatchConvNet vs notebook 01's ViT, at about the same size.

Every model is sized near the ViT of notebook 01 (``vit_fmnist``: 7 x 7 patches, D = 64, 6 blocks,
about 0.21 M parameters) and fed Fashion-MNIST-shaped batches (1 x 28 x 28, 10 classes). Two numbers
per model, measured in one run: inference (eval mode, no gradients) and training (forward, backward
and an AdamW step, train mode). Timing alternates between the models in rounds, so a background load
or a CPU clock change hits them alike; each number is the median over the rounds, and the ratio is
model / ViT.

    python benchmarks/architectures.py --threads 1            # the table in the report
    python benchmarks/architectures.py --device cuda --batch 512
"""

from __future__ import annotations

import argparse

import torch

from vislearn.config import resolve_device
from vislearn.course.arch_viz import throughput
from vislearn.models.convit import ConViT
from vislearn.models.levit import LeViT
from vislearn.models.patchconvnet import PatchConvNet
from vislearn.models.resmlp import ResMLP
from vislearn.models.vit import VisionTransformer
from vislearn.recipes import nb09_architectures as nb09
from vislearn.recipes.nb01_vit import VIT_FMNIST

# name -> model factory: the configs of the bundled recipes (0.20-0.23 M parameters on Fashion-MNIST)
MODELS = {
    "ViT (notebook 01)": lambda: VisionTransformer(VIT_FMNIST),
    "LeViT": lambda: LeViT(nb09.LEVIT),
    "ResMLP": lambda: ResMLP(nb09.RESMLP),
    "ConViT": lambda: ConViT(nb09.CONVIT),
    "PatchConvNet": lambda: PatchConvNet(nb09.PATCHCONVNET),
}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=3, help="timed steps per model per round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    models = {name: make().to(device) for name, make in MODELS.items()}
    speed = throughput(models, x, y, steps=args.steps, rounds=args.rounds)   # the notebook's own timer
    base = speed[next(iter(models))]
    rows = [{"model": name, "params": sum(q.numel() for q in model.parameters()),
             "infer": speed[name]["infer"], "train": speed[name]["train"],
             "infer_ratio": speed[name]["infer"] / base["infer"], "train_ratio": speed[name]["train"] / base["train"]}
            for name, model in models.items()]
    print(f"device {device}, {torch.get_num_threads()} thread(s), batch {args.batch}, "
          f"{args.steps} steps x {args.rounds} rounds, 1 x 28 x 28 input\n")
    print("| model | params | infer img/s | train img/s | infer vs ViT | train vs ViT |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['params'] / 1e6:.3f} M | {r['infer']:,.0f} | {r['train']:,.0f} "
              f"| {r['infer_ratio']:.2f}x | {r['train_ratio']:.2f}x |")
    return rows


if __name__ == "__main__":
    main()
