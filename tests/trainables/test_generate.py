"""Images from a trained trial: the checkpoint's evaluation networks, plain weight files, and
batched draws equal to the naive samplers run independently on the same generator."""
import numpy as np
import pytest
import torch

from tests.trainables.test_experiment import _cfg
from trainables import generate
from trainables.experiment import Experiment
from trainables.pixelcnnpp import PixelCNNpp
from trainables.sampling.naive import gradient_denoise, sample, to_image_range, two_step_sample


def quiet(message):
    pass


class float64:
    """Sampling in float64 (networks and the default dtype of the uniforms): the fast and the
    naive sampler then agree to rounding (~1e-15), so any difference is a bug."""

    def __enter__(self):
        self.before = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.before)


def models_of(kind: str, seed: int = 0, dtype=torch.float64) -> generate.TrialModels:
    config = {**_cfg(kind, 0.0 if kind == "baseline" else 0.3).to_flat(), "nr_filters": 8, "num_mixtures": 3}
    torch.manual_seed(seed)
    networks = {}
    for unit in generate.UNITS[kind]:
        net = generate.build_network(config, unit).to(dtype)
        with torch.no_grad():  # random biases, so that no path is silently zero
            for name, p in net.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.3)
        networks[unit] = net.eval()
    return generate.TrialModels(config, networks)


def test_checkpoint_gives_the_evaluation_networks(tmp_path):
    exp = Experiment(_cfg("smoothed", max_epochs=1), log=quiet)  # ema_decay 0.9: evaluation = EMA weights
    with torch.no_grad():
        for unit in exp.units.values():  # make the trained weights differ from the EMA's
            for p in unit.model.parameters():
                p.add_(0.1)
    exp.save(tmp_path)
    models = generate.from_checkpoint(tmp_path)
    assert models.kind == "smoothed" and models.config == exp.cfg.to_flat()
    x = exp.test_images[:4]
    for unit, net in models.networks.items():
        reference, trained = exp.units[unit].eval_model.eval(), exp.units[unit].model.eval()
        args = (x, x) if unit == "denoiser" else (x,)
        assert torch.equal(net(*args), reference(*args))
        assert not torch.allclose(net(*args), trained(*args)), "the EMA weights, not the trained ones"


def test_plain_weight_files_round_trip(tmp_path):
    models = models_of("smoothed", dtype=torch.float32)
    files = generate.save_weights(models, tmp_path)
    assert sorted(p.name for p in files) == ["config.json", "denoiser.pt", "smoothed.pt"]
    for path in files[:2]:
        assert isinstance(torch.load(path, weights_only=True), dict)  # a state_dict, nothing pickled
    again = generate.from_weights(tmp_path)
    assert again.config == models.config
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    for unit in ("smoothed", "denoiser"):
        args = (x, x) if unit == "denoiser" else (x,)
        assert torch.equal(again.networks[unit](*args), models.networks[unit](*args))


@pytest.mark.parametrize("sampler", [  # two-step runs two naive samplers (~3 CPU-s): slow; its parts run fast
    pytest.param("two-step", marks=pytest.mark.slow), "one-step", "direct"])
def test_batched_draw_equals_the_naive_samplers_on_one_generator(sampler):
    models = models_of("baseline" if sampler == "direct" else "smoothed")
    nets, shape, n, batch = models.networks, models.image_shape, 5, 3
    with float64():
        images = generate.draw(models, n, sampler, seed=11, batch_size=batch)
        g = torch.Generator().manual_seed(11)
        expected = []
        for b in (3, 2):  # the batches in turn on one generator
            if sampler == "direct":
                x = sample(nets["baseline"], b, shape, discretized=True, generator=g)
            elif sampler == "two-step":
                x = two_step_sample(nets["smoothed"], nets["denoiser"], b, shape, generator=g)[1]
            else:
                x_noisy = sample(nets["smoothed"], b, shape, discretized=False, generator=g)
                x = gradient_denoise(nets["smoothed"], x_noisy, 0.3)
            expected.append(to_image_range(x))
    assert images.shape == (n, *shape) and images.abs().max() <= 1
    torch.testing.assert_close(images, torch.cat(expected), rtol=0, atol=1e-9)
    assert len(torch.unique(images.flatten(1), dim=0)) == n, "every image its own uniforms"


def test_draw_reports_progress_and_refuses_what_a_trial_cannot_do():
    models = models_of("baseline")
    seen = []
    with float64():
        generate.draw(models, 5, "direct", batch_size=2, progress=seen.append)
    assert seen == [0.5] * 8 + [0.25] * 4  # 8 rows, a call every 2 rows: quarters of each batch
    seen = []
    generate.draw(models_of("smoothed", dtype=torch.float32), 3, "two-step", batch_size=3, progress=seen.append)
    assert seen == [3 / 8] * 8  # two passes
    with pytest.raises(ValueError, match="a baseline trial samples with direct, not 'two-step'"):
        generate.draw(models, 2, "two-step", batch_size=2)
    with pytest.raises(ValueError, match="a smoothed trial samples with two-step or one-step"):
        models_of("smoothed").check_sampler("direct")


def test_uint8_images_invert_the_data_scaling():
    values = torch.arange(256, dtype=torch.float32).view(4, 1, 8, 8)  # every 8-bit level once
    x = values / 127.5 - 1.0  # trainables.data's scaling
    out = generate.to_uint8(torch.cat([x, x.clamp(max=0) - 0.5]))  # below -1 clamps to 0
    assert out.dtype == np.uint8 and out.shape == (8, 8, 8, 1)  # (N, H, W, C)
    assert np.array_equal(out[:4, ..., 0], values[:, 0].numpy().astype(np.uint8))
    assert (out[4:, ..., 0] <= 64).all() and out[4, 0, 0, 0] == 0


def test_batch_size_from_memory():
    assert generate.choose_batch_size(1000, per_image_bytes=1000, available=10_000) == 5  # half of 10 kB
    assert generate.choose_batch_size(5000, per_image_bytes=10, available=10**9) == generate.MAX_BATCH
    assert generate.choose_batch_size(7, per_image_bytes=10, available=10**9) == 7
    assert generate.choose_batch_size(7, per_image_bytes=10**12, available=10**9) == 1
    small, large = models_of("baseline"), models_of("baseline")
    large.networks["baseline"] = PixelCNNpp(1, 16, 1, 3).eval()
    ratio = generate.activation_floats(large) / generate.activation_floats(small)
    assert 1.5 < ratio < 2.1, ratio  # activations scale with the filters (the 1x1 head does not)
