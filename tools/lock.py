"""Write tools/constraints.txt: the versions installed here of the project's dependency closure.

`python3 tools/lock.py` after the tests passed: it walks the requirements of pyproject.toml's
dependencies and test extras (with their extras, markers evaluated for this interpreter)
through the installed distributions' metadata and pins each one found (`name==version`);
tools/install.py installs with `-c tools/constraints.txt`, so a study run next year resolves
the same libraries. Run it in the environment the tests passed in; it changes nothing else.
"""
from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tools" / "constraints.txt"
EXTRAS = ("test",)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level() -> list[Requirement]:
    """pyproject.toml's dependencies and the EXTRAS' optional dependencies."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = list(project["dependencies"])
    for extra in EXTRAS:
        listed += project.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(r) for r in listed]


def closure(roots: list[Requirement]) -> dict[str, str]:
    """canonical name -> installed version of every distribution the roots need (extras followed)."""
    pinned: dict[str, str] = {}
    todo = [(r, frozenset(r.extras)) for r in roots]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        req, extras = todo.pop()
        key = (canonical(req.name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # not needed on this platform (its marker said so) or optional
        pinned[canonical(req.name)] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            wanted = [{"extra": e} for e in extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in wanted):
                todo.append((sub, frozenset(sub.extras)))
    return pinned


def main() -> int:
    pinned = closure(top_level())
    pinned.pop("smoothing-study", None)
    header = [f"# {len(pinned)} pins: the dependency closure of pyproject.toml (+ extras: {', '.join(EXTRAS)}) "
              "as installed when the tests passed,",
              f"# Python {sys.version.split()[0]} on {sys.platform}; regenerate with: python3 tools/lock.py"]
    OUT.write_text("\n".join(header + [f"{name}=={version}" for name, version in sorted(pinned.items())]) + "\n")
    print(f"wrote {OUT} ({len(pinned)} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
