"""notes/: the scripts behind the tuning logs import the package normally and start (``--help``)."""

import subprocess
import sys
from pathlib import Path

import pytest

NOTES = Path(__file__).resolve().parents[1] / "notes"


@pytest.mark.parametrize("script", sorted(p.name for p in NOTES.glob("*.py")))
def test_a_notes_script_starts_and_names_its_provenance(script):
    path = NOTES / script
    assert "commit" in path.read_text().split('"""')[1], f"{script}: its docstring must name the commit of its numbers"
    assert "sys.path" not in path.read_text() and "torch.load(" not in path.read_text(), script
    done = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage" in done.stdout, done.stderr[-1000:]
