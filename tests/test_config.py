import random

import numpy as np
import pytest
import torch

from vislearn.config import (
    ParameterError,
    check_choice,
    check_int,
    resolve_device,
    resolve_preset,
    seed_everything,
    setup,
)


def test_resolve_preset_explicit_and_env(monkeypatch):
    assert resolve_preset("smoke") == "smoke"
    monkeypatch.setenv("VISLEARN_PRESET", "full")
    assert resolve_preset("auto") == "full"
    monkeypatch.setenv("VISLEARN_PRESET", "classroom")
    assert resolve_preset("auto") == "classroom"
    assert resolve_preset("smoke") == "smoke"  # an explicit value wins over the environment


def test_auto_preset_depends_on_cuda(monkeypatch):
    monkeypatch.delenv("VISLEARN_PRESET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_preset("auto") == "classroom"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_preset("auto") == "full"


def test_bad_preset_names_the_allowed_values(monkeypatch):
    with pytest.raises(ParameterError, match=r"preset='fast'.*'smoke', 'classroom', 'full'"):
        resolve_preset("fast")
    monkeypatch.setenv("VISLEARN_PRESET", "huge")
    with pytest.raises(ParameterError, match=r"VISLEARN_PRESET.*'huge'"):
        resolve_preset("auto")


def test_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ParameterError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ParameterError, match=r"'auto', 'cpu', 'cuda', 'mps'"):
        resolve_device("gpu")
    assert resolve_device("auto").type in ("cpu", "mps")


def test_seed_everything_is_reproducible():
    seed_everything(3)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(3)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b
    with pytest.raises(ParameterError):
        seed_everything(-1)


def test_checks():
    assert check_choice("x", 2, (1, 2)) == 2
    assert check_int("n", np.int64(4), minimum=1) == 4
    for bad in (1.5, "3", True):
        with pytest.raises(ParameterError, match="must be an integer"):
            check_int("n", bad)


def test_setup_prints_and_picks(capsys):
    cfg = setup(preset="smoke", device="cpu", seed=7)
    assert "preset=smoke" in capsys.readouterr().out
    assert (cfg.preset, cfg.device, cfg.seed) == ("smoke", torch.device("cpu"), 7)
    assert cfg.pick(smoke=1, classroom=2, full=3) == 1
    with pytest.raises(ParameterError, match="missing"):
        cfg.pick(smoke=1, classroom=2)


def test_setup_names_the_imported_checkout_and_warns_about_another(tmp_path, monkeypatch, capsys):
    import vislearn.config as config

    here = config.imported_checkout()
    assert (here / "vislearn" / "config.py").is_file()
    assert config.checkout_warning(here / "notebooks") is None                 # the notebook's own checkout
    assert config.checkout_warning(tmp_path) is None                           # not inside any checkout
    other = tmp_path / "clone"
    (other / "vislearn").mkdir(parents=True)
    (other / "vislearn" / "__init__.py").write_text("")
    (other / "pyproject.toml").write_text("")
    (other / "notebooks").mkdir()
    warning = config.checkout_warning(other / "notebooks")
    assert warning and str(other) in warning and str(here) in warning and "scripts/env.sh" in warning
    monkeypatch.chdir(other / "notebooks")
    setup(preset="smoke", device="cpu")
    out = capsys.readouterr().out
    assert f"vislearn={here}" in out and "WARNING: this notebook is in the checkout" in out


def test_parameter_error_renders_without_traceback():
    err = ParameterError("preset='x' is not allowed")
    assert err._render_traceback_() == ["\x1b[31mParameterError\x1b[0m: preset='x' is not allowed"]


@pytest.mark.parametrize("seed", [2**63, 2**70, -1, 1.5, "0"])
def test_bad_seeds_are_one_line_errors(seed):
    with pytest.raises(ParameterError, match=r"seed=.* must be an integer"):
        seed_everything(seed)
    with pytest.raises(ParameterError, match=r"seed=.* must be an integer"):
        setup(seed=seed, verbose=False)
    assert seed_everything(2**63 - 1) is not None                     # the largest torch accepts
