"""Run or resume one study: preflight, Ray, MLflow, the Tuner, the summary.

A study is found again by its directory `<storage_path>/<name>` (study.json): re-running
the same command resumes it, and flags that would change a stored study are refused.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from study import preflight
from study.cli import NON_IDENTITY_FLAGS, DEFAULT_STORAGE_PATH, default_name, identity_diff, resolve
from study.config import StudyConfig, StudyError
from study.storage import STUDY_FILE, StudyDir, normalize_storage_path
from study.summary import best_rows, format_table, table_rows, ui_hint, write_summary
from study.progress import Fanout, ProgressPrinter
from study.tracking import MlflowTracker

N_STARTUP_MAX = 10  # Optuna's default number of random trials before TPE


def prepare(flags: dict[str, Any]) -> tuple[StudyConfig, bool, dict[str, Any]]:
    """(config, resuming, identity flags to store). Reads study.json if one exists; writes nothing."""
    storage = normalize_storage_path(flags.get("storage_path", DEFAULT_STORAGE_PATH))
    name = flags.get("name") or default_name(flags)
    study_dir = StudyDir(storage, name)
    identity = {k: v for k, v in flags.items() if k not in NON_IDENTITY_FLAGS}
    identity.update(storage_path=storage, name=name)
    try:
        exists = study_dir.exists(STUDY_FILE)
    except OSError as err:
        raise StudyError(f"cannot read the study directory {study_dir.path} ({err})") from None
    if not exists:
        if flags.get("resume"):
            raise StudyError(f"--resume: no study {name!r} under {storage} (no {STUDY_FILE}); nothing to resume")
        return resolve({**flags, **identity}), False, identity
    doc = json.loads(study_dir.read_text(STUDY_FILE))
    stored = StudyConfig.from_json(json.dumps(doc["config"]))
    asked = resolve({**doc["flags"], **identity})
    diffs = identity_diff(stored, asked)
    if diffs:
        raise StudyError(f"study {name!r} exists with other settings: {'; '.join(diffs)}; "
                         "re-run it unchanged to resume, or choose a new --name")
    return dataclasses.replace(stored, address=flags.get("address")), True, doc["flags"]


def optuna_distributions(searched: dict[str, dict]) -> dict:
    import optuna.distributions as od

    out = {}
    for key, d in searched.items():
        if d["type"] == "float":
            out[key] = od.FloatDistribution(d["low"], d["high"], log=d["log"])
        elif d["type"] == "int":
            out[key] = od.IntDistribution(d["low"], d["high"], log=d["log"])
        else:
            out[key] = od.CategoricalDistribution(d["values"])
    return out


def tune_spec(cfg: StudyConfig, gpus_per_trial: float, max_concurrent: int = 0):
    from trainables.tune.tuner import TuneSpec

    return TuneSpec(
        name=cfg.name, storage_path=cfg.storage_path, param_space=cfg.trial,
        distributions=optuna_distributions(cfg.searched), fixed_trials=cfg.fixed_trials,
        num_samples=cfg.num_samples if cfg.searched else 0, objective=cfg.objective, mode=cfg.mode,
        scheduler=cfg.scheduler, grace_period=min(cfg.trial["eval_every"], cfg.trial["max_epochs"]),
        max_epochs=cfg.trial["max_epochs"], seed=cfg.seed,
        n_startup_trials=max(2, min(N_STARTUP_MAX, cfg.num_samples // 3)),
        cpus_per_trial=cfg.cpus_per_trial, gpus_per_trial=gpus_per_trial,
        max_concurrent=max_concurrent or cfg.max_concurrent, max_failures=cfg.max_failures,
        num_to_keep=cfg.num_to_keep, workers_per_trial=cfg.trial.get("workers_per_trial", 1))


def warm_extractor(cfg: StudyConfig) -> None:
    """Build the feature extractor and its reference statistics once in the driver, so that
    parallel trials find them cached (and a missing Inception file fails here, in one line)."""
    from trainables.quality.extractors import build_extractor
    from trainables.quality.reference_stats import reference_statistics

    dataset, data_dir = cfg.trial["dataset"], cfg.trial["data_dir"]
    try:
        model = build_extractor(cfg.extractor, dataset, data_dir=data_dir, log=lambda m: None,
                                inception_weights=cfg.trial.get("inception_weights") or None)
        reference_statistics(dataset, model, data_dir=data_dir, log=lambda m: None)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        raise StudyError(str(err).splitlines()[0]) from None


def run_study(cfg: StudyConfig, resuming: bool, flags: dict[str, Any], log=print) -> dict[str, Any]:
    """Run the study to its end (or an interrupt); returns the summary as plain data."""
    from trainables.tune import tuner as tune_adapter

    study_dir = StudyDir(cfg.storage_path, cfg.name)
    preflight.check_storage(cfg)
    preflight.check_mlflow(cfg.mlflow_uri)
    if not resuming:
        warm_extractor(cfg)
    cluster = tune_adapter.connect(cfg.address)
    try:
        preflight.check_cpus(cfg, cluster)
        gpus = preflight.resolve_gpus(cfg, cluster)
        if not resuming:
            study_dir.write_text(STUDY_FILE, json.dumps({"config": json.loads(cfg.to_json()), "flags": flags},
                                                        indent=2, sort_keys=True))
        tracker = MlflowTracker(cfg, study_dir)
        tracker.setup()
        spec = tune_spec(cfg, gpus, preflight.max_concurrent(cfg, cluster, gpus))
        printer = ProgressPrinter(list(cfg.searched), cfg.seed, cfg.objective, cfg.trial["max_epochs"])
        listener = Fanout(tracker, printer)
        restorable = tune_adapter.can_restore(study_dir.path)
        log(f"{'resuming' if restorable else 'starting'} study {cfg.name!r} in {study_dir.path} "
            f"({cfg.space}: {cfg.num_samples} searched + {len(cfg.fixed_trials)} fixed trials, "
            f"{cfg.cpus_per_trial:g} CPU / {gpus:g} GPU per trial"
            + (f" worker, {cfg.trial['workers_per_trial']} DDP workers)" if cfg.trial.get("workers_per_trial", 1) > 1
               else ")"))
        if not restorable:
            tracker.mark_interrupted()  # runs of an attempt killed before Tune saved any state
        tuner = tune_adapter.restore_tuner(spec, study_dir.path) if restorable else tune_adapter.build_tuner(spec, listener)
        start = time.time()
        records = tune_adapter.fit(tuner, cfg.objective, cfg.mode)
        wall = time.time() - start
    finally:
        tune_adapter.shutdown()
    return finish(cfg, study_dir, tracker, records, wall, gpus, log)


def finish(cfg, study_dir, tracker, records, wall, gpus, log) -> dict[str, Any]:
    states = tracker.states()
    expected = cfg.num_samples * bool(cfg.searched) + len(cfg.fixed_trials)
    interrupted = len(records) < expected or any(s == "running" for s in states.values())
    if interrupted:
        tracker.mark_interrupted()
        states = tracker.states()
    rows = table_rows(cfg, records, states)
    best = best_rows(cfg, rows)
    if cfg.checkpoint_artifact == "best" and not interrupted:
        _log_best_checkpoints(tracker, records)
    summary_run = write_summary(cfg, study_dir, tracker, rows, best, wall, gpus)
    log("")
    log(f"study {cfg.name!r}: {len(rows)} trials in {wall / 60:.1f} min "
        + ", ".join(f"{sum(r['state'] == s for r in rows)} {s}" for s in ("completed", "pruned", "errored")))
    log(format_table(cfg, rows))
    if interrupted:
        log(f"\nINTERRUPTED: resume with the same command, or: python -m study.run --resume --name {cfg.name} "
            f"--storage-path {cfg.storage_path}")
    for row in best:
        label = "best" if len(best) == 1 else "Pareto-optimal"
        log(f"\n{label} ({', '.join(f'{o} {m}' for o, m in zip(cfg.objective, cfg.mode))}): {row['run']}")
        shown = dict.fromkeys((*cfg.objective, "bpd_bound"))
        log("  " + ", ".join(f"{k}={row[k]:.4g}" for k in shown if k in row))
        keys = dict.fromkeys(("kind", "noise_std", "num_mixtures", *cfg.searched))
        log("  config: " + " ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                                    for k in keys if k in row))
    log(f"\nresults: {study_dir.path}  (study.json, results.csv, optuna_trials.json, Ray experiment"
        + (", mlflow.db)" if cfg.mlflow_uri.startswith("sqlite:") else ")"))
    log(ui_hint(cfg, tracker.experiment_id))
    return {"rows": rows, "best": best, "interrupted": interrupted, "summary_run_id": summary_run}


def _log_best_checkpoints(tracker: MlflowTracker, records: list[dict]) -> None:
    from trainables.tune.tuner import local_checkpoint

    for rec in records:
        if rec["best_checkpoint"]:
            with local_checkpoint(rec["best_checkpoint"]) as directory:
                tracker.log_checkpoint(rec["trial_id"], directory)
