"""`python3 tools/install.py`: install what the study and its tests need into this python3, pinned.

Idempotent and quick when done: it returns at once when every top-level requirement of
pyproject.toml (and the test extras) is installed at the version tools/constraints.txt pins.
Otherwise it runs pip twice, as CI does: torch and torchvision first (`pip install
torch==2.14.1 torchvision==0.29.1`: the build of your machine's accelerator comes from pip's
index), then the project in editable mode with its test extras, every distribution of the
dependency closure held to tools/constraints.txt (written by tools/lock.py where the tests
passed). Standard library only: it runs before anything is installed.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "tools" / "constraints.txt"
TORCH = ("torch==2.14.1", "torchvision==0.29.1")
# pyproject.toml's dependencies and test extras by name (tools/lock.py pins their closure); the
# project itself must be installed too, so that `import study` works from any directory.
TOP_LEVEL = ("torch", "torchvision", "ray", "optuna", "mlflow", "numpy", "scipy", "scikit-learn", "pandas",
             "pyarrow", "matplotlib", "torch-fidelity", "pytest", "pytest-timeout", "moto", "boto3", "psycopg",
             "flask-wtf")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            out[canonical(name)] = version.strip()
    return out


def missing(pinned: dict[str, str]) -> list[str]:
    """Top-level requirements not installed at their pinned version, and the project if not installed."""
    wrong = []
    for name in TOP_LEVEL:
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have is None or (canonical(name) in pinned and have != pinned[canonical(name)]):
            wrong.append(f"{name} {have or 'missing'} (pinned {pinned.get(canonical(name), 'any')})")
    try:
        metadata.version("smoothing-study")
    except metadata.PackageNotFoundError:
        wrong.append("smoothing-study (this project)")
    return wrong


def pip_install(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    if subprocess.call(cmd, cwd=ROOT) != 0:
        print("tools/install.py: error: pip failed (above). Outside a virtual environment pip may refuse to "
              "install (PEP 668): python3 -m venv .venv && . .venv/bin/activate, then run this again.",
              file=sys.stderr)
        raise SystemExit(2)


def main() -> int:
    pinned = pins()
    todo = missing(pinned)
    if not todo:
        return 0  # everything pinned is there: nothing to do (this check takes well under a second)
    print(f"tools/install.py: installing into {sys.prefix}: " + "; ".join(todo), flush=True)
    if importlib.util.find_spec("pip") is None:
        subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
    pip_install("-c", str(CONSTRAINTS), *TORCH)
    pip_install("-c", str(CONSTRAINTS), "-e", ".[test]")
    left = missing(pinned)
    if left:
        print(f"tools/install.py: error: still not as pinned after pip: {'; '.join(left)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
