"""The code file of the logged model ("models from code"): MLflow runs it on load.

It runs inside the model's copy of the `trainables` package (logged with code_paths),
which MLflow puts first on sys.path before it runs this file.
"""
import mlflow

from trainables.mlflow_model.sampler import TrialSampler

mlflow.models.set_model(TrialSampler())
