"""The dependency directions of ../shared/DESIGN.md, checked on the source (every import, also inside functions).

search_spaces: data only (no ray, torch, optuna, mlflow, no other project package): the bottom
layer every package may import (trainables takes the metric names from search_spaces.metric_names);
trainables: never study/analysis, and ray only in the adapter package trainables/tune/;
study: never analysis, and ray only through trainables.tune;
analysis: never ray, torch or the model code (trainables) or study.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RAY_ADAPTER = "trainables/tune/"

FORBIDDEN = {
    "search_spaces": {"ray", "torch", "torchvision", "optuna", "mlflow", "numpy", "trainables", "study", "analysis"},
    "trainables": {"study", "analysis"},
    "study": {"analysis", "ray", "torch", "torchvision"},
    "analysis": {"ray", "torch", "torchvision", "trainables", "study"},
}


def imported_roots(path: Path) -> dict[str, int]:
    """Top-level module name -> first line importing it (absolute imports; relative ones stay in the package)."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            found.setdefault(name, node.lineno)
            found.setdefault(name.split(".")[0], node.lineno)
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_directions(package):
    violations = []
    for path in sources(package):
        rel = path.relative_to(ROOT).as_posix()
        forbidden = set(FORBIDDEN[package])
        if package == "trainables" and not rel.startswith(RAY_ADAPTER):
            forbidden.add("ray")
            forbidden.add("trainables.tune")
        for name, line in imported_roots(path).items():
            if name in forbidden:
                violations.append(f"{rel}:{line} imports {name}")
    assert not violations, "\n".join(violations)


def test_checker_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    import ray.tune\n    from torch import nn\n")
    roots = imported_roots(sample)
    assert roots["ray"] == 2 and roots["torch"] == 3 and roots["torch.nn"] == 3


def test_ray_adapter_is_the_only_ray_importer():
    importers = [p.relative_to(ROOT).as_posix() for pkg in FORBIDDEN for p in sources(pkg)
                 if "ray" in imported_roots(p)]
    assert importers and all(p.startswith(RAY_ADAPTER) for p in importers), importers


def test_ray_adapter_import_has_no_side_effects():
    """Importing the adapter changes no environment variable beyond what importing Ray does
    (connect() sets the driver's)."""
    import subprocess
    import sys

    code = ("import os, ray.tune, ray.tune.search.optuna; before = dict(os.environ); import trainables.tune.tuner, trainables.tune.trainable; "
            "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)); "
            "print(changed)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_drivers_ray_adapter_does_not_import_torch():
    """The driver imports the Tuner's module before any trial runs: torch loads in the trials."""
    import subprocess
    import sys

    code = "import sys, trainables.tune.tuner; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def _architecture() -> str:
    return (ROOT / "docs" / "architecture.md").read_text()


def test_the_architecture_picture_says_what_the_imports_do():
    """docs/architecture.md's may-import block: every import of one of our packages is one it lists."""
    import re

    block = re.search(r"```may-import\n(.*?)```", _architecture(), re.S).group(1)
    allowed = {line.split(":")[0]: {p.strip() for p in line.split(":")[1].split(",") if p.strip()}
               for line in block.strip().splitlines()}
    assert set(allowed) == set(FORBIDDEN)
    ours = set(FORBIDDEN)
    violations = []
    for package, may in allowed.items():
        for path in sources(package):
            for name, line in imported_roots(path).items():
                if name in ours and name != package and name not in may:
                    violations.append(f"{path.relative_to(ROOT)}:{line} imports {name}, not in docs/architecture.md")
    assert not violations, "\n".join(violations)
    for package, banned in FORBIDDEN.items():
        assert not (allowed[package] & banned), package  # the picture and the forbidden table agree


def test_every_place_the_architecture_names_exists():
    import re

    table = _architecture().split("Where each idea lives", 1)[1].split("\n\n", 2)[1]
    paths = re.findall(r"`([\w/]+(?:\.py)?/?)`", table)
    assert len(paths) >= 10 and [p for p in paths if not (ROOT / p).exists()] == []
