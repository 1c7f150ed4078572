"""The constants analysis restates (it may not import study or trainables) equal their sources;
the metric names it reads are the ones trainables logs (one module: search_spaces.metric_names)."""
import pytest

from analysis import conventions as c


def test_tags_and_files_match_the_study_code():
    from study import cli, storage, tracking

    assert (c.ROLE_TAG, c.TRIAL_ID_TAG, c.STATE_TAG) == (tracking.ROLE_TAG, tracking.TRIAL_ID_TAG, tracking.STATE_TAG)
    assert (c.STUDY_FILE, c.MLFLOW_DB) == (storage.STUDY_FILE, storage.MLFLOW_DB)
    assert c.DEFAULT_STORAGE_PATH == cli.DEFAULT_STORAGE_PATH


def test_uncertainty_constants_match_the_scoring_code():
    from trainables.quality import evaluate, uncertainty

    assert (c.FD_BOOTSTRAP_RESAMPLES, c.IS_SPLITS) == (uncertainty.FD_BOOTSTRAP_RESAMPLES, evaluate.IS_SPLITS)


@pytest.mark.parametrize("extractor", ["digits_cnn", "mnist_cnn", "inception"])
@pytest.mark.parametrize("sampler", ["", "direct", "onestep", "twostep"])
def test_metric_names_match_the_feature_extractors(extractor, sampler):
    from search_spaces.metric_names import metric_names
    from trainables.quality import evaluate, trial_evaluation

    assert evaluate.metric_names is metric_names and trial_evaluation.metric_names is metric_names
    names = metric_names(extractor, sampler)
    for family in ("distance", "score"):
        assert c.sample_metric_name(family, extractor, sampler) == names[family]
        assert c.parse_sample_metric(names[family]) == c.SampleMetric(family, extractor, sampler)
    assert c.parse_sample_metric(names["score_std"]) is None
    for family in ("distance", "score"):
        se = names[family] + "_se"
        assert c.standard_error_name(names[family]) == se
        assert c.parse_sample_metric(se) is None and c.standard_error_of(se) == names[family]


def test_other_names_are_not_sample_metrics():
    for name in ("bpd_bound", "test_bpd_smoothed", "epoch_seconds", "fd_inception", "is_"):
        assert c.parse_sample_metric(name) is None
    for name in ("bpd_bound_se", "test_se", "fd_inception_se"):
        assert c.standard_error_of(name) is None


def test_metric_order_puts_samplers_side_by_side():
    names = ["sample_seconds", "is_digits_cnn", "fd_digits_cnn_twostep", "bpd_bound", "fd_digits_cnn",
             "fd_digits_cnn_onestep", "test_bpd", "is_digits_cnn_onestep", "epoch", "grad_norm",
             "fd_digits_cnn_twostep_se", "is_digits_cnn_se", "fd_digits_cnn_onestep_se"]
    assert c.metric_order(names) == ["epoch", "test_bpd", "bpd_bound", "fd_digits_cnn_onestep",
                                     "fd_digits_cnn_onestep_se", "fd_digits_cnn_twostep", "fd_digits_cnn_twostep_se",
                                     "fd_digits_cnn", "is_digits_cnn_onestep", "is_digits_cnn", "is_digits_cnn_se",
                                     "sample_seconds", "grad_norm"]


def test_configuration_group_of_a_runs_params_is_the_studys():
    """The study tags each run with groups.config_group(config); analysis recomputes it from the params the
    study logged as str(value), for runs of studies from before the tag."""
    from study import groups

    config = {"kind": "smoothed", "noise_std": 0.4814, "num_mixtures": 5, "data_dir": None, "compile": False,
              "lr": 2e-4, "seed": 3, "extractor": "digits_cnn"}
    params = {k: str(v) for k, v in config.items()}
    assert c.config_group(params) == groups.config_group(config)
    assert c.config_group({**params, "seed": "4"}) == c.config_group(params), "seeds of one configuration"
    assert c.config_group({**params, "noise_std": "0.4842"}) != c.config_group(params)
    assert (c.GROUP_TAG, c.LABEL_TAG, c.GROUP_HASH_CHARS) == (groups.GROUP_TAG, groups.LABEL_TAG,
                                                              groups.GROUP_HASH_CHARS)
