"""The Ray Tune adapter: the only package of the project that imports ray (listener.py does not).

It holds what must speak Ray's API and nothing else; study logic lives in `study/`,
which passes plain data in and gets plain data back. Importing it has no side effects.

- `trainable.py`: the function trainable (one trial = one Experiment).
- `data_parallel.py`: the trainable of `workers_per_trial > 1`: a Ray Train TorchTrainer (DDP).
- `search.py`: Optuna that records early-stopped trials as PRUNED; fixed trials beside it.
- `repeats.py`: every configuration with R seeds (`--repeats`), Optuna told once per configuration.
- `scheduler.py`: ASHA that never stops fixed trials; the callback that saves its rungs.
- `listener.py`: the trial events as a typed base class with no-op defaults (`TrialListener`,
  `Fanout`); no ray import, so `study` subclasses it freely.
- `events.py`: the callback that hands trial events to the study's listener.
- `results.py`: Ray's result dicts as plain data.
- `tuner.py`: connect to Ray, build / restore (attaching the driver's listener) / fit the Tuner.
- `checkpoint_repair.py`: before a restore, a trial whose latest checkpoint Tune pruned just
  before a kill is pointed at its newest complete one.
- `logs.py`: Ray's loggers, which the driver routes to its log file (study/recovery/driver_log.py).
- `internals.py`: every private attribute of Ray or Optuna used, with a check that names the versions.
"""
