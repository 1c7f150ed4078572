"""Hyperparameter importance of a study that searched more than one parameter (Optuna's fANOVA).

The trials come from MLflow (the analysis' source of truth, also for studies from before the
Optuna RDB storage existed): the completed searched trials, their searched params and the
objective, as an in-memory Optuna study with the search space of study.json; Optuna's
FanovaImportanceEvaluator (a random forest's functional ANOVA, seeded) apportions the
objective's variance among the parameters (importances sum to 1).
"""
from __future__ import annotations

from typing import Optional

import pandas as pd

from analysis.conventions import FINISHED_STATES

MIN_TRIALS = 3        # fewer completed trials: no forest worth fitting
FANOVA_SEED = 0       # the evaluator's forest is random: seeded, the report is reproducible


def distributions(searched: dict) -> dict:
    """study.json's `searched` (key -> {"type", "low", "high", "log"} | {"values"}) as Optuna distributions."""
    import optuna.distributions as od

    out = {}
    for key, d in searched.items():
        if d["type"] == "float":
            out[key] = od.FloatDistribution(float(d["low"]), float(d["high"]), log=bool(d.get("log")))
        elif d["type"] == "int":
            out[key] = od.IntDistribution(int(d["low"]), int(d["high"]), log=bool(d.get("log")))
        else:
            out[key] = od.CategoricalDistribution(list(d["values"]))
    return out


def why_not(trials: pd.DataFrame, searched: dict, objective: Optional[str]) -> Optional[str]:
    """The sentence the report gives instead of the importance, or None when it can be computed."""
    if len(searched) < 2:
        which = ", ".join(f"`{k}`" for k in searched) or "no parameter"
        return f"The study searched {which}: importance apportions an objective among two or more parameters."
    if objective is None or objective not in trials:
        return f"No objective values (`{objective}`) logged yet."
    used = searched_trials(trials, searched, objective)
    if len(used) < MIN_TRIALS:
        return (f"{len(used)} completed searched trial(s) with `{objective}`; importance needs at least "
                f"{MIN_TRIALS}.")
    return None


def searched_trials(trials: pd.DataFrame, searched: dict, objective: str) -> pd.DataFrame:
    """Completed trials proposed by the search (not fixed ones such as the baseline) with the objective."""
    done = trials[trials["state"].isin(FINISHED_STATES)]
    if "trial_origin" in done:
        done = done[done["trial_origin"].fillna("optuna") == "optuna"]
    return done[done[objective].notna() & done[list(searched)].notna().all(axis=1)]


def importance_table(trials: pd.DataFrame, searched: dict, objective: str, mode: str = "min") -> pd.DataFrame:
    """Columns parameter, importance (fraction of the objective's variance, summing to 1), n_trials;
    most important first. Raises ValueError where why_not has a reason."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    reason = why_not(trials, searched, objective)
    if reason:
        raise ValueError(reason)
    used = searched_trials(trials, searched, objective)
    dists = distributions(searched)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    for _, row in used.iterrows():
        params = {k: _native(row[k], dists[k]) for k in dists}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(row[objective])))
    found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=FANOVA_SEED), normalize=True)
    return pd.DataFrame({"parameter": list(found), "importance": [float(v) for v in found.values()],
                         "n_trials": len(used)})


def _native(value, distribution):
    import optuna.distributions as od

    if isinstance(distribution, od.IntDistribution):
        return int(value)
    if isinstance(distribution, od.FloatDistribution):
        return float(value)
    return value
