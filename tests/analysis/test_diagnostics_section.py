"""The report's diagnostics section: the diagnostic distances beside the model-sample ones, per trial and per σ."""
from types import SimpleNamespace

import pandas as pd

from analysis import conventions as c
from analysis import sections, tables
from analysis.render import Table

E = "digits_cnn"


def _trials(with_diagnostics: bool = True) -> pd.DataFrame:
    rows = []
    for run, kind, sigma, seed, twostep in (("base", "baseline", 0.0, 0, None), ("s3a", "smoothed", 0.3, 0, 40.0),
                                            ("s3b", "smoothed", 0.3, 1, 44.0)):
        row = {"run_name": run, "trial_id": run, "state": "completed", "status": "FINISHED", "epochs": 4,
               "kind": kind, "noise_std": sigma, "seed": seed, "test_bpd_denoiser": 0.5 if twostep else None}
        if twostep is None:
            row.update({f"fd_{E}_direct": 20.0, f"fd_{E}_direct_se": 2.0})
        else:
            row.update({f"fd_{E}_onestep": twostep + 10, f"fd_{E}_twostep": twostep,
                        f"fd_{E}_onestep_se": 1.0, f"fd_{E}_twostep_se": 1.0})
            if with_diagnostics:
                for i, d in enumerate(c.DIAGNOSTICS):  # realnoisy 100, onestep_realnoisy 101, ...
                    row[f"fd_{E}_{d}"], row[f"fd_{E}_{d}_se"] = 100.0 + i + seed, 3.0
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["params"] = ["kind", "noise_std", "seed"]
    return frame


def test_diagnostic_columns_sit_beside_the_model_sample_distances():
    trials = _trials()
    blocks = sections.diagnostics_section(SimpleNamespace(trials=trials), tables.trend_table(trials), E)
    per_trial, per_sigma = [b for b in blocks if isinstance(b, Table)]
    assert per_trial.header[5:] == [f"{n} (± SE)" for n in (
        f"fd_{E}_realnoisy", f"fd_{E}_onestep_realnoisy", f"fd_{E}_onestep", f"fd_{E}_twostep_realnoisy",
        f"fd_{E}_twostep", f"fd_{E}_xtilde")] + ["test_bpd_denoiser"]
    assert [row[0] for row in per_trial.rows] == ["s3a", "s3b"], "only the trials that logged diagnostics"
    assert per_trial.rows[1][5:8] == ["101 ± 3", "102 ± 3", "54 ± 1"]  # seed 1: realnoisy 101, onestep_realnoisy 102
    # per σ: the mean over the two seeds with its pooled SE sqrt(3² + 3²) / 2 (the cell's layout is render's)
    sigma_row = next(r for r in per_sigma.rows if r[0] == "smoothed")
    cell = sigma_row[per_sigma.header.index(f"fd_{E}_realnoisy")]
    assert cell.startswith("100.5 ") and "2.1" in cell, cell
    assert "realnoisy" in blocks[1][1] and "floor" in blocks[1][1] and "p(x~) alone" in blocks[1][1]


def test_a_study_without_diagnostics_says_so():
    trials = _trials(with_diagnostics=False)
    blocks = sections.diagnostics_section(SimpleNamespace(trials=trials), tables.trend_table(trials), E)
    assert len(blocks) == 2 and "No trial logged diagnostics" in blocks[1][1]


def test_diagnostics_are_metrics_ordered_after_the_samplers():
    names = [f"fd_{E}_xtilde", "diagnostic_seconds", f"fd_{E}_realnoisy_se", f"fd_{E}_twostep", f"fd_{E}_realnoisy",
             f"fd_{E}", "sample_seconds", f"fd_{E}_onestep_realnoisy"]
    assert c.metric_order(names) == [f"fd_{E}_twostep", f"fd_{E}", f"fd_{E}_realnoisy", f"fd_{E}_realnoisy_se",
                                     f"fd_{E}_onestep_realnoisy", f"fd_{E}_xtilde", "sample_seconds",
                                     "diagnostic_seconds"]
    assert all(tables.is_metric(n) for n in names)
