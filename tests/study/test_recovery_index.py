"""study/recovery/__init__.py lists every fault with its handler and its test: every module of the package is
listed, and every file the index names exists."""
import re
from pathlib import Path

import study.recovery

ROOT = Path(__file__).resolve().parents[2]


def test_the_index_names_every_module_and_only_files_that_exist():
    index = study.recovery.__doc__
    modules = {p.name for p in (ROOT / "study" / "recovery").glob("*.py") if p.name != "__init__.py"}
    assert {m for m in modules if f"`{m}`" not in index} == set()
    named = set(re.findall(r"(?:tests|trainables|study)/[\w/]+\.py", index))
    assert named and {p for p in named if not (ROOT / p).is_file()} == set()
    assert all("tests/" in row for row in index.splitlines() if row.startswith("| ") and "fault" not in row
               and "---" not in row), "every fault is held by a test"
