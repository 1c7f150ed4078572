"""Command line of `python -m study.run`: the parser and the resolution of its flags into a StudyConfig.

Every flag that sets a trial hyperparameter is spelled as its TrialConfig key
(`--noise-std` -> noise_std); `--set KEY=VALUE` reaches any other key.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Any, Optional

from search_spaces import OBJECTIVE_MODES, SPACES
from search_spaces.metric_names import default_extractor, metric_names
from study.config import (
    CHECKPOINT_ARTIFACTS, GPUS_PER_TRIAL_BY_DATASET, GPUS_PER_TRIAL_OTHERWISE, SCHEDULERS, SMOKE_TEST_NUM_SAMPLES,
    ASHA_MIN_TRIALS, STUDY_SIZE, StudyConfig, StudyError, check_trials, domain_to_data, get_space, parse_assignments,
    resolve_objective, shared_trial_values,
)
from study.storage import MLFLOW_DB, StudyDir, normalize_storage_path
from trainables.cache_files import DEFAULT_DATA_DIR, INCEPTION_WEIGHTS_ENV_VAR
from trainables.config import DATASETS, DataConfig, TrainConfig

DEFAULT_STORAGE_PATH = "~/smoothing-studies"


@dataclass(frozen=True)
class Default:
    value: Any = None   # what resolve() uses when the flag is not given; None: derived as `says`
    says: str = ""      # how --help states a derived default (value None)
    note: str = ""      # said after the value in --help


# flag (argparse dest) -> its default: the one table --help and resolve() both read.
CLI_DEFAULTS: dict[str, Default] = {
    "dataset": Default(DataConfig.dataset, note="offline"),  # the trial's default, one source
    "data_dir": Default(None, DEFAULT_DATA_DIR),
    "num_samples": Default(None, "the space's; for paper, which searches nothing: repeats with seeds S, S+1, ..."),
    "max_epochs": Default(None, f"the dataset's study size (study/config.py); {STUDY_SIZE['max_epochs']} on digits"),
    "storage_path": Default(DEFAULT_STORAGE_PATH),
    "name": Default(None, "<space>-<dataset>[-smoke]"),
    "mlflow_uri": Default(None, f"sqlite file {MLFLOW_DB} in the study dir"),
    "address": Default(None, "start a local Ray"),
    "cpus_per_trial": Default(1.0),
    "gpus_per_trial": Default(None, "0 without GPUs; with GPUs " + ", ".join(
        f"{g:g} on {d}" for d, g in GPUS_PER_TRIAL_BY_DATASET.items()) + f", else {GPUS_PER_TRIAL_OTHERWISE:g}"),
    "workers_per_trial": Default(None, "1: one process per trial, without Ray Train"),
    "max_concurrent": Default(0, note="as resources allow"),
    "objective": Default(None, "the space's, distance"),
    "scheduler": Default("auto"),
    "max_failures": Default(2),
    "num_to_keep": Default(2),
    "checkpoint_artifact": Default("best"),
    "seed": Default(TrainConfig.seed),
    "repeats": Default(1, note="one seed per configuration"),
    "optuna_storage": Default(None, "sqlite file optuna.db in a local study dir; in memory on remote storage"),
    "inception_weights": Default(None, f"torch hub cache or ${INCEPTION_WEIGHTS_ENV_VAR}"),
}


def option(flags: dict[str, Any], key: str) -> Any:
    """The flag's value where given, else its CLI_DEFAULTS value (None: the caller derives it)."""
    value = flags.get(key)
    return CLI_DEFAULTS[key].value if value is None else value


def _with_default(dest: str, text: str) -> str:
    default = CLI_DEFAULTS[dest]
    said = default.says or format(default.value, "g" if isinstance(default.value, float) else "")
    return f"{text} (default: {said}{', ' + default.note if default.note else ''})"


_DESCRIPTION = """\
Run (or resume) a Ray Tune + Optuna study of PixelCNN++ with distribution smoothing and
log every trial to MLflow. Spaces: """ + "; ".join(f"{s.name}: {s.description}" for s in SPACES.values())

_EPILOG = """\
Re-running the same command (same --name and --storage-path) resumes the study; so does
--resume --name NAME. A resumed study keeps its settings: flags that would change them are refused,
except a larger --num-samples, which extends the study (study/extend.py).
Results: <storage-path>/<name>/ holds Ray's experiment, study.json and (by default) mlflow.db.
Example: python3 -m study.run --space noise_sweep --num-samples 12 --max-epochs 10 --set nr_filters=32"""


def finite_float(text: str) -> float:
    """argparse type of every float flag: nan and inf would start a study whose trials all diverge."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def whole_number(text: str) -> int:
    """argparse type of a count flag: `2`, not `2.5` or `two` (one line, exit 2: _Parser.error)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# (flag, argparse keywords, help text without its default); the default comes from CLI_DEFAULTS.
_FLAGS = [
    ("--dataset", {}, " | ".join(DATASETS)),
    ("--data-dir", {}, "directory with the dataset files: torchvision's layout, the four IDX files "
                     "(e.g. /usr/share/datasets/fashion-mnist), DIR/celeba/, or any folder of PNG/JPEG images for "
                     "--dataset folder"),
    ("--num-samples", {"type": int}, "trials Optuna proposes, besides the space's fixed trials"),
    ("--max-epochs", {"type": int}, "epochs per trial"),
    ("--storage-path", {}, "local path or URI (s3://bucket/dir) for the study directory"),
    ("--name", {}, "study name: Ray experiment and MLflow experiment"),
    ("--mlflow-uri", {}, "MLflow tracking URI, e.g. http://host:5000"),
    ("--address", {}, "Ray cluster to join from one of its nodes, e.g. auto or HEAD_IP:6379"),
    ("--cpus-per-trial", {"type": finite_float}, "CPUs per trial, also its torch threads"),
    ("--gpus-per-trial", {"type": finite_float}, "GPUs per trial; fractions share a GPU, e.g. 0.25"),
    ("--workers-per-trial", {"type": int}, "data-parallel workers per trial (Ray Train DDP), each with "
                                           "--cpus-per-trial CPUs and --gpus-per-trial GPUs; batch_size stays the global batch"),
    ("--max-concurrent", {"type": int}, "trials running at once"),
    ("--objective", {}, f"comma-separated objectives among {', '.join(OBJECTIVE_MODES)}; two make a "
                        "multi-objective (Pareto) study, e.g. distance,bpd_bound"),
    ("--scheduler", {"choices": SCHEDULERS}, f"early stopping: asha, fifo (none), or auto = asha from "
                                             f"{ASHA_MIN_TRIALS} searched trials on, single objective only"),
    ("--max-failures", {"type": int}, "retries of a failed trial from its latest checkpoint"),
    ("--num-to-keep", {"type": int}, "checkpoints kept per trial: best by objective + latest"),
    ("--checkpoint-artifact", {"choices": CHECKPOINT_ARTIFACTS}, "log each trial's best checkpoint to MLflow"),
    ("--seed", {"type": int}, "seed of Optuna's TPE sampler and of every trial"),
    ("--repeats", {"type": whole_number},
     "seeds per configuration: every Optuna proposal and fixed trial runs as R trials with seeds S, S+1, ..., "
     "S+R-1 (S: --seed); Optuna is told their mean; tables show the mean ± its 95%% t-interval across seeds"),
    ("--inception-weights", {}, "path of the TF-Inception weights file for fid_inception/is_inception"),
    ("--optuna-storage", {}, "Optuna RDB URL for the search, e.g. postgresql://user@host/db (password in "
                             "PGPASSWORD or ~/.pgpass: the URL is stored with the study); optuna-dashboard reads it"),
]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m study.run", description=_DESCRIPTION, epilog=_EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=None)
    p.add_argument("--space", help=f"search space: {', '.join(SPACES)} (required unless --resume)")
    for flag, kwargs, text in _FLAGS:
        p.add_argument(flag, help=_with_default(flag[2:].replace("-", "_"), text), **kwargs)
    # Flags without a default: they fix a trial hyperparameter or switch a mode.
    p.add_argument("--noise-std", type=finite_float, help="fix noise_std (sigma on the [-1, 1] scale) for every trial")
    p.add_argument("--num-mixtures", type=int, help="fix num_mixtures for every trial")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", dest="assignments",
                   help="fix any trial hyperparameter by its name, e.g. --set nr_filters=32 (repeatable)")
    p.add_argument("--resume", action="store_true", default=None, help="resume the study --name; error if none exists")
    p.add_argument("--smoke-test", action="store_true", default=None, help="a tiny study in about a minute (tests use it)")
    p.add_argument("--dry-run", action="store_true", default=None, help="print the resolved config and exit")
    p.add_argument("--take-over", action="store_true", default=None,
                   help="object storage: take the study's lease from a driver known to be dead, before its "
                        "lease goes stale by itself (a live driver would stop at its next heartbeat)")
    return p


# Flags that are not part of a study's identity: they never conflict on resume.
NON_IDENTITY_FLAGS = ("address", "resume", "dry_run", "take_over")


def explicit_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if v is not None}


def resolve(flags: dict[str, Any]) -> StudyConfig:
    """Explicit CLI flags -> a validated StudyConfig. Pure: reads no files, starts nothing."""
    if not flags.get("space"):
        raise StudyError("--space is required (or --resume --name NAME to continue a study)")
    space = get_space(flags["space"])
    dataset = option(flags, "dataset")
    if dataset not in DATASETS:
        raise StudyError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
    smoke = bool(flags.get("smoke_test"))
    cli_trial = parse_assignments(flags.get("assignments") or [])
    for flag in ("data_dir", "max_epochs", "noise_std", "num_mixtures", "seed", "inception_weights", "workers_per_trial"):
        if flags.get(flag) is not None:
            cli_trial[flag] = flags[flag]
    trial = shared_trial_values(space, dataset, smoke, cli_trial)
    trial.setdefault("seed", CLI_DEFAULTS["seed"].value)
    fixed_trials = space.fixed_trials
    smoke_samples = SMOKE_TEST_NUM_SAMPLES if space.searched else 1
    num_samples = option(flags, "num_samples")
    if num_samples is None:
        num_samples = smoke_samples if smoke else space.default_num_samples
    if num_samples < 1:
        raise StudyError(f"--num-samples must be >= 1, got {num_samples}")
    repeats = option(flags, "repeats")
    if repeats < 1:
        raise StudyError(f"--repeats must be >= 1, got {repeats}")
    if not space.searched:  # nothing to search: num_samples repeats the fixed trials with successive seeds
        if num_samples > 1 and repeats > 1:
            raise StudyError(f"space {space.name!r} searches nothing, so --num-samples {num_samples} already runs "
                             f"its fixed trials with {num_samples} seeds; give --repeats {repeats} alone")
        fixed_trials = tuple({**t, "seed": trial["seed"] + r} for r in range(num_samples) for t in space.fixed_trials)
    check_trials(trial, space, fixed_trials)
    extractor = trial.get("extractor") or default_extractor(dataset)
    trial["extractor"] = extractor  # explicit in every trial's params
    objective, mode = resolve_objective(option(flags, "objective"), space, metric_names(extractor))
    scheduler = option(flags, "scheduler")
    if scheduler == "auto":
        scheduler = "asha" if space.searched and num_samples >= ASHA_MIN_TRIALS and len(objective) == 1 else "fifo"
    if scheduler == "asha" and len(objective) > 1:
        raise StudyError("ASHA stops trials on one metric; a multi-objective study needs --scheduler fifo")
    storage = normalize_storage_path(option(flags, "storage_path"))
    name = option(flags, "name") or default_name(flags)
    if "/" in name or name.startswith("."):
        raise StudyError(f"--name must be a plain directory name, got {name!r}")
    study_dir = StudyDir(storage, name)
    address = option(flags, "address")
    if address and address.startswith("ray://"):
        raise StudyError(f"--address {address}: Ray Client (ray://) is not supported (trial events must reach the "
                         "driver); run the study on a node of the cluster with --address auto")
    mlflow_uri = option(flags, "mlflow_uri") or _default_mlflow_uri(study_dir)
    cfg = StudyConfig(
        name=name, space=space.name, storage_path=storage, mlflow_uri=mlflow_uri, num_samples=num_samples,
        objective=objective, mode=mode, extractor=extractor, scheduler=scheduler,
        trial={k: v for k, v in _complete_trial_values(trial).items() if k not in space.params},
        searched={k: domain_to_data(d) for k, d in space.params.items()}, fixed_trials=fixed_trials,
        seed=int(trial["seed"]), address=option(flags, "address"),
        cpus_per_trial=option(flags, "cpus_per_trial"), gpus_per_trial=option(flags, "gpus_per_trial"),
        max_concurrent=option(flags, "max_concurrent"), max_failures=option(flags, "max_failures"),
        num_to_keep=option(flags, "num_to_keep"), checkpoint_artifact=option(flags, "checkpoint_artifact"),
        smoke_test=smoke, repeats=repeats, optuna_storage=_optuna_storage_flag(option(flags, "optuna_storage")),
    )
    _check_resources(cfg)
    return cfg


def default_name(flags: dict[str, Any]) -> str:
    """<space>-<dataset>[-smoke]: re-running the same command finds (and resumes) the same study."""
    if not flags.get("space"):
        raise StudyError("--space is required (or --resume --name NAME to continue a study)")
    return f"{flags['space']}-{option(flags, 'dataset')}" + ("-smoke" if flags.get("smoke_test") else "")


def _complete_trial_values(values: dict[str, Any]) -> dict[str, Any]:
    """All flat keys with defaults filled in (and types coerced), so study.json is complete."""
    from trainables.config import TrialConfig

    try:
        return TrialConfig.from_flat(values).to_flat()
    except (ValueError, TypeError) as err:
        raise StudyError(str(err).splitlines()[0]) from None


def _optuna_storage_flag(url: Optional[str]) -> Optional[str]:
    if url is None:
        return None
    if "://" not in url:
        raise StudyError(f"--optuna-storage {url!r} is not an RDB URL (e.g. postgresql://user@host/db, sqlite:////path)")
    return url


def _default_mlflow_uri(study_dir: StudyDir) -> str:
    if not study_dir.is_local:
        raise StudyError(f"a remote --storage-path ({study_dir.storage_path}) needs --mlflow-uri "
                         "(the default SQLite store must be a local file)")
    return f"sqlite:///{study_dir.path}/{MLFLOW_DB}"


def _check_resources(cfg: StudyConfig) -> None:
    checks = [
        (cfg.cpus_per_trial > 0, f"--cpus-per-trial must be > 0, got {cfg.cpus_per_trial}"),
        (cfg.gpus_per_trial is None or cfg.gpus_per_trial >= 0, f"--gpus-per-trial must be >= 0, got {cfg.gpus_per_trial}"),
        (cfg.gpus_per_trial is None or cfg.gpus_per_trial <= 1 or float(cfg.gpus_per_trial).is_integer(),
         f"--gpus-per-trial above 1 must be a whole number, got {cfg.gpus_per_trial}"),
        (cfg.max_concurrent >= 0, f"--max-concurrent must be >= 0, got {cfg.max_concurrent}"),
        (cfg.max_failures >= 0, f"--max-failures must be >= 0, got {cfg.max_failures}"),
        (cfg.num_to_keep >= 1, f"--num-to-keep must be >= 1, got {cfg.num_to_keep}"),
    ]
    for ok, message in checks:
        if not ok:
            raise StudyError(message)


def identity_diff(stored: StudyConfig, asked: StudyConfig) -> list[str]:
    """Fields where a resume request differs from the stored study (runtime fields excluded).

    Trial keys missing on one side (a TrialConfig field added since the study started) count
    as their default, which is what a trial without the key gets."""
    from study.config import RUNTIME_FIELDS
    from trainables.config import TrialConfig

    defaults = TrialConfig().to_flat()
    diffs = []
    for field_name in stored.__dataclass_fields__:
        if field_name in RUNTIME_FIELDS:
            continue
        a, b = getattr(stored, field_name), getattr(asked, field_name)
        if isinstance(a, dict):
            fill = defaults if field_name == "trial" else {}
            a, b = {**fill, **a}, {**fill, **b}
            diffs += [f"{k}={a.get(k)!r} (asked {b.get(k)!r})" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{field_name}={_short(a)} (asked {_short(b)})")
    return diffs


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def parse(argv: Optional[list[str]] = None) -> dict[str, Any]:
    return explicit_flags(build_parser().parse_args(sys.argv[1:] if argv is None else argv))
