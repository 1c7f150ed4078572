"""A trial's models as an MLflow model anyone can load: `mlflow.pyfunc.load_model(uri).predict(...)`
draws images, without Ray, the study code or the project's checkpoint format.

- `sampler.py`: the PythonModel (weights in, images out) and `log_sampler`, which logs and
  registers it (`python -m study.sample --register NAME`).
- `code.py`: the model's code file (MLflow "models from code": on load MLflow runs this
  file; nothing is unpickled).
"""
