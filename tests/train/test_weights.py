"""vislearn.train.weights: checkpoints that round-trip, errors that name the file and the fix, and saves
that never lose a good checkpoint (bad manifests, lower presets, interruptions, signals)."""

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest
import timm
import torch

from vislearn import from_timm
from vislearn.models.convert import max_abs_diff, randomize_
from vislearn.models.vit import VisionTransformer, ViTConfig
from vislearn.train import weights

CFG = ViTConfig(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=3)
HISTORY = {"steps": [{"step": 1, "loss": 1.0}], "evals": [], "seconds": 2.0}


def saved(tmp_path, name="tiny", preset="smoke", seed=0, **kw):
    model = randomize_(VisionTransformer(CFG), seed=seed)
    weights.save(model, name, arch="vit", config=CFG.to_dict(), recipe="vit_fmnist", preset=preset,
                 metrics={"test_accuracy": 0.5}, root=tmp_path, history=HISTORY, **kw)
    return model


def snapshot(folder):
    """Every file of a folder with its bytes: what a failed save must leave exactly as it was."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_roundtrip_manifest_history_and_modes(tmp_path):
    model = saved(tmp_path)
    e = json.loads((tmp_path / "manifest.json").read_text())["tiny"]
    path = tmp_path / e["file"]
    assert e["sha256"] == weights.sha256_of(path) and len(e["sha256"]) == 64
    assert e["file"] == f"tiny-{e['sha256'][:12]}.safetensors"          # named by content: never overwritten
    assert (e["recipe"], e["preset"], e["metrics"], e["arch"]) == ("vit_fmnist", "smoke", {"test_accuracy": 0.5}, "vit")
    assert weights.read_history("tiny", tmp_path) == HISTORY
    loaded = weights.load("tiny", root=tmp_path)
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(loaded(x), model.eval()(x))
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))   # no temporary files left
    umask = os.umask(0)
    os.umask(umask)
    for p in (path, weights.history_path("tiny", tmp_path)):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644 & ~umask, p            # an ordinary file, not 0600


def test_resave_replaces_the_old_files_and_keeps_other_entries(tmp_path):
    saved(tmp_path, "a")
    saved(tmp_path, "b")
    first = weights.entry("a", tmp_path)["file"]
    saved(tmp_path, "a", seed=1)
    assert set(weights.read_manifest(tmp_path)) == {"a", "b"}
    second = weights.entry("a", tmp_path)["file"]
    assert second != first and not (tmp_path / first).exists()              # the replaced version is gone
    files = {p.name for p in tmp_path.iterdir()}
    assert files == {"manifest.json", second, weights.entry("a", tmp_path)["history"],
                     weights.entry("b", tmp_path)["file"], weights.entry("b", tmp_path)["history"]}


def test_corrupt_file_is_a_clear_error(tmp_path):
    saved(tmp_path)
    path = tmp_path / weights.entry("tiny", tmp_path)["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(weights.CheckpointError, match=r"corrupt.*python -m vislearn.train vit_fmnist --preset smoke"):
        weights.load("tiny", root=tmp_path)


def test_missing_file_and_unknown_name(tmp_path):
    saved(tmp_path)
    (tmp_path / weights.entry("tiny", tmp_path)["file"]).unlink()
    with pytest.raises(weights.CheckpointError, match="missing. Rebuild it with: python -m vislearn.train"):
        weights.load("tiny", root=tmp_path)
    with pytest.raises(weights.CheckpointError, match="no checkpoint named 'nope'.*known: tiny"):
        weights.load("nope", root=tmp_path)


def _edit_manifest(tmp_path, change):
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _swap_weights(tmp_path, state):
    """Replace the checkpoint file by other content and make the manifest's sha256 agree with it."""
    from safetensors.torch import save_file

    path = tmp_path / weights.entry("tiny", tmp_path)["file"]
    if state is None:
        torch.save({"w": torch.zeros(2)}, path)                               # a pickle
    else:
        save_file(state, str(path))
    digest = weights.sha256_of(path)
    _edit_manifest(tmp_path, lambda m: m["tiny"].update(sha256=digest))


@pytest.mark.parametrize("damage, words", [
    (lambda p: (p / "manifest.json").write_text("{not json"), "manifest.json is not valid JSON"),
    (lambda p: (p / "manifest.json").write_text("[1, 2]"), "must hold a JSON object"),
    (lambda p: _edit_manifest(p, lambda m: m["tiny"].pop("sha256")), "'tiny' .* lacks sha256"),
    (lambda p: _edit_manifest(p, lambda m: m["tiny"].update(config="big")), "config that is not an object"),
    (lambda p: _edit_manifest(p, lambda m: m["tiny"]["config"].update(depth="two")), "does not build a 'vit' model"),
    (lambda p: weights.history_path("tiny", p).write_text("{oops"), "history .* is not valid JSON"),
    (lambda p: _swap_weights(p, None), "not a safetensors file.*never unpickles"),
    (lambda p: _swap_weights(p, {"w": torch.zeros(3)}), "holds weights of another model"),
])
def test_damaged_checkpoints_are_clear_errors(tmp_path, damage, words):
    saved(tmp_path)
    damage(tmp_path)
    with pytest.raises(weights.CheckpointError, match=words):
        weights.load("tiny", root=tmp_path)
        weights.read_history("tiny", root=tmp_path)


def test_a_folder_instead_of_a_file(tmp_path):
    saved(tmp_path)
    path = tmp_path / weights.entry("tiny", tmp_path)["file"]
    path.unlink()
    path.mkdir()
    with pytest.raises(weights.CheckpointError, match="is a folder"):
        weights.load("tiny", root=tmp_path)


def test_an_unreadable_manifest_stops_the_save_before_any_write(tmp_path):
    saved(tmp_path, preset="full")
    (tmp_path / "manifest.json").write_text("{truncated")
    before = snapshot(tmp_path)
    with pytest.raises(weights.CheckpointError, match="not valid JSON"):
        saved(tmp_path, seed=3, preset="full")
    assert snapshot(tmp_path) == before


def test_a_lower_preset_does_not_replace_a_bigger_one_without_force(tmp_path):
    saved(tmp_path, preset="full")
    before = snapshot(tmp_path)
    with pytest.raises(weights.CheckpointError, match=r"preset 'full' \(test_accuracy 0.5\).*--force"):
        saved(tmp_path, seed=1, preset="smoke")
    assert snapshot(tmp_path) == before
    saved(tmp_path, seed=1, preset="smoke", force=True)
    assert weights.entry("tiny", tmp_path)["preset"] == "smoke"
    saved(tmp_path, seed=2, preset="full")                      # a bigger (or equal) preset needs no flag


def test_out_that_is_a_file_or_not_writable(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(weights.CheckpointError, match="is a file, not a folder"):
        weights.check_writable(tmp_path / "afile")
    if os.geteuid() != 0:                                       # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(weights.CheckpointError, match="cannot write checkpoints"):
            weights.check_writable(ro)


@pytest.mark.parametrize("fail_at", ["history", "manifest"])
def test_an_error_between_the_writes_leaves_the_previous_checkpoint(tmp_path, monkeypatch, fail_at):
    saved(tmp_path, preset="full")
    before = snapshot(tmp_path)
    real = weights.write_json_atomic

    def failing(path, data):
        if (fail_at == "manifest") == (path.name == "manifest.json"):
            raise KeyboardInterrupt                             # Ctrl-C at the worst moment
        real(path, data)

    monkeypatch.setattr(weights, "write_json_atomic", failing)
    with pytest.raises(KeyboardInterrupt):
        saved(tmp_path, seed=5, preset="full")
    assert snapshot(tmp_path) == before                        # nothing new, nothing lost
    monkeypatch.undo()
    assert weights.load("tiny", root=tmp_path) is not None


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from vislearn.models.vit import VisionTransformer, ViTConfig
    from vislearn.train import weights
    root, ready = Path(sys.argv[1]), Path(sys.argv[2])
    real = weights.write_json_atomic
    def slow(path, data):
        if path.name == "manifest.json":
            ready.write_text("between the weights and the manifest")
            time.sleep(60)                                      # the signal arrives here
        real(path, data)
    weights.write_json_atomic = slow
    cfg = ViTConfig(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=3)
    weights.save(VisionTransformer(cfg), "tiny", arch="vit", config=cfg.to_dict(), recipe="vit_fmnist",
                 preset="full", metrics={}, root=root, history={"steps": [], "evals": []})
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_signal_between_the_writes_leaves_a_consistent_folder(tmp_path, sig):
    """A real signal to a real process, sent while the new weights are on disk but the manifest is not."""
    model = saved(tmp_path, preset="full")
    manifest_before = (tmp_path / "manifest.json").read_bytes()
    ready = tmp_path.parent / f"ready-{sig}"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(ready)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not ready.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the child never reached the dangerous moment"
    child.send_signal(sig)
    child.wait(timeout=30)
    assert (tmp_path / "manifest.json").read_bytes() == manifest_before        # the old entry is still the truth
    loaded = weights.load("tiny", root=tmp_path)                               # and it loads, sha256 checked
    x = torch.randn(1, 1, 16, 16)
    assert torch.equal(loaded(x), model.eval()(x))
    assert weights.read_history("tiny", tmp_path) == HISTORY


def test_no_pickle_in_library():
    import pathlib

    import vislearn

    for path in pathlib.Path(vislearn.__file__).parent.rglob("*.py"):
        text = path.read_text()
        assert "torch.load(" not in text and "import pickle" not in text, path


def test_hub_weights_from_a_local_file(tmp_path):
    """The weights='hub' path, offline: timm loads 'published' weights from a local file we wrote."""
    from safetensors.torch import save_file

    kw = dict(img_size=32)  # keep the published 1000-class head: timm re-initializes a resized one
    reference = randomize_(timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw), seed=4)
    path = tmp_path / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    hub = weights.hub_model("vit_tiny_patch16_224", file=path, **kw)
    assert max_abs_diff(hub, reference.eval()) == 0.0
    assert max_abs_diff(from_timm(hub), hub) <= 1e-5


def test_hub_unavailable_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(weights, "hub_reachable", lambda: True)  # get past the probe: timm itself refuses
    with pytest.raises(weights.HubUnavailable, match="could not load published weights for 'no_such_vit'"):
        weights.hub_model("no_such_vit")


def test_offline_hub_fails_fast_with_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not weights.hub_reachable()
    start = time.perf_counter()
    with pytest.raises(weights.HubUnavailable, match="not reachable from this machine"):
        weights.hub_model("vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    assert time.perf_counter() - start < 1.0


def test_bundled_manifest_entries_are_consistent():
    manifest = weights.read_manifest()
    for name, e in manifest.items():
        for key in ("file", "sha256", "recipe", "preset", "metrics", "date", "arch", "config"):
            assert key in e, (name, key)
        assert weights.sha256_of(weights.BUNDLED_DIR / e["file"]) == e["sha256"], name
        assert weights.read_history(name)["steps"], name
        assert weights.rebuild_command(e).startswith(f"python -m vislearn.train {name} --preset {e['preset']}"), name
