"""Run or resume one study: preflight, Ray, MLflow, the Tuner, the summary.

A study is found again by its directory `<storage_path>/<name>` (study.json): re-running
the same command resumes it, and flags that would change a stored study are refused.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Any

from study import extend, preflight
from study.recovery import ctrl_c, disk_space, leftovers, state_backup
from trainables.atomic_write import sweep_temp_files
from study.cli import NON_IDENTITY_FLAGS, default_name, identity_diff, option, resolve
from study.config import StudyConfig, StudyError
from study.recovery.reconcile import reconcile
from study.storage import OPTUNA_DB, STUDY_FILE, StudyDir, normalize_storage_path
from study.summary import (
    best_rows, format_group_table, format_table, group_stats, sample_count, table_rows, ui_hint, with_se, write_summary,
)
from study.progress import ProgressPrinter, StudyLine
from study.recovery.trust import check_trusted
from study.tracking import MlflowTracker
from trainables.tune.listener import Fanout

N_STARTUP_MAX = 10  # Optuna's default number of random trials before TPE
WARM_UP_IMAGES = 64  # training images of an image-file dataset the driver decodes before the trials


def prepare(flags: dict[str, Any]) -> tuple[StudyConfig, bool, dict[str, Any]]:
    """(config, resuming, identity flags to store). Reads study.json if one exists; writes nothing."""
    storage = normalize_storage_path(option(flags, "storage_path"))
    name = option(flags, "name") or default_name(flags)
    study_dir = StudyDir(storage, name)
    identity = {k: v for k, v in flags.items() if k not in NON_IDENTITY_FLAGS}
    identity.update(storage_path=storage, name=name)
    try:
        exists = study_dir.exists(STUDY_FILE)
    except OSError as err:
        raise StudyError(f"cannot read the study directory {study_dir.path} ({err})") from None
    check_trusted(study_dir)  # also without study.json: Tune would still unpickle a tuner.pkl found there
    if not exists:
        if flags.get("resume"):
            raise StudyError(f"--resume: no study {name!r} under {storage} (no {STUDY_FILE}); nothing to resume")
        return resolve({**flags, **identity}), False, identity
    doc, stored = read_study_file(study_dir)
    asked, grown = extend.comparable_request(stored, resolve({**doc["flags"], **identity}), flags, doc["flags"])
    diffs = identity_diff(stored, asked)
    if diffs:
        raise StudyError(f"study {name!r} exists with other settings: {'; '.join(diffs)}; "
                         "re-run it unchanged to resume, or choose a new --name")
    cfg = dataclasses.replace(stored, address=flags.get("address"), num_samples=grown or stored.num_samples)
    return cfg, True, doc["flags"]


def read_study_file(study_dir: StudyDir) -> tuple[dict, StudyConfig]:
    """study.json as (document, stored config); a damaged file is a one-line StudyError."""
    try:
        doc = json.loads(study_dir.read_text(STUDY_FILE))
        stored = StudyConfig.from_json(json.dumps(doc["config"]))
        if not isinstance(doc["flags"], dict):
            raise TypeError(f"flags is a {type(doc['flags']).__name__}, not an object")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise StudyError(f"{study_dir.path}/{STUDY_FILE} is not a readable study file ({reason}); "
                         "restore it from a backup or choose a new --name") from None
    return doc, stored


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
        num_to_keep=cfg.num_to_keep, workers_per_trial=cfg.trial.get("workers_per_trial", 1),
        optuna_storage=optuna_storage(cfg), repeats=cfg.repeats)


def optuna_storage(cfg: StudyConfig):
    """The Optuna study's RDB storage (optuna-dashboard and optuna.load_study read it, also while the
    study runs): --optuna-storage, else optuna.db in a local study directory; None for a remote storage
    path without --optuna-storage (the search stays in memory there) and for a space that searches nothing."""
    if not cfg.searched:
        return None
    if cfg.optuna_storage:
        return cfg.optuna_storage
    study_dir = StudyDir(cfg.storage_path, cfg.name)
    return f"sqlite:///{study_dir.path}/{OPTUNA_DB}" if study_dir.is_local else None


def _existing_optuna_storage(cfg: StudyConfig):
    """optuna_storage where it exists (a local study from before it has no optuna.db file)."""
    url = optuna_storage(cfg)
    if url and url.startswith("sqlite:///") and not cfg.optuna_storage:
        return url if os.path.exists(url[len("sqlite:///"):]) else None
    return url


def warm_extractor(cfg: StudyConfig, log=print) -> None:
    """Build the feature extractor and its reference statistics once in the driver, so that
    parallel trials find them cached (and a missing Inception file fails here, in one line).
    On a fresh machine this trains the dataset's classifier (minutes): its progress is logged."""
    from trainables.quality.extractors import build_extractor
    from trainables.quality.reference_stats import reference_statistics

    from trainables.data import RESIZABLE, load_dataset

    dataset, data_dir = cfg.trial["dataset"], cfg.trial["data_dir"]
    image_size = cfg.trial.get("image_size", 0)
    try:  # the training split too: a damaged file fails here, not in every trial
        # (image-file datasets: a few images suffice to find the files; decoding all is each trial's job)
        subset = cfg.trial.get("train_subset", 0) or (WARM_UP_IMAGES if dataset in RESIZABLE else 0)
        load_dataset(dataset, "train", data_dir, image_size=image_size, subset=subset)
        model = build_extractor(cfg.extractor, dataset, data_dir=data_dir, log=log,
                                inception_weights=cfg.trial.get("inception_weights") or None)
        reference_statistics(dataset, model, data_dir=data_dir, log=log, image_size=image_size)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        raise StudyError(" ".join(str(err).split())) from None  # one line, hint included


def run_study(cfg: StudyConfig, resuming: bool, flags: dict[str, Any], log=print) -> dict[str, Any]:
    """Run the study to its end (or an interrupt); returns the summary as plain data."""
    from trainables.tune import tuner as tune_adapter

    study_dir = StudyDir(cfg.storage_path, cfg.name)
    preflight.check_storage(cfg)
    # the MLflow and Optuna stores were checked before the lock (study/run.py): a refusal writes nothing
    if not study_dir.is_local and cfg.searched and not cfg.optuna_storage:
        log("note: Optuna's search runs in memory on a remote --storage-path (saved with Tune's state); "
            "--optuna-storage URL puts it in a database that optuna-dashboard reads")
    disk_space.warn_if_short(cfg, log)
    if not resuming:
        warm_extractor(cfg, log)
    if study_dir.is_local:
        leftovers.stop_leftovers(study_dir.path, log)  # a SIGKILLed driver's local Ray (we hold the lock)
        sweep_temp_files(study_dir.path)  # and its half-written files
        if not cfg.address:
            leftovers.tag_driver(study_dir.path)  # a kill while Ray starts leaves nothing untracked
    cluster = tune_adapter.connect(cfg.address)
    try:
        if study_dir.is_local:
            leftovers.record(study_dir.path, leftovers.local_ray_processes(tune_adapter.local_session_dir()))
        preflight.check_cpus(cfg, cluster)
        gpus = preflight.resolve_gpus(cfg, cluster)
        if not resuming:
            from study import estimate

            estimate.announce(cfg, cluster.get("CPU", 0.0), cluster.get("GPU", 0.0), gpus, log)
        if not resuming:
            study_dir.write_text(STUDY_FILE, json.dumps({"config": json.loads(cfg.to_json()), "flags": flags},
                                                        indent=2, sort_keys=True))
        else:
            grown_from = extend.record_extension(study_dir, cfg, flags)
            if grown_from is not None:
                log(f"extending study {cfg.name!r} from {grown_from} to {cfg.num_samples} searched trials")
        tracker = MlflowTracker(cfg, study_dir)
        tracker.setup(gpus)
        spec = tune_spec(cfg, gpus, preflight.max_concurrent(cfg, cluster, gpus))
        printer = ProgressPrinter(list(cfg.searched), cfg.seed, cfg.objective, cfg.trial["max_epochs"], tracker.name)
        listener = Fanout(tracker, printer)
        if study_dir.is_local:
            state_backup.recover(study_dir.path, log)  # a state cut by a full disk or a kill: its last good copy
        restorable = tune_adapter.can_restore(study_dir.path)
        if restorable:
            tune_adapter.repair_checkpoints(study_dir.path, log)  # a kill between Tune's pruning and its save
        log(f"{'resuming' if restorable else 'starting'} study {cfg.name!r} in {study_dir.path} "
            f"({cfg.space}: {cfg.num_samples} searched + {len(cfg.fixed_trials)} fixed "
            + (f"configurations x {cfg.repeats} seeds = {cfg.total_trials} trials, " if cfg.repeats > 1 else "trials, ")
            + f"{cfg.cpus_per_trial:g} CPU / {gpus:g} GPU per trial"
            + (f" worker, {cfg.trial['workers_per_trial']} DDP workers)" if cfg.trial.get("workers_per_trial", 1) > 1
               else ")"))
        log(ui_hint(cfg, tracker.experiment_id, optuna_storage(cfg)))
        tracker.mark_interrupted()  # runs a killed driver left RUNNING (the lock says none is alive); resumed ones reopen
        study_line = StudyLine(cfg.objective[0], tracker.name)
        if restorable:  # Tune's restored callbacks get this process's listeners
            tuner = tune_adapter.restore_tuner(spec, study_dir.path, listener, study_line)
        else:
            tuner = tune_adapter.build_tuner(spec, listener, study_line)
        start = time.time()
        with state_backup.Snapshotter(study_dir.path, log=log) if study_dir.is_local else contextlib.nullcontext():
            ctrl_c.raise_if_received()  # from here on Tune's handler takes a Ctrl-C
            records = tune_adapter.fit(tuner, cfg.objective, cfg.mode)
        wall = time.time() - start
    finally:
        tune_adapter.shutdown()
        if study_dir.is_local:
            leftovers.forget(study_dir.path)  # shut down cleanly: nothing of it left to stop
    return finish(cfg, study_dir, tracker, records, wall, gpus, log)


def finish(cfg, study_dir, tracker, records, wall, gpus, log) -> dict[str, Any]:
    expected = cfg.total_trials
    ended = len(records) >= expected and all(r["error"] or r["metrics"].get("epoch") is not None for r in records)
    reconcile(tracker, records, study_ended=ended and not _any_running(tracker))
    states = tracker.states()
    # a trial without a result or an error was stopped by the interrupt (Tune stops a trial that has
    # started but not reported when a Ctrl-C ends the run), even where its run reads ended
    interrupted = not ended or any(s == "running" for s in states.values())
    if interrupted:
        tracker.mark_interrupted()
        states = tracker.states()
    rows = table_rows(cfg, records, states, tracker.names())
    best = best_rows(cfg, rows)
    if cfg.checkpoint_artifact == "best" and not interrupted:
        _log_best_checkpoints(tracker, records, cfg.storage_path)
    summary_run = write_summary(cfg, study_dir, tracker, rows, best, wall, interrupted)
    log("")
    log(f"study {cfg.name!r}: {len(rows)} trials in {wall / 60:.1f} min "
        + ", ".join(f"{sum(r['state'] == s for r in rows)} {s}" for s in ("completed", "pruned", "errored")))
    log(format_table(cfg, rows))
    log("")
    log(format_group_table(cfg, rows))
    if interrupted:
        log(f"\nINTERRUPTED: resume with the same command, or: python -m study.run --resume --name {cfg.name} "
            f"--storage-path {cfg.storage_path}")
    _log_best(cfg, rows, best, log)
    log(f"\nresults: {study_dir.path}  (study.json, results.csv, optuna_trials.json"
        + (", optuna.db" if (optuna_storage(cfg) or "").startswith(f"sqlite:///{study_dir.path}/") else "")
        + ", Ray experiment" + (", mlflow.db)" if cfg.mlflow_uri.startswith("sqlite:") else ")"))
    log(ui_hint(cfg, tracker.experiment_id, _existing_optuna_storage(cfg)))
    return {"rows": rows, "best": best, "interrupted": interrupted, "summary_run_id": summary_run}


def _log_best(cfg: StudyConfig, rows: list[dict], best: list[dict], log) -> None:
    """The best trial (or the Pareto front): its numbers ± SE, its configuration's mean ± t95 over its seeds
    (a study with --repeats), its config."""
    stats = group_stats(cfg, rows)
    for row in best:
        label = "best" if len(best) == 1 else "Pareto-optimal"
        log(f"\n{label} ({', '.join(f'{o} {m}' for o, m in zip(cfg.objective, cfg.mode))}): {row['run']}")
        shown = dict.fromkeys((*cfg.objective, "bpd_bound"))
        log("  " + ", ".join(f"{k}={row[k]:.4g}{with_se(row, k)}" for k in shown if k in row)
            + f"  (± SE; distances of {sample_count(cfg)} samples)")
        group = stats.get(row["config_group"], {})
        if group.get("trials", 0) >= 2:
            log(f"  its configuration over {group['completed']}/{group['trials']} seeds: " + ", ".join(
                f"{k}={group[k]['mean']:.4g}" + (f" ± {group[k]['t95']:.3g}" if group[k]["t95"] is not None else "")
                for k in shown if k in group and group[k]["n"]) + "  (mean ± t95 across seeds)")
        keys = dict.fromkeys(("kind", "noise_std", "num_mixtures", *cfg.searched))
        log("  config: " + " ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                                    for k in keys if k in row))


def _any_running(tracker: MlflowTracker) -> bool:
    return any(s == "running" for s in tracker.states().values())


def _log_best_checkpoints(tracker: MlflowTracker, records: list[dict], storage_path: str) -> None:
    from trainables.tune.tuner import local_checkpoint

    for rec in records:
        if rec["best_checkpoint"]:
            with local_checkpoint(rec["best_checkpoint"], storage_path) as directory:
                tracker.log_checkpoint(rec["trial_id"], directory)
