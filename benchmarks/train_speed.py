"""Training steps per second of vislearn's ViT vs timm's VisionTransformer at the same config.

Both models get the same weights (ours is converted with ``from_timm``), the same batches, the
same optimizer. Timing alternates between the two in rounds, so a background load or a CPU clock
change hits both alike; the reported ratio is ours / timm of the median steps/s.

    python benchmarks/train_speed.py                      # notebook 01's ViT on Fashion-MNIST-sized input
    python benchmarks/train_speed.py --img-size 224 --patch-size 16 --embed-dim 192 --depth 12 --heads 3 \
        --in-chans 3 --batch 32 --device cuda             # ViT-Tiny
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer as TimmViT

from vislearn import from_timm
from vislearn.config import resolve_device


def steps_per_second(model, opt, x, y, steps: int, device: torch.device) -> float:
    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (allocations, kernel selection)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--img-size", type=int, default=28)
    p.add_argument("--patch-size", type=int, default=4)
    p.add_argument("--in-chans", type=int, default=1)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--mlp-ratio", type=float, default=2.0)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    timm_model = TimmViT(img_size=args.img_size, patch_size=args.patch_size, in_chans=args.in_chans, num_classes=10,
                         embed_dim=args.embed_dim, depth=args.depth, num_heads=args.heads, mlp_ratio=args.mlp_ratio)
    ours = from_timm(timm_model)
    models = {"vislearn": ours.to(device).train(), "timm": timm_model.to(device).train()}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    x = torch.randn(args.batch, args.in_chans, args.img_size, args.img_size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    rates = {k: [] for k in models}
    for r in range(args.rounds):
        order = list(models) if r % 2 == 0 else list(models)[::-1]  # alternate who goes first
        for k in order:
            rates[k].append(steps_per_second(models[k], opts[k], x, y, args.steps, device))
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["vislearn"] / med["timm"]
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"config: img {args.img_size}, patch {args.patch_size}, D={args.embed_dim}, depth {args.depth}, "
          f"heads {args.heads}, batch {args.batch}; {args.rounds} rounds x {args.steps} steps")
    for k in models:
        print(f"  {k:9s} {med[k]:7.2f} steps/s  ({med[k] * args.batch:8.0f} img/s)  rounds: "
              + " ".join(f"{v:.1f}" for v in rates[k]))
    print(f"ratio vislearn/timm = {ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
