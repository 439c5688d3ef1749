"""The package's shape: modules a reader can take in, imports that flow one way, a quick ``import vislearn``."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vislearn"
MAX_LINES = 400
# The layers of DESIGN.md: a module may import its own layer and the ones before it, never a later one.
LAYERS = ["config", "results", "data", "models", "train", "methods", "analysis", "recipes", "course"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every vislearn module imported anywhere in the file, function bodies included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vislearn")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("vislearn"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names}     # `from . import x` may name a module
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def graph() -> dict[str, set[str]]:
    return {m: {t for t in imports_of(p) if t in MODULES and t != m} for m, p in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_400_lines(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it (see CONTRIBUTING.md)"


def test_no_import_loop_even_inside_functions():
    edges = graph()
    # a package's __init__ is imported with each of its modules; count that edge too
    for m in MODULES:
        parent = m.rsplit(".", 1)[0]
        if parent in MODULES and parent != m and not m.endswith("__main__"):
            edges[m] = edges[m] | {parent}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                loop = path[path.index(t):] + [t]
                if not all(x == loop[0] or x.startswith(loop[0] + ".") or loop[0].startswith(x) for x in loop):
                    raise AssertionError("import loop: " + " -> ".join(loop))
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else -1


def test_imports_point_up_the_layers():
    """data flows down DESIGN's list of layers; a module imports only its layer and earlier ones.
    Entry points (``__main__``) and the package's lazy ``__init__`` may reach anything."""
    bad = []
    for m, targets in graph().items():
        if m == "vislearn" or m.endswith("__main__"):
            continue
        bad += [f"{m} -> {t}" for t in targets if layer(t) > layer(m)]
    assert not bad, bad


def test_import_vislearn_is_light():
    """``import vislearn`` loads no torch and no timm (``vislearn --help`` answers at once); names load lazily."""
    code = ("import sys, vislearn; assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'heavy'; "
            "assert callable(vislearn.setup) and vislearn.from_timm.__module__ == 'vislearn.models.convert'; "
            "assert 'timm' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_every_public_name_resolves():
    import vislearn

    for name in vislearn._EXPORTS:
        assert getattr(vislearn, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vislearn.nope  # noqa: B018


def test_the_command_line_answers_without_torch():
    code = ("import sys; from vislearn.course import cli; assert cli.main(['list']) == 0; "
            "assert 'torch' not in sys.modules, 'vislearn list imported torch'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
