"""The diagnostics' metric names: one definition, parsed back to their extractor and diagnostic."""
import pytest

from search_spaces import metric_names as mn


@pytest.mark.parametrize("extractor, prefix", [("digits_cnn", "fd_digits_cnn"), ("mnist_cnn", "fd_mnist_cnn"),
                                               ("inception", "fid_inception")])
def test_diagnostic_names_parse_back_to_their_extractor_and_diagnostic(extractor, prefix):
    names = mn.diagnostic_names(extractor)
    assert names == {"realnoisy": f"{prefix}_realnoisy", "onestep_realnoisy": f"{prefix}_onestep_realnoisy",
                     "twostep_realnoisy": f"{prefix}_twostep_realnoisy", "xtilde": f"{prefix}_xtilde"}
    for diagnostic, name in names.items():
        assert mn.parse_sample_metric(name) == mn.SampleMetric("distance", extractor, diagnostic)
        assert mn.standard_error_of(mn.standard_error_name(name)) == name
        assert mn.parse_sample_metric(mn.standard_error_name(name)) is None


def test_samplers_still_parse_and_diagnostics_do_not_swallow_them():
    # `onestep_realnoisy` ends like no sampler, `onestep` is not read as part of a diagnostic
    assert mn.parse_sample_metric("fd_digits_cnn_onestep") == mn.SampleMetric("distance", "digits_cnn", "onestep")
    assert mn.parse_sample_metric("fd_digits_cnn") == mn.SampleMetric("distance", "digits_cnn", "")
    assert mn.parse_sample_metric("fd_digits_cnn_twostep_realnoisy").extractor == "digits_cnn"
    assert mn.parse_sample_metric("fd_inception_xtilde") is None  # Inception distances are fid_inception_*


def test_every_diagnostic_is_documented_and_no_sampler_name():
    assert set(mn.DIAGNOSTICS).isdisjoint(mn.SAMPLERS)
    assert all(len(doc) > 20 for doc in mn.DIAGNOSTICS.values())
