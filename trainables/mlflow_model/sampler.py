"""The MLflow pyfunc of a trial: predict draws images from its networks.

What the logged model holds (artifacts/weights/): one plain state_dict file per network
(`baseline.pt`, or `smoothed.pt` + `denoiser.pt`), loaded with torch.load(weights_only=True),
and `config.json`, the trial's flat TrialConfig (architecture, dataset, noise_std). Its
code: this package's `trainables/` directory (code_paths), so the model needs torch and
numpy, not Ray, MLflow's tracking of the study, or the study's checkpoint format.

Input: a DataFrame with columns `n` (images) and `seed` (optional, default 0), one row per
request; params: `sampler` (two-step | one-step | direct; "" = the trial's product) and
`batch_size` (0 = from the memory available) and `threads` (torch's CPU threads for the
process; 0 = leave them; 1 is the fastest on small images, see generate.set_threads).
Output: uint8 images (N, H, W, C), the rows' images in order, v = round((x + 1) * 127.5).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import mlflow
import numpy as np

WEIGHTS_ARTIFACT = "weights"
MODEL_NAME = "model"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # trainables/
CODE_FILE = Path(__file__).with_name("code.py")


class TrialSampler(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        import torch

        from trainables import generate

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.models = generate.from_weights(context.artifacts[WEIGHTS_ARTIFACT]).to(self.device)

    def predict(self, context, model_input, params: Optional[dict] = None) -> np.ndarray:
        from trainables import generate

        params = params or {}
        generate.set_threads(int(params.get("threads") or 0))
        sampler = params.get("sampler") or self.models.samplers[0]
        self.models.check_sampler(sampler)
        rows = model_input.to_dict("records")
        out = []
        for row in rows:
            n = int(row["n"])
            seed = row.get("seed")
            seed = 0 if seed is None or seed != seed else int(seed)  # missing or NaN: 0
            batch = int(params.get("batch_size") or 0) or generate.auto_batch_size(self.models, n, self.device)
            images = generate.draw(self.models, n, sampler, seed=seed, batch_size=batch,
                                   threads=int(params.get("threads") or 0) or None)
            out.append(generate.to_uint8(images))
        return np.concatenate(out) if out else np.zeros((0, *self._hwc()), np.uint8)

    def _hwc(self) -> tuple[int, int, int]:
        c, h, w = self.models.image_shape
        return h, w, c


def signature(models):
    """Inputs n, seed (long); params sampler, batch_size, threads; output uint8 (-1, H, W, C)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    c, h, w = models.image_shape
    return ModelSignature(
        inputs=Schema([ColSpec("long", "n"), ColSpec("long", "seed", required=False)]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, h, w, c))]),
        params=ParamSchema([ParamSpec("sampler", "string", models.samplers[0]), ParamSpec("batch_size", "long", 0),
                            ParamSpec("threads", "long", 0)]))


def requirements() -> list[str]:
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", f"mlflow=={mlflow.__version__}"]


def log_sampler(models, *, registered_name: Optional[str], tags: dict[str, str]):
    """Log the trial's networks as a pyfunc in the active experiment of the current tracking URI
    (and register it under registered_name); returns MLflow's ModelInfo."""
    import pandas as pd

    from trainables import generate

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp, WEIGHTS_ARTIFACT)
        generate.save_weights(models, weights)
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME, python_model=str(CODE_FILE), artifacts={WEIGHTS_ARTIFACT: str(weights)},
            code_paths=[str(PACKAGE_DIR)], signature=signature(models), pip_requirements=requirements(),
            registered_model_name=registered_name, tags=tags,
            input_example=pd.DataFrame({"n": [2], "seed": [0]}))  # MLflow runs it once: a load-and-draw check
