"""A stacked denoiser whose receptive field misses part of x~ is a bad input: one line, exit 2, nothing
written (test_bad_inputs.py's contract), unless allow_partial_coverage says it is meant; the `paper`
space (depth 5, stacked) resolves on every dataset it sizes."""
from __future__ import annotations

import pytest

from tests.study.test_bad_inputs import run_main
from tests.study.test_config import cfg_of

REFUSAL = ("denoiser_conditioning=stacked at nr_resnet=1 on mnist (28x28): only 440 of 784 clean pixels see all "
           "of x~ (the receptive field of the 56x28 stacked image is too small); use nr_resnet >= 2, "
           "denoiser_conditioning=encoder, or allow_partial_coverage=true")


@pytest.mark.parametrize("argv", [
    ["--space", "noise_sweep", "--dataset", "mnist", "--set", "denoiser_conditioning=stacked"],  # study size: depth 1
    ["--space", "paper", "--dataset", "mnist", "--set", "nr_resnet=1"],  # the paper space is stacked
])
def test_stacked_at_a_depth_that_misses_x_noisy_is_one_line_exit_2_nothing_written(capsys, tmp_path, argv):
    code, lines = run_main(capsys, "--storage-path", str(tmp_path / "studies"), *argv)
    assert code == 2 and lines == [f"python -m study.run: error: {REFUSAL}"], lines
    assert not (tmp_path / "studies").exists(), "a refused study writes nothing"


def test_a_searched_depth_is_checked_at_both_ends(capsys, tmp_path):
    """A search space reaching down to depth 1 is refused by its low corner (28x28 needs depth 2)."""
    from search_spaces.domains import Int, SearchSpace
    from study.config import StudyError, check_trials

    space = SearchSpace(name="depths", description="", params={"nr_resnet": Int(1, 5)}, fixed={"kind": "smoothed"})
    shared = {"dataset": "fashion_mnist", "noise_std": 0.5, "denoiser_conditioning": "stacked"}
    with pytest.raises(StudyError, match="only 440 of 784 clean pixels see all of x~.*use nr_resnet >= 2"):
        check_trials(shared, space, ())
    check_trials({**shared, "allow_partial_coverage": True}, space, ())  # asked for explicitly: accepted


def test_allowed_explicitly_and_the_paper_space_resolve():
    cfg = cfg_of("--space", "noise_sweep", "--dataset", "mnist", "--set", "denoiser_conditioning=stacked",
                 "--set", "allow_partial_coverage=true")
    assert (cfg.trial["denoiser_conditioning"], cfg.trial["allow_partial_coverage"]) == ("stacked", True)
    for dataset in ("mnist", "fashion_mnist", "cifar10", "digits"):
        paper = cfg_of("--space", "paper", "--dataset", dataset).trial
        assert (paper["denoiser_conditioning"], paper["nr_resnet"], paper["allow_partial_coverage"]) == ("stacked", 5, False)
    smoke = cfg_of("--space", "paper", "--smoke-test").trial  # digits 8x8 at the smoke test's depth 1: covered
    assert (smoke["denoiser_conditioning"], smoke["nr_resnet"]) == ("stacked", 1)
    smoke = cfg_of("--space", "paper", "--dataset", "mnist", "--smoke-test").trial  # 28x28 at depth 1: partial,
    assert smoke["allow_partial_coverage"]  # which a smoke test (machinery, not science) allows
