"""environment.yml (conda) and pyproject.toml (pip) must ask for the same packages.

Both install the course; a dependency added to one and forgotten in the other breaks one kind of
install only, which nobody notices until a learner does. The torch/torchvision caps are checked
on their own: the course must install where pip stops at torch 2.14.1 and torchvision 0.29.1.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
CAPS = {"torch": "2.14.1", "torchvision": "0.29.1"}


def normalize(name: str) -> str:
    """A distribution name as pip compares them: lowercase, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"]
    return [Requirement(line) for line in lines]


def environment_yml() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def conda_pip_requirements() -> list[Requirement]:
    """The pip: section of environment.yml, without the editable install of vislearn itself."""
    sections = [d["pip"] for d in environment_yml()["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml needs exactly one pip: section"
    return [Requirement(line) for line in sections[0] if not line.startswith("-e")]


def by_name(requirements: list[Requirement]) -> dict[str, SpecifierSet]:
    return {normalize(r.name): r.specifier for r in requirements}


def test_same_top_level_packages():
    pip_names, conda_names = set(by_name(pyproject_requirements())), set(by_name(conda_pip_requirements()))
    assert conda_names == pip_names, (f"only in pyproject.toml: {sorted(pip_names - conda_names)}; "
                                      f"only in environment.yml: {sorted(conda_names - pip_names)}")


def test_same_version_specifiers():
    pip_specs, conda_specs = by_name(pyproject_requirements()), by_name(conda_pip_requirements())
    different = {name: (str(spec), str(conda_specs.get(name))) for name, spec in pip_specs.items()
                 if conda_specs.get(name) != spec}
    assert not different, f"pyproject.toml vs environment.yml specifiers differ: {different}"


def test_conda_environment_basics():
    env = environment_yml()
    assert env["name"] == "vislearn"
    assert "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_section


def admits_above(spec: SpecifierSet, cap: str) -> list[str]:
    """Versions above ``cap`` that ``spec`` would accept (probing patch, minor, major and post bumps)."""
    major, minor, patch = Version(cap).release[:3]
    probes = [f"{major}.{minor}.{patch + 1}", f"{major}.{minor}.{patch + 10}", f"{major}.{minor + 1}.0",
              f"{major + 1}.0.0", f"{cap}.post1", f"{major}.{minor + 1}.0rc1"]
    return [v for v in probes if spec.contains(v, prereleases=True)]


@pytest.mark.parametrize("source", [pyproject_requirements, conda_pip_requirements])
@pytest.mark.parametrize("name, cap", sorted(CAPS.items()))
def test_torch_and_torchvision_are_capped(source, name, cap):
    found = [r for r in source() if normalize(r.name) == name]
    assert found, f"{name} is missing from {source.__name__}"
    for requirement in found:
        assert requirement.specifier.contains(cap), f"{requirement} must admit {name} {cap}"
        assert not admits_above(requirement.specifier, cap), (
            f"{requirement} admits {admits_above(requirement.specifier, cap)}; cap it at <={cap}")
        upper = [s for s in requirement.specifier if s.operator in ("<=", "<", "==", "~=", "===")]
        assert upper, f"{requirement} has no upper bound; cap it at <={cap}"
