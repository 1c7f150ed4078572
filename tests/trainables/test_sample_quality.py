"""Sample-quality entry point, digits classifier, reference statistics, extractor registry.

The digits classifier is trained once per test session into a temporary cache dir
(tests/conftest.py's digits_cache_dir, a few seconds on one CPU thread); everything else reuses it.
"""
import dataclasses
import re

import numpy as np
import pytest
import torch

from search_spaces import metric_names as mn
from trainables.quality import classifiers as clf
from trainables.quality import extractors as fx
from trainables.cache_files import CACHE_ENV_VAR, resolve_cache_dir
from trainables.data import load_dataset, subset_indices
from trainables.quality.scores import FewSamplesWarning
from trainables.quality.reference_stats import ReferenceStatsWarning, reference_statistics, reference_stats_path
from trainables.quality.evaluate import evaluate_samples


@pytest.fixture(scope="module", autouse=True)
def single_threaded_blas():
    # OpenBLAS's thread pool spins when the CPUs are shared (CI, parallel trials): a 2048-d
    # eigendecomposition took 25 s on 2 busy cores with 2 threads and 5 s with 1.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def cache_dir(digits_cache_dir):
    return digits_cache_dir  # tests/conftest.py: the session's one digits classifier


@pytest.fixture(scope="session")
def digits_extractor(cache_dir):
    return fx.build_extractor("digits_cnn", "digits", cache_dir=cache_dir, log=lambda _: None)


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")  # (1438|359, 1, 8, 8)


def _score(images, cache_dir, **kwargs):
    return evaluate_samples(images, "digits", cache_dir=cache_dir, log=lambda _: None, **kwargs)


def _noisy(images, sigma, seed=0):
    # The same eps for every sigma (common random numbers): the levels differ only in scale.
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return images + sigma * eps


# --- sanity of the digits classifier's distance and score ---------------------------------

def test_digits_classifier_is_accurate_and_confident_on_real_test_digits(digits_extractor, digits, cache_dir):
    trained = clf.load_classifier("digits", cache_dir=cache_dir, log=lambda _: None)
    assert trained.test_accuracy >= 0.95
    metrics = _score(digits[1], cache_dir)
    assert set(metrics) == {"fd_digits_cnn", "fd_digits_cnn_se", "is_digits_cnn", "is_digits_cnn_std",
                            "is_digits_cnn_se", "num_samples"}
    assert metrics["num_samples"] == 359
    assert 0 < metrics["fd_digits_cnn_se"] < np.inf and 0 < metrics["is_digits_cnn_se"] < metrics["is_digits_cnn_std"]
    assert metrics["is_digits_cnn"] >= 8.0
    assert metrics["fd_digits_cnn"] == pytest.approx(0.0, abs=1e-6)  # the reference itself


def test_real_train_digits_are_close_and_noisy_digits_far(digits_extractor, digits, cache_dir):
    _, sigma_ref = reference_statistics("digits", digits_extractor, cache_dir=cache_dir, log=lambda _: None)
    real = _score(digits[0], cache_dir)["fd_digits_cnn"]
    noisy = _score(_noisy(digits[0], 0.5), cache_dir)["fd_digits_cnn"]
    # "Small": a few percent of the total feature variance (finite-sample bias, 1438 vs 359).
    assert real < 0.05 * np.trace(sigma_ref)
    assert noisy > 3.0 * real


def test_distance_falls_monotonically_with_the_noise(digits_extractor, digits, cache_dir):
    # Measured: 189 > 84 > 33 > 30 (clean train); samples are clamped to [-1, 1] like generated ones.
    distances = [_score(_noisy(digits[0], s), cache_dir)["fd_digits_cnn"] for s in (0.5, 0.3, 0.1, 0.0)]
    assert distances[0] > distances[1] > distances[2] > distances[3], distances


def test_samples_are_clamped_to_the_data_range(digits_extractor, digits, cache_dir):
    overshoot = 1.5 * digits[1][:100]
    assert _score(overshoot, cache_dir) == _score(overshoot.clamp(-1, 1), cache_dir)


def test_bad_samples_are_rejected(digits_extractor, digits, cache_dir):
    with pytest.raises(ValueError, match="shape"):
        _score(torch.zeros(10, 1, 28, 28), cache_dir)
    broken = digits[1][:10].clone()
    broken[3, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        _score(broken, cache_dir)


def test_few_samples_warn_and_sampler_suffix_names(digits_extractor, digits, cache_dir):
    with pytest.warns(FewSamplesWarning):
        metrics = _score(digits[1][:20], cache_dir, sampler="twostep")
    assert set(metrics) == {"fd_digits_cnn_twostep", "fd_digits_cnn_twostep_se", "is_digits_cnn_twostep",
                            "is_digits_cnn_twostep_std", "is_digits_cnn_twostep_se", "num_samples"}


# --- classifier cache and refusal ------------------------------------------------------------

def test_classifier_is_cached_by_content_hash(digits_extractor, cache_dir):
    lines = []
    trained = clf.load_classifier("digits", cache_dir=cache_dir, log=lines.append)
    assert not any("training" in line for line in lines) and "loaded" in lines[0]
    assert trained.path.name == f"digits_cnn-{trained.content_hash[:16]}.pt"
    payload = torch.load(trained.path, weights_only=True)
    assert payload["test_accuracy"] == trained.test_accuracy and payload["content_hash"] == trained.content_hash
    other = dataclasses.replace(clf.CLASSIFIER_SPECS["digits"], lr=1e-4)
    train = load_dataset("digits", "train", with_labels=True)
    test = load_dataset("digits", "test", with_labels=True)
    assert clf.content_hash(other, train, test) != trained.content_hash
    threshold_only = dataclasses.replace(clf.CLASSIFIER_SPECS["digits"], min_accuracy=0.5)
    assert clf.content_hash(threshold_only, train, test) == trained.content_hash


def test_untrained_classifier_is_refused_and_the_refusal_is_cached(tmp_path):
    untrained = dataclasses.replace(clf.CLASSIFIER_SPECS["digits"], max_steps=0)  # ~10% accuracy
    rng_before = torch.get_rng_state()
    with pytest.raises(clf.ClassifierAccuracyError) as refused:
        clf.load_classifier("digits", cache_dir=tmp_path, spec=untrained, log=lambda _: None)
    message = str(refused.value)
    assert "\n" not in message  # one line: the study prints it as its error
    for part in (r"reached test accuracy 0\.\d{4} on 359 test images", r"below its floor 0\.95",
                 r"trained on 1294 images, 0 steps", "more training images", "extractor=inception"):
        assert re.search(part, message), (part, message)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the trial's RNG stream is untouched
    lines = []
    with pytest.raises(clf.ClassifierAccuracyError):
        clf.load_classifier("digits", cache_dir=tmp_path, spec=untrained, log=lines.append)
    assert not any("training" in line for line in lines)  # refused from the cached accuracy


def test_corrupted_classifier_cache_is_retrained(tmp_path):
    cheap = dataclasses.replace(clf.CLASSIFIER_SPECS["digits"], max_steps=0, min_accuracy=0.0)
    first = clf.load_classifier("digits", cache_dir=tmp_path, spec=cheap, log=lambda _: None)
    first.path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable classifier cache"):
        again = clf.load_classifier("digits", cache_dir=tmp_path, spec=cheap, log=lambda _: None)
    assert again.test_accuracy == first.test_accuracy


def test_classifier_trains_when_first_needed_inside_no_grad(tmp_path):
    # Sample evaluation runs under torch.no_grad and triggers the first training on a cold cache.
    one_epoch = dataclasses.replace(clf.CLASSIFIER_SPECS["digits"], max_steps=25, eval_every=25, min_accuracy=0.0)
    with torch.no_grad():
        trained = clf.load_classifier("digits", cache_dir=tmp_path, spec=one_epoch, log=lambda _: None)
    assert trained.test_accuracy > 0.5  # it learned: chance is 0.1


def test_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "from-env"))
    assert resolve_cache_dir() == tmp_path / "from-env"
    assert resolve_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"


# --- reference statistics cache --------------------------------------------------------------

def test_reference_stats_round_trip_and_corruption_detection(digits_extractor, tmp_path):
    lines = []
    mu, sigma = reference_statistics("digits", digits_extractor, n=100, cache_dir=tmp_path, log=lines.append)
    test_images = load_dataset("digits", "test")
    chosen = test_images[torch.from_numpy(subset_indices(len(test_images), 100))]
    path = reference_stats_path(tmp_path, "digits", "test", digits_extractor, chosen)
    assert path.exists() and "digits-test-digits_cnn-n100-" in path.name and len(lines) == 1
    other_images = reference_stats_path(tmp_path, "digits", "test", digits_extractor, chosen.flip(0))
    assert other_images != path  # another folder (or data dir) of the same dataset: another file
    mu2, sigma2 = reference_statistics("digits", digits_extractor, n=100, cache_dir=tmp_path, log=lines.append)
    assert len(lines) == 1  # loaded, not recomputed
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    assert sigma.shape == (digits_extractor.feature_dim,) * 2

    with np.load(path) as stored:  # edit mu but keep the old hash
        tampered = {k: stored[k] for k in stored.files}
    tampered["mu"] = tampered["mu"] + 1.0
    np.savez(path, **tampered)
    with pytest.warns(ReferenceStatsWarning, match="sha256"):
        mu3, _ = reference_statistics("digits", digits_extractor, n=100, cache_dir=tmp_path, log=lines.append)
    np.testing.assert_array_equal(mu, mu3)

    path.write_bytes(b"truncated")
    with pytest.warns(ReferenceStatsWarning, match="unreadable"):
        mu4, _ = reference_statistics("digits", digits_extractor, n=100, cache_dir=tmp_path, log=lines.append)
    np.testing.assert_array_equal(mu, mu4)
    # n above the split size is capped and keyed by the n actually used.
    reference_statistics("digits", digits_extractor, n=10**6, cache_dir=tmp_path, log=lines.append)
    assert reference_stats_path(tmp_path, "digits", "test", digits_extractor, test_images).exists()


# --- registry and names ------------------------------------------------------------------------

def test_registry_defaults_and_metric_names():
    assert set(fx.EXTRACTORS) == {"inception", "digits_cnn", "mnist_cnn", "fashion_mnist_cnn", "cifar10_cnn"}
    assert tuple(fx.EXTRACTORS) == mn.EXTRACTOR_IDS  # a factory for every id the names know
    assert [fx.default_extractor(d) for d in ("digits", "mnist", "fashion_mnist", "cifar10", "celeba", "folder")] == [
        "digits_cnn", "mnist_cnn", "fashion_mnist_cnn", "inception", "inception", "inception"]
    assert mn.metric_names("digits_cnn") == {"distance": "fd_digits_cnn", "score": "is_digits_cnn",
                                             "score_std": "is_digits_cnn_std"}
    assert mn.metric_names("inception", "onestep") == {
        "distance": "fid_inception_onestep", "score": "is_inception_onestep", "score_std": "is_inception_onestep_std"}
    with pytest.raises(ValueError, match="unknown feature extractor"):
        mn.metric_names("resnet")
    with pytest.raises(ValueError, match="digits_cnn scores digits images only"):
        fx.build_extractor("digits_cnn", "mnist")


# --- Inception (no real weights here: the error path and the plumbing) ----------------------

def test_missing_inception_weights_error_names_the_file_and_places(tmp_path, monkeypatch):
    monkeypatch.delenv(fx.INCEPTION_WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, destination):
        raise OSError("Name or service not known")

    monkeypatch.setattr(fx, "_download", offline)
    with pytest.raises(FileNotFoundError) as err:
        fx.build_extractor("inception", "cifar10")
    message = str(err.value)
    hub_file = tmp_path / "torch" / "hub" / "checkpoints" / fx.INCEPTION_WEIGHTS_FILE
    for part in (fx.INCEPTION_WEIGHTS_FILE, str(hub_file), fx.INCEPTION_WEIGHTS_ENV_VAR,
                 fx.INCEPTION_WEIGHTS_FLAG, "download failed", fx.INCEPTION_WEIGHTS_URL):
        assert part in message
    with pytest.raises(FileNotFoundError, match="/nowhere/w.pth does not exist"):
        fx.resolve_inception_weights("/nowhere/w.pth")


def test_uint8_conversion_inverts_the_data_scaling():
    levels = torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16)
    converted = fx.to_uint8_rgb(levels / 127.5 - 1.0)
    assert converted.dtype == torch.uint8 and converted.shape == (1, 3, 16, 16)
    assert torch.equal(converted[:, 0].long(), levels[:, 0].long())
    assert torch.equal(converted[:, 0], converted[:, 2])


@pytest.fixture
def random_inception_weights(tmp_path, monkeypatch):
    """A randomly initialized torch-fidelity Inception saved as a weights file (no download)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    with monkeypatch.context() as patch:
        patch.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        net = tfi.FeatureExtractorInceptionV3("random", ["2048"])
    path = tmp_path / "hub" / "checkpoints" / fx.INCEPTION_WEIGHTS_FILE
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.slow  # a Frechet distance over 2048 Inception features: ~4 CPU-s of eigendecompositions
def test_inception_plumbing_with_random_weights(random_inception_weights, digits, tmp_path, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    # Inception-v3's smallest valid input instead of 299: the same code path, ~15x faster on CPU.
    monkeypatch.setattr(tfi.FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)
    monkeypatch.delenv(fx.INCEPTION_WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(random_inception_weights.parents[1]))
    assert fx.resolve_inception_weights() == random_inception_weights  # found in the hub cache
    monkeypatch.setenv(fx.INCEPTION_WEIGHTS_ENV_VAR, str(random_inception_weights))
    with pytest.warns(FewSamplesWarning):  # 3 samples, 2048 dimensions
        metrics = evaluate_samples(digits[0][:3], "digits", extractor="inception", reference_size=3,
                                   cache_dir=tmp_path, log=lambda _: None)
    assert set(metrics) == {"fid_inception", "fid_inception_se", "is_inception", "is_inception_std",
                            "is_inception_se", "num_samples"}
    assert np.isfinite(metrics["fid_inception"]) and metrics["num_samples"] == 3
    assert 1.0 - 1e-9 <= metrics["is_inception"] <= 3.0 + 1e-9  # at most the number of samples per split


# --- classifier training: held-out split, early stopping, threads, shifts --------------------

def test_holdout_is_a_seeded_disjoint_part_of_the_training_split():
    spec = clf.CLASSIFIER_SPECS["digits"]
    train, held = clf.split_holdout(1438, spec)
    assert len(held) == 144 and len(train) == 1294
    assert set(train.tolist()).isdisjoint(held.tolist()) and len(set(train.tolist()) | set(held.tolist())) == 1438
    assert torch.equal(clf.split_holdout(1438, spec)[1], held)
    big = clf.split_holdout(200_000, spec)[1]
    assert len(big) == clf.HOLDOUT_MAX


def test_random_shift_translates_each_image_and_fills_with_background():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    gen = torch.Generator().manual_seed(3)
    shifted = clf.random_shift(x, 1, gen)
    dy, dx = torch.randint(0, 3, (2, 2), generator=torch.Generator().manual_seed(3))
    for i in range(2):  # independent check: shift by (1 - dy, 1 - dx) with -1 where nothing moved in
        expected = torch.full((1, 5, 5), -1.0)
        oy, ox = 1 - int(dy[i]), 1 - int(dx[i])
        for r in range(5):
            for c in range(5):
                if 0 <= r - oy < 5 and 0 <= c - ox < 5:
                    expected[0, r, c] = x[i, 0, r - oy, c - ox]
        assert torch.equal(shifted[i], expected)
    assert torch.equal(clf.random_shift(x, 0, gen), x)


def test_training_stops_early_on_the_held_out_accuracy_and_uses_the_allowed_cores(tmp_path, monkeypatch):
    seen = []
    inner = clf._train_loop

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return inner(*args, **kwargs)

    monkeypatch.setattr(clf, "_train_loop", spy)
    before = torch.get_num_threads()
    # lr 0: the weights never change, so no check after the first sets a new best
    stalled = dataclasses.replace(clf.CLASSIFIER_SPECS["digits"], lr=0.0, max_steps=5000, eval_every=10,
                                  patience=2, lr_drops=1, min_accuracy=0.0)
    trained = clf.load_classifier("digits", cache_dir=tmp_path, spec=stalled, log=lambda _: None)
    record = torch.load(trained.path, weights_only=True)["training"]
    # first check sets the best, 2 stale checks drop the lr, 2 more stop: 5 checks of 10 steps
    assert record["steps"] == 50 and record["best_step"] == 10
    assert (record["num_train"], record["num_holdout"]) == (1294, 144)
    assert seen == [clf.allowed_cpus()] and torch.get_num_threads() == before
