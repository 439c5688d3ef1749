"""vislearn.train.resume: a run killed mid-way and resumed ends with the uninterrupted run's weights."""

from __future__ import annotations

import pytest
import torch

from vislearn.config import ParameterError
from vislearn.train import Recipe, run, weights
from vislearn.train.resume import Periodic, ResumeError, periodic, resume_path

from .ddp_worker import RESUMED as CFG
from .ddp_worker import TINY, tiny_data, tiny_dino, train_tiny_dino


class Killed(Exception):
    """Stands for the machine going down."""


def recipe(fail_at_step: int | None = None) -> Recipe:
    steps = []

    def loss_fn(model, x, y):
        steps.append(1)
        if len(steps) == fail_at_step:
            raise Killed(f"killed at step {fail_at_step}")
        return torch.nn.functional.cross_entropy(model(x), y)

    return Recipe("tiny", "vit", TINY, {"smoke": CFG}, notebook="none", data=tiny_data,
                  make_loss=lambda device: loss_fn)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    whole = run(recipe(), "smoke", out=tmp_path / "whole", device="cpu", progress=False)

    out = tmp_path / "killed"
    with pytest.raises(Killed):
        run(recipe(fail_at_step=8), "smoke", out=out, device="cpu", progress=False, checkpoint_every=3)
    assert [p.name for p in out.iterdir()] == [resume_path(out, "tiny").name]   # step 6's state, nothing else
    resumed = run(recipe(), "smoke", out=out, device="cpu", progress=False, checkpoint_every=3, resume_run=True)

    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)              # one process: bit for bit
    drop = {"seconds"}
    assert ({k: v for k, v in resumed.history.to_dict().items() if k not in drop}
            == {k: v for k, v in whole.history.to_dict().items() if k not in drop})
    assert [s["step"] for s in resumed.history.steps] == [4, 8] and len(resumed.history.evals) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json", resumed.entry["file"],
                                                            resumed.entry["history"]])   # periodic one removed
    assert torch.equal(weights.load("tiny", out).pos_embed, whole.model.pos_embed)


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    with pytest.raises(ResumeError, match="no periodic checkpoint .*run without --resume"):
        run(recipe(), "smoke", out=tmp_path, device="cpu", progress=False, resume_run=True)
    with pytest.raises(ParameterError, match="need --out"):
        run(recipe(), "smoke", device="cpu", progress=False, checkpoint_every=2)
    with pytest.raises(Killed):
        run(recipe(fail_at_step=3), "smoke", out=tmp_path, device="cpu", progress=False, checkpoint_every=2)
    with pytest.raises(ResumeError, match="belongs to another run"):
        run(recipe(), "smoke", out=tmp_path, device="cpu", progress=False, resume_run=True, seed=1)
    resume_path(tmp_path, "tiny").write_bytes(b"not safetensors")
    with pytest.raises(ResumeError, match="is not a periodic checkpoint"):
        run(recipe(), "smoke", out=tmp_path, device="cpu", progress=False, resume_run=True)


def test_a_killed_dino_run_resumes_to_the_same_student_teacher_and_centre(tmp_path):
    dino, images, cfg = tiny_dino(log_every=3)                 # 6 steps, logged at 3 and 6
    whole, whole_center = train_tiny_dino(dino, images, cfg)

    killed, _, _ = tiny_dino()
    calls, update = [], killed.update_teacher

    def update_then_die(momentum):
        calls.append(1)
        if len(calls) == 5:
            raise Killed("killed at step 5")
        update(momentum)

    killed.update_teacher = update_then_die
    path = tmp_path / ".dino.resume.safetensors"
    with periodic(Periodic(path, every=2)) as p, pytest.raises(Killed):
        train_tiny_dino(killed, images, cfg)
    assert p.used and path.is_file()                           # the state after step 4 (1 unlogged step)
    again, _, _ = tiny_dino()
    with periodic(Periodic(path, every=2, resume=True)):
        resumed, center = train_tiny_dino(again, images, cfg)
    a, b = dino.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and torch.equal(center, whole_center)
    strip = [{k: v for k, v in s.items() if k != "seconds"} for s in whole.steps]
    assert [{k: v for k, v in s.items() if k != "seconds"} for s in resumed.steps] == strip
