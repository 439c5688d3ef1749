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
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from vislearn.config import resolve_device
from vislearn.models.convit import ConViT, ConViTConfig
from vislearn.models.levit import LeViT, LeViTConfig
from vislearn.models.patchconvnet import PatchConvNet, PatchConvNetConfig
from vislearn.models.resmlp import ResMLP, ResMLPConfig
from vislearn.models.vit import VisionTransformer
from vislearn.recipes.nb01_vit import VIT_FMNIST

# name -> model factory; sizes chosen so every model has 0.20-0.23 M parameters on Fashion-MNIST
MODELS = {
    "ViT (notebook 01)": lambda: VisionTransformer(VIT_FMNIST),
    "LeViT": lambda: LeViT(LeViTConfig(embed_dim=(32, 48, 64), num_heads=(2, 3, 4), depth=(2, 2, 2), key_dim=16)),
    "ResMLP": lambda: ResMLP(ResMLPConfig(embed_dim=64, depth=6, mlp_ratio=4.0)),
    "ConViT": lambda: ConViT(ConViTConfig(embed_dim=64, depth=6, num_heads=4, mlp_ratio=2.0, local_up_to_layer=4)),
    "PatchConvNet": lambda: PatchConvNet(PatchConvNetConfig(embed_dim=80, depth=6)),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def images_per_second(step, batch: int, steps: int, device: torch.device) -> float:
    """Run ``step`` once to warm up, then ``steps`` times; images per second."""
    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def make_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    @torch.no_grad()
    def infer():
        model.eval()
        model(x)

    def train():
        model.train()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return infer, train


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
    steps = {name: make_steps(m, x, y) for name, m in models.items()}
    infer = {name: [] for name in models}
    train = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, (inf, tr) in steps.items():
            infer[name].append(images_per_second(inf, args.batch, args.steps, device))
            train[name].append(images_per_second(tr, args.batch, args.steps, device))
    rows = []
    base_i, base_t = (statistics.median(d[next(iter(models))]) for d in (infer, train))
    for name, model in models.items():
        i, t = statistics.median(infer[name]), statistics.median(train[name])
        rows.append({"model": name, "params": sum(q.numel() for q in model.parameters()),
                     "infer": i, "train": t, "infer_ratio": i / base_i, "train_ratio": t / base_t})
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
