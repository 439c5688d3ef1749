"""Tiny trainings that ``tests/train/test_distributed.py`` runs in one process and under torchrun.

    python -m torch.distributed.run --nproc-per-node 2 tests/train/ddp_worker.py KIND OUT

Each process writes ``OUT/KIND-rank<r>.json`` (losses, metrics, world size) and
``OUT/KIND-rank<r>.safetensors`` (its final weights); the test compares them with the same KIND
run in one process. KIND: fit, dino, recipe (``run`` into ``OUT/checkpoints``), fail (rank 1 dies),
killed (rank 1 dies at step 8 of a run with a periodic checkpoint every 3 steps), collectives (SwAV's
Sinkhorn and PAWS's soft nearest neighbours on each rank's half of a batch), deepcluster (2 epochs).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import TensorDataset

from vislearn.data.augment import MultiCropConfig
from vislearn.methods import dino as D
from vislearn.methods import dino_training as T
from vislearn.models.vit import VisionTransformer, ViTConfig
from vislearn.train import Recipe, TrainConfig, distributed, fit, run

TINY = dict(img_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=16, depth=1, num_heads=2)
FIT = TrainConfig(epochs=2, batch_size=8, lr=1e-2, warmup_epochs=0.5, augment=True, log_every=1, eval_every=1.0)
RESUMED = replace(FIT, log_every=4)   # 8 steps, logged at 4 and 8: a checkpoint at 6 holds 2 unlogged losses


def tiny_data(split: str, limit: int | None = None, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed({"train": 1, "test": 2}[split])
    n = {"train": 32, "test": 12}[split] if limit is None else limit
    y = torch.randint(0, 3, (n,), generator=g)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float(), y)


@contextmanager
def recording_wraps() -> Iterator[list[str]]:
    """The type names of what ``distributed.wrap`` returned while the block ran (the training loops call it)."""
    made, original = [], distributed.wrap

    def wrap(module, device="cpu"):
        made.append(type(wrapped := original(module, device)).__name__)
        return wrapped

    distributed.wrap = wrap
    try:
        yield made
    finally:
        distributed.wrap = original


def run_fit(out: Path) -> tuple[dict, dict]:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(**TINY))
    with recording_wraps() as wrappers:
        hist = fit(model, tiny_data("train"), tiny_data("test"), FIT, seed=3, progress=False)
    return {"losses": [s["loss"] for s in hist.steps], "evals": hist.evals, "wrappers": wrappers}, model.state_dict()


class RecordingLoss(T.DINOLoss):
    """DINOLoss that remembers itself, so the test can read the final centre."""

    made: list[T.DINOLoss] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        RecordingLoss.made.append(self)


def tiny_dino(log_every: int = 1) -> tuple[D.DINO, torch.Tensor, T.DINOConfig]:
    """A DINO of a 1-block ViT, 24 images of 16x16, its config: 6 steps of 8 images."""
    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(**{**TINY, "in_chans": 3, "img_size": 16, "num_classes": 0}))
    dino = D.DINO(vit, out_dim=8, hidden_dim=16, bottleneck_dim=4)
    cfg = T.DINOConfig(epochs=2, batch_size=8, out_dim=8, warmup_epochs=0.5, log_every=log_every,
                       momentum_teacher=0.9, freeze_last_layer_epochs=0.5,
                       crops=MultiCropConfig(global_size=16, local_size=8, n_local=2))
    return dino, torch.randn(24, 3, 16, 16, generator=torch.Generator().manual_seed(5)), cfg


def train_tiny_dino(dino: D.DINO, images: torch.Tensor, cfg: T.DINOConfig) -> tuple[T.DINOHistory, torch.Tensor]:
    """``train_dino`` (seed 4); returns its history and final centre."""
    original, T.DINOLoss = T.DINOLoss, RecordingLoss    # the loop builds its loss from this module's name
    try:
        hist = T.train_dino(dino, images, cfg, seed=4, progress=False)
    finally:
        T.DINOLoss = original
    return hist, RecordingLoss.made[-1].center


def run_dino(out: Path) -> tuple[dict, dict]:
    dino, images, cfg = tiny_dino()
    with recording_wraps() as wrappers:
        hist, center = train_tiny_dino(dino, images, cfg)
    return ({"steps": hist.steps, "center": center.flatten().tolist(), "wrappers": wrappers},
            {**dino.state_dict(), "center": center})


def run_recipe(out: Path) -> tuple[dict, dict]:
    recipe = Recipe("tiny", "vit", TINY, {"smoke": FIT}, notebook="none", data=tiny_data)
    trained = run(recipe, "smoke", out=out / "checkpoints", device="cpu", progress=False)
    return {"metrics": trained.metrics, "entry": trained.entry}, trained.model.state_dict()


def failing_recipe(fail_at_step: int | None, cfg: TrainConfig = FIT, on_rank: int = 1) -> Recipe:
    """The tiny recipe whose loss raises on rank ``on_rank`` at step ``fail_at_step`` (None: never)."""
    calls = []

    def loss_fn(model, x, y):
        calls.append(1)
        if distributed.rank() == on_rank and len(calls) == fail_at_step:
            raise RuntimeError(f"rank {on_rank} was told to fail")
        return torch.nn.functional.cross_entropy(model(x), y)

    return Recipe("tiny", "vit", TINY, {"smoke": cfg}, notebook="none", data=tiny_data,
                  make_loss=lambda device: loss_fn)


def run_fail(out: Path) -> tuple[dict, dict]:
    """Rank 1 dies at its third step; nothing may be saved."""
    trained = run(failing_recipe(3), "smoke", out=out / "checkpoints", device="cpu", progress=False)
    return {"metrics": trained.metrics}, trained.model.state_dict()


def run_killed(out: Path) -> tuple[dict, dict]:
    """Rank 1 dies at step 8; rank 0 wrote the periodic checkpoint of step 6."""
    trained = run(failing_recipe(8, RESUMED), "smoke", out=out / "checkpoints", device="cpu", progress=False,
                  checkpoint_every=3)
    return {"metrics": trained.metrics}, trained.model.state_dict()


def collective_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed global batch: Sinkhorn scores (8, 5), PAWS queries (6, 4), supports (6, 4), their labels (6, 3)."""
    g = torch.Generator().manual_seed(7)
    scores, query = torch.randn(8, 5, generator=g), torch.randn(6, 4, generator=g)
    return scores, query, torch.randn(6, 4, generator=g), torch.eye(3)[torch.tensor([0, 0, 1, 1, 2, 2])]


def run_collectives(out: Path) -> tuple[dict, dict]:
    """SwAV's Sinkhorn and PAWS's soft nearest neighbours on this rank's half of the global batch."""
    from vislearn.methods.paws import snn
    from vislearn.methods.swav import sinkhorn

    scores, query, supports, labels = collective_inputs()
    codes = sinkhorn(distributed.shard(scores), 0.05, 3)                    # (4, 5): this rank's samples
    probs = snn(distributed.shard(query), distributed.shard(supports), labels)   # supports gathered from both
    return {}, {"codes": codes, "probs": probs}


def run_deepcluster(out: Path) -> tuple[dict, dict]:
    """DeepCluster for 2 epochs on 24 images: the ranks must cluster alike and end with the same weights."""
    from vislearn.methods.deepcluster_training import DeepCluster, DeepClusterConfig, train_deepcluster

    torch.manual_seed(0)
    cfg = DeepClusterConfig(epochs=2, batch_size=8, clusters=3, hidden_dim=16, pca_dim=8, kmeans_iters=5,
                            log_every=1, crops=MultiCropConfig(global_size=16, n_local=0))
    vit = VisionTransformer(ViTConfig(**{**TINY, "in_chans": 3, "img_size": 16, "num_classes": 0}))
    model = DeepCluster(vit, cfg)
    images = torch.randn(24, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    hist = train_deepcluster(model, images, cfg, labels=torch.arange(24) % 3, seed=1, progress=False)
    return {"steps": hist.steps, "evals": hist.evals}, model.state_dict()


KINDS = {"collectives": run_collectives, "deepcluster": run_deepcluster, "fit": run_fit, "dino": run_dino,
         "recipe": run_recipe, "fail": run_fail, "killed": run_killed}


def main(kind: str, out: str) -> None:
    torch.set_num_threads(1)
    out_dir = Path(out)
    with distributed.process_group("cpu"):
        result, state = KINDS[kind](out_dir)
        rank, world = distributed.rank(), distributed.world_size()
    result["world_size"] = world
    (out_dir / f"{kind}-rank{rank}.json").write_text(json.dumps(result))
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(out_dir / f"{kind}-rank{rank}.safetensors"))


if __name__ == "__main__":
    main(*sys.argv[1:])
