"""tools/install.py and tools/constraints.txt agree with pyproject.toml, and the tests run on the pinned versions."""
import importlib.util
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _names(requirements: list[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", r).group(0)).lower() for r in requirements}


def test_every_requirement_is_pinned_and_checked():
    install = _load("install")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"] + project["optional-dependencies"]["test"])
    assert wanted == {install.canonical(n) for n in install.TOP_LEVEL}, "install.TOP_LEVEL = pyproject's requirements"
    pinned = install.pins()
    assert wanted <= set(pinned), f"not in tools/constraints.txt: {wanted - set(pinned)} (python3 tools/lock.py)"
    assert [f"{n}=={pinned[n]}" for n in ("torch", "torchvision")] == list(install.TORCH)


def test_the_tests_run_on_the_pinned_versions():
    install = _load("install")
    assert install.missing(install.pins()) == [], "run python3 tools/install.py (the README's test line does)"
