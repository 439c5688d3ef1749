"""``python -m vislearn.train`` / ``vislearn train``: every recipe, one line per error, nothing lost."""

import json
import shutil
import subprocess
import sys

import pytest

from vislearn.recipes import all_recipes
from vislearn.recipes.cli import main
from vislearn.train import weights


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "vislearn.train", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_list_names_every_recipe_with_its_notebook(capsys):
    assert main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(all_recipes())
    assert any(line.split()[:2] == ["dino_scenes", "05_dino_self_distillation"] for line in lines)
    assert any(line.split()[:2] == ["vit_fmnist", "01_vit_from_scratch"] for line in lines)


@pytest.mark.parametrize("args, words", [
    ([], "give a recipe name"),
    (["nope"], "recipe='nope' is not allowed; choose one of: 'vit_fmnist'"),
    (["vit_fmnist", "--preset", "huge"], "preset='huge' is not allowed"),
    (["vit_fmnist", "--device", "tpu"], "device='tpu' is not allowed"),
    (["vit_fmnist", "--seed", "x"], "--seed='x' must be an integer >= 0"),
    (["vit_fmnist", "--seed", "-1"], "--seed=-1 must be an integer >= 0"),
    (["vit_fmnist", "--seed", str(2**70)], "must be below 2\\*\\*63"),
    (["vit_fmnist", "--threads", "0"], "--threads=0 must be an integer >= 1"),
    (["vit_fmnist", "--set", "epochs"], "must look like KEY=VALUE"),
    (["vit_fmnist", "--set", "epoch=3"], "--set key='epoch' is not allowed"),
    (["vit_fmnist", "--set", "epochs=0"], "epochs=0 must be a positive number"),
    (["vit_fmnist", "--checkpoint-every", "-1"], "--checkpoint-every=-1 must be an integer >= 0"),
    (["vit_fmnist", "--preset", "smoke", "--resume"], "--checkpoint-every and --resume need --out"),
])
def test_usage_errors_are_one_line_and_exit_2(capsys, args, words):
    import re

    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(words, err), err


def test_an_out_that_is_a_file_fails_at_once(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["vit_fmnist", "--preset", "smoke", "--out", str(tmp_path / "afile")]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err


def test_resume_without_a_periodic_checkpoint_fails_at_once(tmp_path, capsys):
    assert main(["vit_fmnist", "--preset", "smoke", "--out", str(tmp_path), "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: no periodic checkpoint") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_smoke_run_does_not_replace_a_full_checkpoint(tmp_path, capsys):
    """The bundled vit_fmnist (full, 0.8932) copied into a folder: a smoke run there is refused, untouched."""
    e = weights.entry("vit_fmnist")
    shutil.copy(weights.BUNDLED_DIR / e["file"], tmp_path)
    shutil.copy(weights.history_path("vit_fmnist"), tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"vit_fmnist": e}))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert main(["vit_fmnist", "--preset", "smoke", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "trained with preset 'full' (test_accuracy 0.8932)" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_vislearn_train_dino_scenes_smoke_into_a_scratch_folder(tmp_path):
    """The walk of one recipe from the command line to its checkpoint file, for real (about 20 s)."""
    out = tmp_path / "scratch"
    done = subprocess.run([sys.executable, "-m", "vislearn", "train", "dino_scenes", "--preset", "smoke",
                           "--out", str(out), "--threads", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(done.stdout[done.stdout.index("\n{") + 1:])   # after the progress lines: the metrics
    e = weights.entry("dino_scenes", out)
    assert e["metrics"] == metrics and e["preset"] == "smoke" and e["arch"] == "vit"
    assert e["command"] == f"python -m vislearn.train dino_scenes --preset smoke --out {out}"
    assert metrics["train_scenes"] == 512 and 0 <= metrics["jaccard"] <= 1 and 0 <= metrics["knn_accuracy"] <= 1
    model = weights.load("dino_scenes", out)
    assert model.cfg.num_classes == 0                           # the teacher's backbone: features, no head
    history = weights.read_history("dino_scenes", out)
    assert history["steps"] and history["evals"] and "teacher_entropy" in history["steps"][0]


def test_ctrl_c_during_training_is_one_line_and_saves_nothing(tmp_path):
    import signal
    import threading
    import time

    proc = subprocess.Popen([sys.executable, "-m", "vislearn.train", "vit_fmnist", "--preset", "smoke", "--out",
                             str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.time() + 180
    while "training:" not in "".join(err) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert "training:" in "".join(err), "".join(err)[-2000:]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    text = "".join(err)
    assert proc.returncode == 130 and "Traceback" not in text and "interrupted: nothing was saved" in text
    assert not weights.read_manifest(tmp_path / "out")                  # the folder holds no checkpoint
