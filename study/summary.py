"""The end of a study: the result table, the best trial (or Pareto front), the summary run, the printout.

results.csv has one row per trial; every row also carries its configuration group (study/groups.py:
`config_group`, `config_label`, `config_trials`, `config_completed`) and, for every metric M with a
standard error `M_se` and for the objectives and `bpd_bound`, the group's statistics over its completed
seeds: `M:mean`, `M:t95` (half-width of the 95% t-interval across seeds, empty below two seeds),
`M:n` (seeds with a value) and, where M has one, `M:se` (bootstrap SE of that mean).
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Optional

from search_spaces.metric_names import metric_names, standard_error_name
from study.config import StudyConfig
from study.groups import config_group, config_label, seed_stats
from study.tracking import OPTUNA_FILE, VIEW_KEY, MlflowTracker, run_name
from study.storage import STUDY_FILE, StudyDir
from trainables.tune.listener import ERRORED, ended_state

RESULTS_FILE = "results.csv"
FINISHED_STATES = ("completed",)


def trial_state(record: dict, max_epochs: int) -> str:
    """A trial's state from Tune's record, where MLflow has none (an interrupted trial's tag says so)."""
    if record["error"]:
        return ERRORED
    return ended_state(int(record["metrics"].get("epoch", 0)), max_epochs)


def table_rows(cfg: StudyConfig, records: list[dict], states: dict[str, str],
               names: Optional[dict[str, str]] = None) -> list[dict[str, Any]]:
    """One row per trial: what it is (its MLflow run name where given), how it ended, and its final metrics."""
    names = names or {}
    rows = []
    for rec in sorted(records, key=lambda r: (r["config"].get("kind") != "baseline", r["config"].get("noise_std", 0),
                                              r["config"].get("num_mixtures", 0), r["trial_id"])):
        cfg_ = rec["config"]
        # A trial Tune created but the searcher had not configured yet (Ctrl-C at the start) has no config.
        started = all(k in cfg_ for k in ("kind", "noise_std", "num_mixtures"))
        row = {"trial_id": rec["trial_id"],
               "run": names.get(rec["trial_id"]) or (run_name(cfg_, list(cfg.searched), cfg.seed) if started
                                                     else "(not started)"),
               "kind": cfg_.get("kind"), "noise_std": cfg_.get("noise_std"), "num_mixtures": cfg_.get("num_mixtures"),
               "state": states.get(rec["trial_id"]) or (trial_state(rec, int(cfg_.get("max_epochs", 0)))
                                                         if started else "pending"),
               "error": rec["error"] or "",
               "config_group": config_group(cfg_) if started else "",
               "config_label": config_label(cfg_, list(cfg.searched)) if started else ""}
        row.update({k: cfg_.get(k) for k in cfg.searched if k not in row})
        row.update(rec["metrics"])
        rows.append(row)
    return rows


def best_rows(cfg: StudyConfig, rows: list[dict]) -> list[dict]:
    """Single objective: the best completed trial; several: the Pareto front of completed trials."""
    done = [r for r in rows if r["state"] in FINISHED_STATES and all(o in r for o in cfg.objective)]
    if not done:
        return []
    sign = {"min": 1.0, "max": -1.0}
    keyed = [(tuple(sign[m] * float(r[o]) for o, m in zip(cfg.objective, cfg.mode)), r) for r in done]
    if not cfg.multi_objective:
        return [min(keyed, key=lambda kr: kr[0])[1]]
    return [r for k, r in keyed
            if not any(all(a <= b for a, b in zip(k2, k)) and k2 != k for k2, _ in keyed)]


def to_csv(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def interval_metrics(cfg: StudyConfig, rows: list[dict]) -> list[str]:
    """Metrics that get statistics over seeds: every metric with a standard error `<metric>_se` in some row
    (generic: a new metric with an SE gets them too), then the objectives and `bpd_bound`."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with_se = [k for k in keys if standard_error_name(k) in keys]
    return list(dict.fromkeys([*with_se, *(k for k in (*cfg.objective, "bpd_bound") if k in keys)]))


def group_stats(cfg: StudyConfig, rows: list[dict]) -> dict[str, dict[str, Any]]:
    """config_group -> {"label", "trials", "completed", metric: seed_stats over its completed seeds}."""
    metrics = interval_metrics(cfg, rows)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("config_group"):
            groups.setdefault(row["config_group"], []).append(row)
    out = {}
    for group, members in groups.items():
        done = [r for r in members if r["state"] in FINISHED_STATES]
        stats = {"label": members[0]["config_label"], "trials": len(members), "completed": len(done)}
        for m in metrics:
            ses = [r.get(standard_error_name(m)) for r in done] if _has_se(rows, m) else None
            stats[m] = seed_stats([r.get(m) for r in done], ses)
        out[group] = stats
    return out


def with_group_columns(cfg: StudyConfig, rows: list[dict]) -> list[dict]:
    """The rows of results.csv: each trial's row with its group's statistics over seeds (module docstring)."""
    stats = group_stats(cfg, rows)
    columns = [(m, ("mean", "t95", "n", "se") if _has_se(rows, m) else ("mean", "t95", "n"))
               for m in interval_metrics(cfg, rows)]
    out = []
    for row in rows:
        group = stats.get(row.get("config_group"))
        extra: dict[str, Any] = {}
        if group is not None:
            extra = {"config_trials": group["trials"], "config_completed": group["completed"]}
            for m, keys in columns:
                extra.update({f"{m}:{k}": "" if group[m][k] is None else group[m][k] for k in keys})
        out.append({**row, **extra})
    return out


def _has_se(rows: list[dict], metric: str) -> bool:
    return any(standard_error_name(metric) in r for r in rows)


def format_table(cfg: StudyConfig, rows: list[dict]) -> str:
    """The paper's comparison for people: distance one-step / two-step (or direct) ± its standard
    error, with the sample count in the header, and bits/dim."""
    dist = metric_names(cfg.extractor)["distance"]
    n = sample_count(cfg)
    columns = [("run", "run", "s"), ("state", "state", "s"), ("epochs", "epoch", "d"),
               ("sigma", "noise_std", ".2f"), ("K", "num_mixtures", "d"),
               (f"{dist} one-step ± SE (n={n})", f"{dist}_onestep", ".2f"),
               (f"{dist} two-step ± SE (n={n})", f"{dist}_twostep", ".2f"),
               (f"{dist} direct ± SE (n={n})", f"{dist}_direct", ".2f"), ("bpd_bound", "bpd_bound", ".3f"),
               ("test_bpd_smoothed", "test_bpd_smoothed", ".3f")]
    header = "| " + " | ".join(c[0] for c in columns) + " |"
    lines = [header, "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for _, key, fmt in columns:
            value = row.get(key)
            cells.append("" if value is None or value == "" else format(int(value) if fmt == "d" else value, fmt)
                         + with_se(row, key, fmt))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_group_table(cfg: StudyConfig, rows: list[dict]) -> str:
    """Per configuration: the mean over its completed seeds ± the half-width of its 95% t-interval across
    seeds, [the bootstrap SE of that mean]; for a study without repeats, the one line that says its ± SE
    covers sampling noise only."""
    stats = group_stats(cfg, rows)
    if not any(g["trials"] >= 2 for g in stats.values()):
        return (f"intervals: ± SE is the bootstrap over one trial's {sample_count(cfg)} generated samples: sampling "
                "noise only, not seed-to-seed variation (one seed per configuration; --repeats 3 runs three and "
                "prints a 95% interval across seeds)")
    dist = metric_names(cfg.extractor)["distance"]
    columns = [(f"{dist} {label}", f"{dist}_{sampler}") for sampler, label in
               (("onestep", "one-step"), ("twostep", "two-step"), ("direct", "direct"))]
    columns += [(m, m) for m in dict.fromkeys((*cfg.objective, "bpd_bound")) if m not in (dist,)]
    columns = [(h, m) for h, m in columns if any(g.get(m, {}).get("n") for g in stats.values())]
    lines = [f"per configuration, over its seeds: mean ± t95 (seeds) [SE (bootstrap, {sample_count(cfg)} samples)]",
             "| configuration | seeds completed | " + " | ".join(h for h, _ in columns) + " |",
             "|" + "|".join("---" for _ in range(len(columns) + 2)) + "|"]
    for group in stats.values():
        cells = [_interval_cell(group[m]) for _, m in columns]
        lines.append(f"| {group['label']} | {group['completed']}/{group['trials']} | " + " | ".join(cells) + " |")
    lines.append(f"mean ± t95 [SE]: the mean over a configuration's completed seeds ± the half-width of its 95% "
                 f"t-interval across seeds, t(0.975, n-1)·sd/√n (seed-to-seed variation); [SE]: the bootstrap "
                 f"standard error of that mean from the {sample_count(cfg)} generated samples per distance, "
                 "√(Σ SE²)/n (sampling noise only); no t95 below two seeds")
    return "\n".join(lines)


def _interval_cell(stat: dict[str, Any]) -> str:
    if not stat["n"]:
        return ""
    text = f"{stat['mean']:.2f}" + (f" ± {stat['t95']:.2f}" if stat["t95"] is not None else "")
    return text + (f" [{stat['se']:.2f}]" if stat["se"] is not None else "")


def sample_count(cfg: StudyConfig):
    """Generated images behind every distance of the study (`num_eval_samples`; "?" where it is searched)."""
    return cfg.trial.get("num_eval_samples", "?")


def with_se(row: dict, key: str, fmt: str = ".4g") -> str:
    """" ± <SE>" where the row holds the standard error of `key` (`<key>_se`), else ""."""
    se = row.get(standard_error_name(key))
    return "" if se is None or se == "" or se != se else f" ± {format(se, fmt)}"


def write_summary(cfg: StudyConfig, study_dir: StudyDir, tracker: MlflowTracker, rows: list[dict],
                  best: list[dict], wall_seconds: float, interrupted: bool = False) -> Optional[str]:
    """results.csv in the study dir, and the summary into the study's run in MLflow (the trials' parent)."""
    from mlflow.entities import Metric

    csv_text = to_csv(with_group_columns(cfg, rows))
    study_dir.write_text(RESULTS_FILE, csv_text)
    client = tracker.client
    run_id = tracker.parent_run_id
    counts = {f"n_{s}": sum(r["state"] == s for r in rows) for s in ("completed", "pruned", "errored")}
    metrics = {"n_trials": len(rows), **counts, "wall_seconds_last_session": wall_seconds}
    if len(best) == 1:
        metrics.update({f"best_{o}": float(best[0][o]) for o in cfg.objective})
        client.set_tag(run_id, "best_trial_id", best[0]["trial_id"])
        client.set_tag(run_id, "best_run", best[0]["run"])
        best_run_id = tracker.run_id(best[0]["trial_id"])
        if best_run_id:
            client.set_tag(run_id, "best_run_id", best_run_id)
    import time

    now = int(time.time() * 1000)
    session = len(client.get_metric_history(run_id, "n_trials"))  # step: one per session that ended the study
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, session) for k, v in metrics.items()])
    client.log_text(run_id, csv_text, RESULTS_FILE)
    client.log_text(run_id, study_dir.read_text(STUDY_FILE), STUDY_FILE)
    if study_dir.exists(OPTUNA_FILE):
        client.log_text(run_id, study_dir.read_text(OPTUNA_FILE), OPTUNA_FILE)
    if cfg.multi_objective:
        client.log_text(run_id, json.dumps(best, indent=1, default=str), "pareto_front.json")
    client.set_terminated(run_id, status="KILLED" if interrupted else "FINISHED")
    return run_id


def runs_page(base_url: str, experiment_id: Optional[str]) -> str:
    """The runs table of the experiment in MLflow's model-training view, in the study's shared view
    (tracking.trials_view: the trials with their parameters, best first). MLflow 3's UI keeps a workflow
    type apart from the experiment's kind tag (URL parameter `workflowType`, default `genai`, which opens
    the GenAI overview); `machine_learning` is the training view (read from mlflow/server/js, 3.17)."""
    return (f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={VIEW_KEY}")


def ui_hint(cfg: StudyConfig, experiment_id: Optional[str], optuna_storage: Optional[str] = None) -> str:
    if cfg.mlflow_uri.startswith(("http://", "https://")):
        lines = [f"MLflow: {runs_page(cfg.mlflow_uri, experiment_id)}"]
    else:
        lines = [f"MLflow UI: mlflow ui --backend-store-uri {cfg.mlflow_uri} --port 5000   "
                 f"(then open {runs_page('http://127.0.0.1:5000', experiment_id)})"]
    if optuna_storage:
        from study.preflight import redact_url

        shown = redact_url(optuna_storage)  # a password in the URL is not printed
        lines.append(f"Optuna:    optuna-dashboard {shown}   (pip install optuna-dashboard; "
                     f"or optuna.load_study(study_name={cfg.name!r}, storage={shown!r}))")
    return "\n".join(lines)
