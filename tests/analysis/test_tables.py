"""Trend, paper and time tables against aggregates computed by hand from conftest.TRIALS."""
import math

import pandas as pd
import pytest

from analysis.tables import flatten, paper_table, repeat_keys, time_table, trend_table
from tests.analysis.conftest import EXTRACTOR

FD1, FD2, IS2 = f"fd_{EXTRACTOR}_onestep", f"fd_{EXTRACTOR}_twostep", f"is_{EXTRACTOR}_twostep"
SQRT8 = math.sqrt(8.0)


def test_repeats_are_configurations_without_the_seed(data):
    assert repeat_keys(data.trials, "noise_std") == ["kind", "noise_std", "num_mixtures"]
    assert repeat_keys(data.trials, "num_mixtures") == ["kind", "num_mixtures", "noise_std"]


def test_trend_vs_noise_std(data):
    t = trend_table(data.trials, "noise_std")
    row = t.loc[("smoothed", 0.3, 5)]
    assert row[(FD2, "mean")] == 12.0 and row[(FD2, "std")] == pytest.approx(SQRT8) and row[(FD2, "n")] == 2
    assert row[(FD1, "mean")] == 42.0 and row[(IS2, "mean")] == pytest.approx(2.7)
    assert row[("bpd_bound", "mean")] == pytest.approx(1.4)
    assert row[("trials", "n")] == 2 and row[("trials", "not_included")] == "1 interrupted"
    half = t.loc[("smoothed", 0.5, 5)]
    assert half[(FD2, "mean")] == 16.0 and math.isnan(half[(FD2, "std")]) and half[(FD2, "n")] == 1
    assert half[("trials", "not_included")] == "1 errored"
    pruned = t.loc[("smoothed", 0.7, 5)]
    assert math.isnan(pruned[(FD2, "mean")]) and pruned[("trials", "not_included")] == "1 pruned"
    assert t.loc[("smoothed", 0.6, 5)][("trials", "not_included")] == "1 running"
    base = t.loc[("baseline", 0.0, 5)]
    assert base[(f"fd_{EXTRACTOR}_direct", "mean")] == 25.0
    assert base[(f"fd_{EXTRACTOR}_direct", "std")] == pytest.approx(math.sqrt(50.0))
    assert base[("test_bpd", "mean")] == pytest.approx(1.1)
    assert list(t.index.get_level_values("noise_std")) == [0.0, 0.3, 0.3, 0.5, 0.6, 0.7]
    columns = list(dict.fromkeys(m for m, _ in t.columns))
    assert columns.index(FD2) == columns.index(FD1) + 1, "one-step and two-step side by side"
    assert not any(m.endswith("_se") for m in columns), "standard errors are their metric's `se`, not metrics"


def test_trend_table_pools_the_trials_standard_errors(data):
    t = trend_table(data.trials, "noise_std")
    # conftest: se = distance / 10 at the last epoch; two-step 10 and 14 -> sqrt(1.0^2 + 1.4^2) / 2.
    assert t.loc[("smoothed", 0.3, 5)][(FD2, "se")] == pytest.approx(math.sqrt(2.96) / 2)
    assert t.loc[("smoothed", 0.5, 5)][(FD2, "se")] == pytest.approx(1.6), "one trial: its own SE"
    assert t.loc[("baseline", 0.0, 5)][(f"fd_{EXTRACTOR}_direct", "se")] == pytest.approx(math.sqrt(13.0) / 2)
    assert t.loc[("smoothed", 0.3, 5)][(IS2, "se")] == pytest.approx(math.sqrt(2 * 0.05 ** 2) / 2)
    assert ("bpd_bound", "se") not in t.columns
    assert math.isnan(t.loc[("smoothed", 0.7, 5)][(FD2, "se")]), "nothing completed: no SE"
    assert f"{FD2}:se" in flatten(t).columns
    bare = data.trials.drop(columns=[c for c in data.trials.columns if c.endswith("_se")])
    assert math.isnan(trend_table(bare, "noise_std").loc[("smoothed", 0.3, 5)][(FD2, "se")]), "older studies"


def test_trend_vs_num_mixtures(data):
    t = trend_table(data.trials, "num_mixtures")
    assert t.loc[("smoothed", 10, 0.3)][(FD2, "mean")] == 8.0
    assert t.loc[("smoothed", 5, 0.3)][(FD2, "mean")] == 12.0
    assert list(t.index.get_level_values("num_mixtures")) == [5, 5, 5, 5, 5, 10]
    assert list(t.index.get_level_values("noise_std")) == [0.0, 0.3, 0.5, 0.6, 0.7, 0.3]


def test_flatten_keeps_every_number(data):
    flat = flatten(trend_table(data.trials, "noise_std"))
    assert {"kind", "noise_std", "num_mixtures", f"{FD2}:mean", f"{FD2}:std", f"{FD2}:n", "trials:not_included"} \
        <= set(flat.columns)
    assert flat.loc[(flat.kind == "smoothed") & (flat.noise_std == 0.3) & (flat.num_mixtures == 5),
                    f"{FD2}:mean"].item() == 12.0


def test_paper_table(data):
    p = paper_table(data.trials).set_index(["kind", "noise_std", "num_mixtures", "sampler"])
    fd, is_ = f"fd_{EXTRACTOR}", f"is_{EXTRACTOR}"
    base = p.loc[("baseline", 0.0, 5, "direct")]
    assert (base[fd], base[is_], base["n"]) == (25.0, 2.5, 2)
    assert base["bpd_metric"] == "test_bpd" and base["bpd"] == pytest.approx(1.1)
    one = p.loc[("smoothed", 0.3, 5, "onestep")]
    two = p.loc[("smoothed", 0.3, 5, "twostep")]
    assert one[fd] == 42.0 and one[f"{fd}:std"] == pytest.approx(SQRT8) and math.isnan(one["bpd"])
    assert two[fd] == 12.0 and two[is_] == pytest.approx(2.7)
    assert two["bpd_metric"] == "bpd_bound" and two["bpd"] == pytest.approx(1.4)
    assert two["not_included"] == "1 interrupted"
    assert two[f"{fd}:se"] == pytest.approx(math.sqrt(2.96) / 2) and base[f"{fd}:se"] == pytest.approx(math.sqrt(13) / 2)
    assert two[f"{is_}:se"] == pytest.approx(math.sqrt(2 * 0.05 ** 2) / 2)
    assert two["samples"] == base["samples"] == "100", "the sample count behind every distance"
    assert two["model"] == "smoothed (σ=0.3, K=5)" and base["model"] == "PixelCNN++ baseline (σ=0, K=5)"
    assert not any(c.startswith(("fid_", "fd_inception")) for c in p.columns), "only this study's extractor"


def test_time_table(data):
    t = time_table(data.trials, data.epochs, hardware="2 CPU").set_index("kind")
    base, smooth = t.loc["baseline"], t.loc["smoothed"]
    assert base["train_hours_per_100_epochs"] == pytest.approx(1.5)       # 36 s and 72 s per epoch
    assert base["train_hours_per_100_epochs:std"] == pytest.approx(math.sqrt(0.5))
    assert base["gen_hours_per_2000_images"] == pytest.approx(1.0)        # 180 s per 100 images
    assert (base["trials"], base["epochs"], base["evaluations"]) == (2, 8, 4)
    assert smooth["train_hours_per_100_epochs"] == pytest.approx(2.0)
    assert (smooth["trials"], smooth["evaluations"]) == (8, 11), "every state counts for timings"
    assert set(t["hardware"]) == {"2 CPU"} and set(t["dataset"]) == {"digits"}
    # an evaluation's time split: 180 s sampling, 20 s bits/dim, 60 s features
    assert base["eval_share_sampling"] == pytest.approx(180 / 260)
    assert base["eval_share_bpd"] == pytest.approx(20 / 260)
    assert base["eval_share_features"] == pytest.approx(60 / 260)
    from analysis.render import time_view

    view = time_view(t.reset_index())
    assert "evaluation: sampling / bits/dim / features" in view.header
    assert ["69% / 8% / 23%"] * 2 == [row[view.header.index("evaluation: sampling / bits/dim / features")]
                                      for row in view.rows]


def test_empty_study_tables_have_their_columns(data):
    empty = data.trials.iloc[0:0]
    assert trend_table(empty, "noise_std").empty
    assert paper_table(empty).empty and time_table(empty, data.epochs.iloc[0:0]).empty


def test_hyperparameter_columns_without_the_loaders_note(data):
    from analysis.tables import param_columns

    bare = data.trials.copy()
    bare.attrs = {}
    assert set(param_columns(bare)) == set(data.trials.attrs["params"])


def test_labels_tell_close_configurations_apart(data):
    from analysis.tables import config_labels

    rows = [pd.Series({"kind": "smoothed", "noise_std": s, "num_mixtures": 5}) for s in (0.4814, 0.4842, 0.48421)]
    assert config_labels(rows, ["noise_std", "num_mixtures"]) == [
        "smoothed (σ=0.4814, K=5)", "smoothed (σ=0.4842, K=5)", "smoothed (σ=0.48421, K=5)"]
    assert config_labels(rows[:2], ["noise_std"]) == ["smoothed (σ=0.481)", "smoothed (σ=0.484)"]


def test_trend_table_has_the_t_interval_across_seeds(data):
    t = trend_table(data.trials, "noise_std")
    row = t.loc[("smoothed", 0.3, 5)]
    # two seeds, two-step 10 and 14: sd sqrt(8), t(0.975, 1) = tan(0.475 pi)
    assert row[(FD2, "t95")] == pytest.approx(math.tan(0.475 * math.pi) * SQRT8 / math.sqrt(2))
    assert row[("bpd_bound", "t95")] == pytest.approx(math.tan(0.475 * math.pi) * 0.2 / 2), "bpd 1.3 and 1.5"
    assert math.isnan(t.loc[("smoothed", 0.5, 5)][(FD2, "t95")]), "one seed: no interval"
    assert row[("trials", "configs")] == 1, "two seeds of one configuration"
    assert f"{FD2}:t95" in flatten(t).columns


def test_trend_table_gives_any_metric_with_a_standard_error_its_se(data):
    """Generic over names: a new metric logged with a `_se` companion gets `se` and `t95` like the distances."""
    trials = data.trials.assign(new_metric=data.trials["bpd_bound"], new_metric_se=0.5)
    trials.attrs = data.trials.attrs
    row = trend_table(trials, "noise_std").loc[("smoothed", 0.3, 5)]
    assert row[("new_metric", "se")] == pytest.approx(math.sqrt(2 * 0.25) / 2)
    assert row[("new_metric", "t95")] == pytest.approx(row[("bpd_bound", "t95")])


def test_paper_table_has_the_t_interval_across_seeds(data):
    p = paper_table(data.trials).set_index(["kind", "noise_std", "num_mixtures", "sampler"])
    fd, is_ = f"fd_{EXTRACTOR}", f"is_{EXTRACTOR}"
    t1 = math.tan(0.475 * math.pi)
    base = p.loc[("baseline", 0.0, 5, "direct")]
    assert base[f"{fd}:t95"] == pytest.approx(t1 * math.sqrt(50.0) / math.sqrt(2))      # direct 20 and 30
    assert base["bpd:t95"] == pytest.approx(t1 * math.sqrt(0.02) / math.sqrt(2))        # test_bpd 1.0 and 1.2
    two = p.loc[("smoothed", 0.3, 5, "twostep")]
    assert two[f"{is_}:t95"] == pytest.approx(t1 * math.sqrt(0.08) / math.sqrt(2))      # IS 2.5 and 2.9
    assert math.isnan(p.loc[("smoothed", 0.5, 5, "twostep")][f"{fd}:t95"])


def test_trials_carry_their_configuration_group(data):
    groups = data.trials.set_index("trial_id")["config_group"]
    assert groups["s03a"] == groups["s03b"] == groups["s03c"], "seeds 0, 1, 2 of one configuration"
    assert len({groups["s03a"], groups["s05a"], groups["s03k10"], groups["base0"]}) == 4
    assert groups["base0"] == groups["base1"]
    assert "config_group" in data.epochs.columns
    assert "config_group" not in repeat_keys(data.trials), "the group is no hyperparameter"
