"""`python -m study.sample --study NAME`: draw images from a study's best trial (or --trial).

Loads the trial's checkpoint from the storage path or, where that is not visible, from
its MLflow artifacts; draws with the exact fast sampler in batches sized from the memory
available; writes `samples.png` (a grid), `samples.npz` (`images`: uint8 (N, H, W, C)) and
`sample.json` (what was drawn, from where, how fast; with --metrics the distance and IS
against the test split in the study's feature extractor). `--register NAME` also logs the
trial's networks as an MLflow model (trainables/mlflow_model) and registers it as NAME.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

from study.cli import DEFAULT_STORAGE_PATH
from study.config import StudyError
from study.storage import check_writable
from study.trial_source import StudySource, checkpoint_dir, choose_trial, open_study
from study.tracking import TRIAL_ID_TAG

SAMPLERS = ("two-step", "one-step", "direct")  # trainables.generate.SAMPLERS (no torch import here)
PROG = "python -m study.sample"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("--study", required=True, help="study name (the --name of study.run)")
    p.add_argument("--storage-path", default=DEFAULT_STORAGE_PATH, help=f"as for study.run (default: {DEFAULT_STORAGE_PATH})")
    p.add_argument("--mlflow-uri", help="the study's MLflow store (default: the one study.json records)")
    p.add_argument("--trial", help="run name, MLflow run id or Ray trial id (default: the best completed trial "
                   "by the study's objective)")
    p.add_argument("--n", type=int, default=1000, help="images to draw (default: 1000)")
    p.add_argument("--sampler", choices=SAMPLERS, help="default: two-step for a smoothed trial, direct for a baseline")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler's uniforms (default: 0)")
    p.add_argument("--batch-size", type=int, default=0, help="images per sampler call (default: 0 = from memory)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1, the fastest for the "
                   "sampler's small per-pixel ops; 0: torch's default, and the sampler's own choice, 1)")
    p.add_argument("--cuda-graphs", action="store_true", help="replay the fast sampler's pixel steps as CUDA graphs "
                   "(on a CUDA device; not yet measured on a GPU, see benchmarks/gpu_check.py; on a CPU it changes nothing)")
    p.add_argument("--out", help="output folder (default: <storage-path>/<study>/samples/<trial>-<sampler>, "
                   "or ./samples/<study>/... when the study folder is not local)")
    p.add_argument("--metrics", action="store_true", help="score the images: distance and IS against the test split")
    p.add_argument("--register", metavar="NAME", help="log the trial's networks as an MLflow model and register it as NAME")
    return p


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")


def output_dir(args, source: StudySource, run, sampler_hint: str) -> Path:
    if args.out:
        return Path(args.out).expanduser().resolve()
    name = _slug(f"{run.data.tags.get(TRIAL_ID_TAG) or run.info.run_id}-{sampler_hint}")
    local = source.study_dir.is_local and Path(source.study_dir.path).is_dir()
    root = Path(source.study_dir.path, "samples") if local else Path("samples", source.name)
    return (root / name).resolve()


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise StudyError(f"--out {out} is a file")
    try:
        check_writable(str(out))
    except OSError as err:
        raise StudyError(f"--out {out} is not writable ({type(err).__name__}: {err})") from None


class ProgressBar:
    """One line on stderr, redrawn after each batch: images drawn, elapsed, rate."""

    def __init__(self, total: int, stream=sys.stderr, width: int = 30):
        self.total, self.done, self.stream, self.width = total, 0, stream, width
        self.start = time.perf_counter()

    def __call__(self, k: float) -> None:
        if self.done >= self.total - 1e-6:
            return  # drawn and its line ended (the fractions may sum a rounding error past total)
        self.done = min(self.total, self.done + k)
        elapsed = time.perf_counter() - self.start
        filled = int(self.width * self.done / self.total)
        self.stream.write(f"\r  [{'#' * filled}{'.' * (self.width - filled)}] {self.done:.0f}/{self.total} images "
                          f"{elapsed:.1f} s ({self.done / max(elapsed, 1e-9):.1f} img/s)")
        if self.done >= self.total - 1e-6:
            self.stream.write("\n")
        self.stream.flush()


def sample(args, log=print) -> dict[str, Any]:
    """Everything after parsing; StudyError for bad input, raised before anything is written."""
    from trainables import generate
    from trainables.sampling.native_blocks import pixel_steps_in_use

    if args.n < 1:
        raise StudyError(f"--n must be >= 1, got {args.n}")
    if args.batch_size < 0 or args.threads < 0:
        raise StudyError(f"--batch-size and --threads must be >= 0, got {args.batch_size} and {args.threads}")
    generate.set_threads(args.threads)
    source = open_study(args.study, args.storage_path, args.mlflow_uri)
    run = choose_trial(source, args.trial)
    with checkpoint_dir(source, run) as (directory, origin):
        try:
            models = generate.from_checkpoint(directory)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise StudyError(f"cannot load the checkpoint of {run.info.run_name!r} from {origin} ({err})") from None
    sampler = args.sampler or models.samplers[0]
    try:
        models.check_sampler(sampler)
        device = generate.pick_device(args.device)
        models.to(device)
    except (ValueError, RuntimeError) as err:
        raise StudyError(str(err).splitlines()[0]) from None
    out = output_dir(args, source, run, sampler)
    check_out(out)
    batch = args.batch_size or generate.auto_batch_size(models, args.n, device)
    log(f"{run.info.run_name} (trial {run.data.tags.get(TRIAL_ID_TAG)}, {source.objective}="
        f"{run.data.metrics.get(source.objective, float('nan')):.4g}) from {origin}")
    log(f"drawing {args.n} images, {sampler}, batches of {batch} on {device}")
    if args.cuda_graphs and device.type != "cuda":
        log(f"--cuda-graphs: {device} is not a CUDA device; the pixel steps run eagerly")
    dtype = next(next(iter(models.networks.values())).parameters()).dtype
    steps = pixel_steps_in_use(device, dtype, args.cuda_graphs)
    log(f"pixel steps: {steps}")
    start = time.perf_counter()
    images = generate.draw(models, args.n, sampler, seed=args.seed, batch_size=batch, progress=ProgressBar(args.n),
                           threads=args.threads or None, cuda_graphs=args.cuda_graphs)
    seconds = time.perf_counter() - start
    return _write(args, source, run, models, images, out,
                  {"sampler": sampler, "batch_size": batch, "device": str(device), "pixel_steps": steps,
                   "seconds": seconds, "checkpoint": origin}, log)


def _write(args, source, run, models, images, out: Path, info: dict, log) -> dict[str, Any]:
    import numpy as np

    from trainables import generate

    out.mkdir(parents=True, exist_ok=True)
    generate.write_grid(images, out / "samples.png")
    np.savez_compressed(out / "samples.npz", images=generate.to_uint8(images))
    doc = {"study": source.name, "trial_run": run.info.run_name, "run_id": run.info.run_id,
           "trial_id": run.data.tags.get(TRIAL_ID_TAG), "objective": {source.objective: run.data.metrics.get(source.objective)},
           "n": args.n, "seed": args.seed, "images_per_s": args.n / info["seconds"], **info}
    if args.metrics:
        doc["metrics"] = generate.score(images, models, source.extractor, info["sampler"], log=lambda m: None)
    if args.register:
        doc["model"] = register(source, run, models, args.register)
    (out / "sample.json").write_text(json.dumps(doc, indent=1, default=str))
    log(f"{args.n} images in {info['seconds']:.1f} s ({doc['images_per_s']:.1f} img/s) -> {out} "
        "(samples.png, samples.npz, sample.json)")
    for key, value in doc.get("metrics", {}).items():
        log(f"  {key} = {value:.4g}")
    if "model" in doc:
        log(f"registered {doc['model']['name']!r} version {doc['model']['version']}: "
            f"mlflow.pyfunc.load_model({doc['model']['uri']!r})")
    return doc


def register(source: StudySource, run, models, name: str) -> dict[str, Any]:
    """Log the trial's networks as a pyfunc in the study's experiment and register them as `name`."""
    import mlflow

    from trainables.mlflow_model.sampler import log_sampler

    mlflow.set_tracking_uri(source.mlflow_uri)
    mlflow.set_experiment(experiment_id=source.experiment_id)
    tags = {"study": source.name, "trial_run_id": run.info.run_id, "trial_run": run.info.run_name,
            TRIAL_ID_TAG: run.data.tags.get(TRIAL_ID_TAG, ""), "kind": models.kind}
    info = log_sampler(models.to("cpu"), registered_name=name, tags=tags)
    version = info.registered_model_version
    return {"name": name, "version": version, "uri": f"models:/{name}/{version}", "model_uri": info.model_uri}


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        sample(args)
    except StudyError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
