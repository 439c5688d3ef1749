import json

import pytest
import timm
import torch

from vislearn import from_timm, weights
from vislearn.models import max_abs_diff
from vislearn.vit import VisionTransformer, ViTConfig

from .conftest import randomize_

CFG = ViTConfig(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=3)


def saved(tmp_path, name="tiny"):
    model = randomize_(VisionTransformer(CFG))
    weights.save(model, name, arch="vit", config=CFG.to_dict(), recipe="vit_fmnist", preset="smoke",
                 metrics={"test_accuracy": 0.5}, root=tmp_path)
    return model


def test_roundtrip_and_manifest(tmp_path):
    model = saved(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    e = manifest["tiny"]
    assert e["sha256"] == weights.sha256_of(tmp_path / "tiny.safetensors") and len(e["sha256"]) == 64
    assert (e["recipe"], e["preset"], e["metrics"], e["arch"]) == ("vit_fmnist", "smoke", {"test_accuracy": 0.5}, "vit")
    loaded = weights.load("tiny", root=tmp_path)
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(loaded(x), model.eval()(x))
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files


def test_history_roundtrip_and_missing(tmp_path):
    from vislearn.results import write_json_atomic

    write_json_atomic(weights.history_path("tiny", tmp_path), {"steps": [{"step": 1}], "evals": [], "seconds": 2.0})
    assert weights.read_history("tiny", tmp_path)["steps"] == [{"step": 1}]
    with pytest.raises(weights.CheckpointError, match="no training history"):
        weights.read_history("other", tmp_path)


def test_second_save_keeps_other_entries(tmp_path):
    saved(tmp_path, "a")
    saved(tmp_path, "b")
    assert set(weights.read_manifest(tmp_path)) == {"a", "b"}


def test_corrupt_file_is_a_clear_error(tmp_path):
    saved(tmp_path)
    path = tmp_path / "tiny.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(weights.CheckpointError, match=r"corrupt.*python -m vislearn.train vit_fmnist --preset smoke"):
        weights.load("tiny", root=tmp_path)


def test_missing_file_and_unknown_name(tmp_path):
    saved(tmp_path)
    (tmp_path / "tiny.safetensors").unlink()
    with pytest.raises(weights.CheckpointError, match="missing. Rebuild it with: python -m vislearn.train"):
        weights.load("tiny", root=tmp_path)
    with pytest.raises(weights.CheckpointError, match="no checkpoint named 'nope'.*known: tiny"):
        weights.load("nope", root=tmp_path)


def test_no_pickle_in_library():
    import pathlib

    import vislearn

    for path in pathlib.Path(vislearn.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "torch.load(" not in text and "import pickle" not in text, path.name


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
    import time

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
        assert (weights.BUNDLED_DIR / e["file"]).exists(), name
