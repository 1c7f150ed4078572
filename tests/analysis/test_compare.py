"""`python -m analysis.report --study A --study B`: two studies side by side, never pooled."""
from __future__ import annotations

import pandas as pd
import pytest

from analysis import load_trials, trend_table
from analysis.compare import compare_trend, distance_vs_sigma
from analysis.report import main
from tests.analysis.conftest import write_study


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    storage = tmp_path_factory.mktemp("two")
    for name in ("sweep-a", "sweep-b"):
        write_study(storage, name)
    return storage, [load_trials(name, str(storage)) for name in ("sweep-a", "sweep-b")]


@pytest.mark.parametrize("by", ["noise_std", "num_mixtures"])
def test_each_study_keeps_its_own_rows(two, by):
    _, datas = two
    table = compare_trend(datas, by)
    assert table.index.names[0] == "study"
    assert list(table.index.get_level_values("study").unique()) == ["sweep-a", "sweep-b"]
    for data in datas:
        alone = trend_table(data.trials, by)
        rows = table.xs(data.study, level="study")
        assert rows.index.names == alone.index.names
        # identical studies: pooling would double every n; side by side, each row is the study's own
        pd.testing.assert_frame_equal(rows[alone.columns], alone, check_dtype=False)


def test_one_line_per_study(two):
    _, datas = two
    fig = distance_vs_sigma(datas)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    for name in ("sweep-a", "sweep-b"):
        assert any(label.startswith(f"{name} two-step") for label in labels), labels
        assert any(label.startswith(f"{name} σ = 0 baseline (n=2)") for label in labels), labels


def test_cli_writes_one_report(two, tmp_path, capsys):
    storage, _ = two
    out = tmp_path / "cmp"
    assert main(["--study", "sweep-a", "--study", "sweep-b", "--storage-path", str(storage), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "Studies `sweep-a` vs `sweep-b`" in report and "## Trends vs noise_std" in report
    assert (out / "plots" / "distance_vs_sigma.png").stat().st_size > 1000
    trials = pd.read_parquet(out / "tables" / "trials.parquet")
    assert trials.groupby("study").size().to_dict() == {"sweep-a": 10, "sweep-b": 10}
    assert (out / "tables" / "trend_noise_std.csv").is_file() and (out / "report.html").is_file()


def test_a_study_named_twice_or_unknown_is_one_line(two, tmp_path, capsys):
    storage, _ = two
    for other, message in (("sweep-a", "names a study twice"), ("nope", "no MLflow store")):
        code = main(["--study", "sweep-a", "--study", other, "--storage-path", str(storage), "--out", str(tmp_path / "x")])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x").exists()
