"""A stacked trial's checkpoint builds the stacked denoiser wherever it is loaded: the checkpoint's
evaluation networks (study.sample), plain weight files and the MLflow pyfunc (trainables/mlflow_model/),
whose draws are generate.draw's."""
import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from tests.trainables.test_experiment import _cfg
from trainables import generate
from trainables.checkpoint import CheckpointMismatchError, load_checkpoint
from trainables.experiment import Experiment
from trainables.mlflow_model.sampler import WEIGHTS_ARTIFACT, TrialSampler


def quiet(message):
    pass


@pytest.fixture(scope="module")
def stacked_experiment():
    cfg = _cfg("smoothed", max_epochs=1)  # digits 8x8 at depth 1: every clean pixel sees all of x~
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, denoiser_conditioning="stacked"))
    torch.manual_seed(0)
    exp = Experiment(cfg, log=quiet)
    with torch.no_grad():  # weights unlike a fresh network's, EMA copies included
        for unit in exp.units.values():
            for p in unit.eval_model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return exp


def _check_networks(models, exp):
    denoiser = models.networks["denoiser"]
    assert denoiser.stacked and denoiser.encoder is None
    x = exp.test_images[:3]
    x_noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(denoiser(x, x_noisy), exp.units["denoiser"].eval_model.eval()(x, x_noisy))


def test_checkpoint_and_weight_files_build_the_stacked_denoiser(tmp_path, stacked_experiment):
    exp = stacked_experiment
    exp.save(tmp_path / "ckpt")
    models = generate.from_checkpoint(tmp_path / "ckpt")
    assert models.config["denoiser_conditioning"] == "stacked"
    _check_networks(models, exp)
    generate.save_weights(models, tmp_path / "weights")
    _check_networks(generate.from_weights(tmp_path / "weights"), exp)
    # resuming it as an encoder trial is refused by the field's name (an architecture key)
    with pytest.raises(CheckpointMismatchError, match="denoiser_conditioning: checkpoint 'stacked' vs config 'encoder'"):
        load_checkpoint(tmp_path / "ckpt", config={**exp.cfg.to_flat(), "denoiser_conditioning": "encoder"})


def test_the_mlflow_pyfunc_loads_the_stacked_denoiser_and_draws_what_generate_draws(tmp_path, stacked_experiment):
    exp = stacked_experiment
    exp.save(tmp_path / "ckpt")
    models = generate.from_checkpoint(tmp_path / "ckpt")
    generate.save_weights(models, tmp_path / "weights")
    pyfunc = TrialSampler()
    pyfunc.load_context(SimpleNamespace(artifacts={WEIGHTS_ARTIFACT: str(tmp_path / "weights")}))
    _check_networks(pyfunc.models.to("cpu"), exp)
    images = pyfunc.predict(None, pd.DataFrame({"n": [2], "seed": [4]}), {"sampler": "two-step", "batch_size": 2})
    expected = generate.to_uint8(generate.draw(models, 2, "two-step", seed=4, batch_size=2))
    assert images.shape == (2, 8, 8, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, expected)
