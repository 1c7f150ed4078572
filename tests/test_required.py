"""A need CI provides turns its test's skip into a failure there; elsewhere it stays a skip."""
import pytest

from tests.required import REQUIRE_VAR, skip_unless_required


def test_a_required_need_fails_and_an_optional_one_skips(monkeypatch):
    monkeypatch.setenv(REQUIRE_VAR, "real-28x28, tmpfs")
    with pytest.raises(pytest.fail.Exception, match="required here: SMOOTHING_TESTS_REQUIRE names 'tmpfs'"):
        skip_unless_required("tmpfs", "cannot mount a tmpfs here")
    with pytest.raises(pytest.skip.Exception, match="no MNIST"):
        skip_unless_required("shared-mnist", "no MNIST")
    monkeypatch.delenv(REQUIRE_VAR)
    with pytest.raises(pytest.skip.Exception):
        skip_unless_required("tmpfs", "cannot mount a tmpfs here")


def test_an_unknown_need_is_a_mistake_not_a_skip():
    with pytest.raises(ValueError, match="unknown test need"):
        skip_unless_required("tmpsf", "typo")
