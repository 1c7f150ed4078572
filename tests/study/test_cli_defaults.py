"""One table of CLI defaults (study/cli.py CLI_DEFAULTS) feeds both --help and resolution."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from study.cli import CLI_DEFAULTS, build_parser, parse, resolve

ROOT = Path(__file__).resolve().parents[2]


def _help_of(dest: str) -> str:
    action = next(a for a in build_parser()._actions if a.dest == dest)
    return " ".join(action.help.split())


@pytest.mark.parametrize("dest", sorted(CLI_DEFAULTS))
def test_help_states_the_table_default_once(dest):
    default = CLI_DEFAULTS[dest]
    text = _help_of(dest)
    shown = default.says or (f"{default.value:g}" if isinstance(default.value, float) else str(default.value))
    shown += f", {default.note}" if default.note else ""
    assert text.endswith(f"(default: {shown})") and text.count("default") == 1, text


def test_resolution_uses_the_table_values(tmp_path):
    cfg = resolve(parse(["--space", "noise_sweep", "--storage-path", str(tmp_path)]))
    for dest in ("cpus_per_trial", "max_concurrent", "max_failures", "num_to_keep", "checkpoint_artifact", "seed"):
        assert getattr(cfg, dest) == CLI_DEFAULTS[dest].value, dest
    assert cfg.trial["dataset"] == CLI_DEFAULTS["dataset"].value and cfg.name == "noise_sweep-digits"
    assert cfg.gpus_per_trial is None and cfg.address is None  # derived later (preflight, connect)
    home = resolve(parse(["--space", "noise_sweep"]))
    assert home.storage_path == os.path.expanduser(CLI_DEFAULTS["storage_path"].value)


def test_study_code_writes_no_default_beside_a_flag_lookup():
    """`flags.get(key, default)` would be a second default for `key`: the table is the only one."""
    found = []
    for path in sorted((ROOT / "study").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "flags" and len(node.args) > 1):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found
