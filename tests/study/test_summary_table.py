"""The study's printed result table: each distance with its standard error and the sample count."""
from study.cli import parse, resolve
from study.summary import format_table


def test_distances_are_printed_with_their_standard_error_and_sample_count():
    cfg = resolve(parse(["--storage-path", "/tmp/studies-unit", "--space", "noise_sweep"]))
    rows = [{"run": "smoothed s=0.48 K=5", "state": "completed", "epoch": 8, "noise_std": 0.4842, "num_mixtures": 5,
             "fd_digits_cnn_onestep": 296.94, "fd_digits_cnn_onestep_se": 21.337,
             "fd_digits_cnn_twostep": 157.7, "fd_digits_cnn_twostep_se": 8.123, "bpd_bound": 3.7271},
            {"run": "baseline s=0 K=5", "state": "completed", "epoch": 8, "noise_std": 0.0, "num_mixtures": 5,
             "fd_digits_cnn_direct": 235.9, "bpd_bound": 3.621}]  # an older study: no SE logged
    lines = format_table(cfg, rows).splitlines()
    n = cfg.trial["num_eval_samples"]
    assert f"fd_digits_cnn one-step ± SE (n={n}) | fd_digits_cnn two-step ± SE (n={n})" in lines[0]
    assert "| 296.94 ± 21.34 | 157.70 ± 8.12 |  | 3.727 |" in lines[2]
    assert "|  |  | 235.90 | 3.621 |" in lines[3]
