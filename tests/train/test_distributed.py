"""vislearn.train.distributed: 2 gloo processes on the CPU train exactly as 1 process on the same global batch.

Each torchrun launch (``tests/train/ddp_worker.py``) takes a few seconds: 2 processes, 1 thread each,
a ViT of 2,675 parameters on 32 images of 8x8.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from vislearn.config import ParameterError
from vislearn.train import distributed, evaluate, weights
from vislearn.train.recipe import command_line, run
from vislearn.train.resume import resume_path

from . import ddp_worker

WORKER = Path(ddp_worker.__file__)
ROOT = WORKER.parents[2]
needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch build has no gloo backend for torch.distributed on the CPU")
REL = 1e-5                                                       # losses: same within float error


pytestmark = pytest.mark.usefixtures("one_thread")


def torchrun(kind: str, out: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_worker.py KIND OUT``."""
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(WORKER), kind, str(out)], capture_output=True, text=True, timeout=timeout,
                          env={**env, "OMP_NUM_THREADS": "1"}, cwd=ROOT)


def ranks(kind: str, out: Path) -> list[tuple[dict, dict[str, torch.Tensor]]]:
    return [(json.loads((out / f"{kind}-rank{r}.json").read_text()),
             load_file(str(out / f"{kind}-rank{r}.safetensors"))) for r in (0, 1)]


def max_rel(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) and a
    return max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b, strict=True))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= atol, f"weights differ by up to {worst:.2e}"


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict[str, Path]:
    """Every 2-process run of the module, launched once."""
    out = tmp_path_factory.mktemp("ddp")
    done = {}
    for kind in ("fit", "dino", "recipe", "collectives", "deepcluster"):
        result = torchrun(kind, out / kind)
        assert result.returncode == 0, result.stderr[-3000:]
        done[kind] = out / kind
    return done


# --- One process: nothing changes ----------------------------------------------------------------------


def test_one_process_helpers_are_no_ops():
    assert not distributed.launched() and not distributed.active()
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    x = torch.randn(6, 3)
    assert distributed.shard(x) is x and distributed.mean(x) is x and distributed.mean_floats([1.5]) == [1.5]
    assert distributed.check_batch(7) == 7 and distributed.any_true(False) is False and distributed.rank_label() == ""
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model) is model and distributed.unwrap(model) is model
    assert distributed.local_device(torch.device("cuda")) == torch.device("cuda")
    with distributed.process_group("cpu") as device:
        assert device == torch.device("cpu") and not distributed.active()


def test_the_global_batch_must_split_evenly(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    assert distributed.check_batch(12) == 4
    with pytest.raises(ParameterError, match=r"batch_size=8 must be a multiple of the 3 processes .* use e.g. 6"):
        distributed.check_batch(8)


def test_torchrun_environment_names_the_rank_and_the_gpu(monkeypatch):
    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    assert distributed.launched() and distributed.rank_label() == "rank 1 of 2: "
    assert distributed.local_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert distributed.local_device(torch.device("cpu")) == torch.device("cpu")


def test_the_recorded_command_says_torchrun():
    assert command_line("tiny", "smoke", "out", 0, {}) == "python -m vislearn.train tiny --preset smoke --out out"
    assert command_line("tiny", "smoke", "out", 0, {}, 2).startswith("torchrun --nproc-per-node 2 -m vislearn.train")


# --- Two processes on the CPU (gloo) -------------------------------------------------------------------


@needs_gloo
def test_fit_in_two_processes_matches_one_process(launched, tmp_path):
    one, one_state = ddp_worker.run_fit(tmp_path)
    (r0, s0), (r1, s1) = ranks("fit", launched["fit"])
    assert r0["world_size"] == r1["world_size"] == 2
    assert one["wrappers"] == ["VisionTransformer"] and r0["wrappers"] == ["DistributedDataParallel"]
    diff = max_rel(one["losses"], r0["losses"])
    print(f"fit: 1 vs 2 processes, {len(one['losses'])} steps, max relative loss difference {diff:.2e}")
    assert diff < REL and r0["losses"] == r1["losses"]            # the logged loss is the mean over ranks
    assert max_rel([e["test_loss"] for e in one["evals"]], [e["test_loss"] for e in r0["evals"]]) < REL
    assert [e["test_accuracy"] for e in one["evals"]] == [e["test_accuracy"] for e in r0["evals"]]
    assert_same_weights(s0, s1, atol=0.0)                       # the ranks stay identical
    assert_same_weights(one_state, s0, atol=2e-4)               # AdamW magnifies float error a little


@needs_gloo
def test_dino_in_two_processes_matches_one_process(launched, tmp_path):
    one, one_state = ddp_worker.run_dino(tmp_path)
    (r0, s0), (r1, s1) = ranks("dino", launched["dino"])
    assert one["wrappers"] == ["StudentViews"] and r0["wrappers"] == ["DistributedDataParallel"]
    keys = ("loss", "teacher_entropy", "teacher_batch_entropy", "kl", "center_norm", "grad_norm", "clipped")
    for key in keys:                                            # logged rounded to 5 decimals
        a, b = [s[key] for s in one["steps"]], [s[key] for s in r0["steps"]]
        assert all(abs(x - y) <= REL * abs(x) + 1e-5 for x, y in zip(a, b, strict=True)), (key, a, b)
    diff = max_rel([s["loss"] for s in one["steps"]], [s["loss"] for s in r0["steps"]])
    print(f"dino: 1 vs 2 processes, {len(one['steps'])} steps, max relative loss difference {diff:.2e}")
    assert r0["center"] == r1["center"]                         # the all-reduced centre is the same everywhere
    assert max(abs(x - y) for x, y in zip(one["center"], r0["center"], strict=True)) < 1e-6
    assert_same_weights(s0, s1, atol=0.0)                       # student and EMA teacher identical on both ranks
    assert_same_weights(one_state, s0, atol=2e-4)
    assert any(k.startswith("teacher.") for k in s0)


@needs_gloo
def test_sinkhorn_and_soft_nearest_neighbours_reduce_over_the_processes(launched):
    """Sinkhorn's sums and PAWS's supports span both processes: each rank's rows equal the one-process ones."""
    from vislearn.methods.paws import snn
    from vislearn.methods.swav import sinkhorn

    scores, query, supports, labels = ddp_worker.collective_inputs()
    codes, probs = sinkhorn(scores, 0.05, 3), snn(query, supports, labels)
    (_, s0), (_, s1) = ranks("collectives", launched["collectives"])
    torch.testing.assert_close(torch.cat([s0["codes"], s1["codes"]]), codes, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([s0["probs"], s1["probs"]]), probs, rtol=1e-5, atol=1e-6)


@needs_gloo
def test_deepcluster_clusters_alike_on_every_rank(launched):
    """Every rank clusters the same features the same way; DDP keeps the weights equal, with a new top
    layer (and a new wrapper) every epoch."""
    (r0, s0), (r1, s1) = ranks("deepcluster", launched["deepcluster"])

    def timeless(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert timeless(r0["evals"]) == timeless(r1["evals"]) and r0["evals"][1]["nmi_previous"] is not None
    assert r0["steps"] == r1["steps"] and len(r0["steps"]) == 6
    assert_same_weights(s0, s1, atol=0.0)


@needs_gloo
def test_only_rank_0_saves_and_the_checkpoint_loads_like_a_one_process_one(launched, tmp_path):
    out = launched["recipe"] / "checkpoints"
    (r0, s0), (r1, _) = ranks("recipe", launched["recipe"])
    e = weights.entry("tiny", out)
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json", e["file"], e["history"]])
    assert r0["entry"] == r1["entry"] == e and e["metrics"]["world_size"] == 2
    assert e["command"] == f"torchrun --nproc-per-node 2 -m vislearn.train tiny --preset smoke --out {out}"
    model = weights.load("tiny", out)
    assert_same_weights(model.state_dict(), s0, atol=0.0)
    one, _ = ddp_worker.run_recipe(tmp_path)                    # the same recipe in one process
    assert "world_size" not in one["metrics"] and one["entry"]["command"].startswith("python -m vislearn.train")
    single = weights.load("tiny", tmp_path / "checkpoints")
    assert_same_weights(single.state_dict(), model.state_dict(), atol=2e-4)
    test = ddp_worker.tiny_data("test")
    a, b = evaluate(single, test), evaluate(model, test)
    assert a["accuracy"] == b["accuracy"] == e["metrics"]["test_accuracy"]
    assert abs(a["loss"] - b["loss"]) < 1e-4


@needs_gloo
def test_a_rank_that_dies_ends_the_job_and_nothing_is_saved(tmp_path):
    result = torchrun("fail", tmp_path)
    assert result.returncode != 0
    assert "rank 1 was told to fail" in result.stderr
    root_cause = result.stderr[result.stderr.index("Root Cause"):]       # torchrun's summary names the rank
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", root_cause), root_cause
    assert list((tmp_path / "checkpoints").iterdir()) == []      # no checkpoint, history, manifest or temp file
    assert not list(tmp_path.glob("fail-rank*"))                # neither rank finished


@needs_gloo
def test_a_two_process_run_killed_mid_way_resumes_to_the_same_weights(tmp_path):
    """Killed under torchrun after rank 0's periodic checkpoint of step 6, resumed (here in one
    process: the global batch is the same) to the uninterrupted run's weights."""
    result = torchrun("killed", tmp_path / "killed")
    assert result.returncode != 0 and "rank 1 was told to fail" in result.stderr
    out = tmp_path / "killed" / "checkpoints"
    assert [p.name for p in out.iterdir()] == [resume_path(out, "tiny").name]    # no temp file, no manifest
    resumed = run(ddp_worker.failing_recipe(None, ddp_worker.RESUMED), "smoke", out=out, device="cpu",
                  progress=False, checkpoint_every=3, resume_run=True)
    whole = run(ddp_worker.failing_recipe(None, ddp_worker.RESUMED), "smoke", out=tmp_path / "whole", device="cpu",
                progress=False)
    assert_same_weights(whole.model.state_dict(), resumed.model.state_dict(), atol=2e-4)
    assert [s["step"] for s in resumed.history.steps] == [4, 8]
    assert max_rel([s["loss"] for s in whole.history.steps], [s["loss"] for s in resumed.history.steps]) < REL
    assert not resume_path(out, "tiny").exists() and weights.entry("tiny", out)["file"] == resumed.entry["file"]


@needs_gloo
def test_the_command_line_under_torchrun_names_the_rank_in_its_errors(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "vislearn.train", "vit_fmnist", "--preset", "smoke", "--set", "batch_size=7",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=180,
                          env={**env, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    assert done.returncode != 0
    for r in (0, 1):
        assert (f"rank {r} of 2: error: batch_size=7 must be a multiple of the 2 processes" in done.stderr), done.stderr
    assert list(tmp_path.iterdir()) == []
