"""The README's two commands exist and CI runs the README's test command, so they cannot drift apart."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Two commands on a fresh machine.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_readme_has_exactly_two_commands_and_they_exist():
    commands = readme_commands()
    assert commands == ["bash scripts/course.sh", "bash scripts/test.sh"]
    for command in commands:
        assert (ROOT / command.split()[1]).is_file()


def test_ci_runs_the_readme_test_command():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert any(line.startswith(readme_commands()[1]) for line in ci_lines), ".ci/run must call the README's tests"


def test_every_notebook_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert f"(notebooks/{nb.name})" in readme, nb.name


def test_lab_script_opens_the_notebooks_and_adds_allow_root_only_as_root():
    """`bash scripts/lab.sh` is the README's way to open the course; as root JupyterLab needs --allow-root."""
    import os
    import subprocess

    assert "bash scripts/lab.sh" in (ROOT / "README.md").read_text()
    env = {**os.environ, "VISLEARN_JUPYTER": "echo", "VISLEARN_NO_APT": "1"}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "lab.sh"), "--no-browser"], env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=600, check=True).stdout.split()
    assert out[0] == "lab" and out[-2:] == [str(ROOT / "notebooks"), "--no-browser"]
    assert ("--allow-root" in out) == (os.geteuid() == 0)
