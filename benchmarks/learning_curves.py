"""Learning curves of one trial configuration over seeds: where does two-step overtake one-step?

Two phases, so that training (the cost) runs once and evaluation can be redone:

    python3 benchmarks/learning_curves.py train --out DIR --kind smoothed --seed 0 [--epochs 12]
    python3 benchmarks/learning_curves.py evaluate --out DIR [--every 2]
    python3 benchmarks/learning_curves.py table --out DIR        # markdown table + plot from curves.jsonl

`train` trains one trial (the product's Experiment units and training loop, the dataset's CPU study
size from study/config.py, plus --set overrides) and keeps after every epoch a checkpoint holding the
raw weights and the bias-corrected EMA of each `--ema` decay, with the test bits/dim of each. Bits/dim
of the two-step bound are left out (its cost is the evaluation's, not the curve's). `evaluate` scores
every `--every`-th epoch's checkpoint with each weight set: the trial's sample distances (direct for a
baseline; one-step and two-step for a smoothed trial) and, for smoothed trials, the diagnostics of
trainables/quality/diagnostics.py (realnoisy floor, one-step and two-step on real x~, xtilde), each
with its bootstrap SE, into DIR/curves.jsonl. `table` aggregates over seeds: mean and 95% t-interval.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from study.config import study_size  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.data import epoch_batches, image_shape  # noqa: E402
from trainables.experiment import Experiment  # noqa: E402
from trainables.training import EMA, evaluate_nll, train_epoch  # noqa: E402

FASHION_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def trial_config(kind: str, seed: int, epochs: int, noise_std: float, dataset: str, data_dir: str,
                 overrides: dict) -> TrialConfig:
    flat = {**study_size(dataset), "dataset": dataset, "data_dir": data_dir, "kind": kind, "seed": seed,
            "max_epochs": epochs, "noise_std": noise_std if kind == "smoothed" else 0.0, "ema_decay": 0.0,
            **overrides}
    return TrialConfig.from_flat(flat)


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = value
    return out


def train(args) -> None:
    torch.set_num_threads(args.threads)
    cfg = trial_config(args.kind, args.seed, args.epochs, args.noise_std, args.dataset, args.data_dir,
                       parse_sets(args.set))
    run_dir = Path(args.out) / f"{args.kind}_seed{args.seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_flat(), indent=1))
    exp = Experiment(cfg, device="cpu", log=lambda m: None)
    emas = {name: {d: EMA(unit.model, d) for d in args.ema} for name, unit in exp.units.items()}
    t = cfg.train
    log_path = run_dir / "epochs.jsonl"
    first = _resume(run_dir, exp, emas)
    for epoch in range(first, t.max_epochs + 1):
        start = time.perf_counter()
        row = {"epoch": epoch}
        for name, unit in exp.units.items():
            batches = epoch_batches(exp.train_images, t.unit_batch_size(name), cfg.data.noise_std, t.seed, epoch)
            batches = _with_ema_updates(batches, unit, emas[name].values())
            stats = train_epoch(unit, batches, epoch=epoch, device="cpu")
            row[f"train_bpd_{name}"] = stats.bpd(unit.loss.continuous)
        row["train_seconds"] = time.perf_counter() - start
        states = {}
        for name, unit in exp.units.items():
            states[name] = {"raw": unit.model.state_dict(), **{f"ema{d}": e.state_dict() for d, e in emas[name].items()}}
            for label, model in [("raw", unit.model)] + [(f"ema{d}", e.model) for d, e in emas[name].items()]:
                row[f"test_bpd_{name}_{label}"] = _test_bpd(exp, unit, model)
        resume = {name: {"unit": unit.state_dict(), "emas": {d: e.state_dict() for d, e in emas[name].items()}}
                  for name, unit in exp.units.items()}
        torch.save({"epoch": epoch, "config": cfg.to_flat(), "states": states, "resume": resume},
                   run_dir / f"epoch{epoch:03d}.pt")
        with log_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{run_dir.name} epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"),
              flush=True)


def _resume(run_dir: Path, exp: Experiment, emas: dict) -> int:
    """Load the latest epoch checkpoint of run_dir, if any (so --epochs can be raised later); the first epoch to run."""
    done = sorted(run_dir.glob("epoch*.pt"))
    if not done:
        return 1
    payload = torch.load(done[-1], weights_only=True)
    for name, unit in exp.units.items():
        unit.load_state_dict(payload["resume"][name]["unit"])
        for d, ema in emas[name].items():
            ema.load_state_dict(payload["resume"][name]["emas"][d])
    print(f"{run_dir.name}: resumed after epoch {payload['epoch']}", flush=True)
    return payload["epoch"] + 1


def _with_ema_updates(batches, unit, emas):
    """Yield the batches; after the loop's step on each (the next request), fold the weights into every EMA."""
    for batch in batches:
        yield batch
        for ema in emas:
            ema.update(unit.model, updates=unit.scheduler.last_epoch)


def _test_bpd(exp: Experiment, unit, model) -> float:
    """Test bits/dim of `model` (the raw weights or an EMA) under the unit's loss."""
    view = type(unit)(model, unit.optimizer, unit.scheduler, unit.loss)  # evaluate_nll reads view.eval_model
    return evaluate_nll(view, exp._test_batches(), device="cpu").bpd(unit.loss.continuous)


def _networks(config: dict, states: dict) -> dict:
    """unit -> network in eval mode holding `states[unit]` (one weight set of a checkpoint)."""
    from trainables.generate import build_network
    nets = {}
    for unit, state in states.items():
        net = build_network(config, unit)
        net.load_state_dict(state)
        nets[unit] = net.eval().requires_grad_(False)
    return nets


def _scores(images, cfg: TrialConfig, name: str) -> dict:
    from search_spaces.metric_names import default_extractor, metric_names
    from trainables.quality.evaluate import evaluate_samples
    from trainables.sampling.naive import to_image_range
    extractor = cfg.eval.extractor or default_extractor(cfg.data.dataset)
    key = metric_names(extractor)["distance"]
    s = evaluate_samples(to_image_range(images), cfg.data.dataset, extractor=extractor, data_dir=cfg.data.data_dir,
                         log=lambda m: None)
    return {f"fd_{name}": s[key], f"fd_{name}_se": s[f"{key}_se"]}


def evaluate_checkpoint(path: Path, weights: str) -> dict:
    """Distances of one checkpoint's weight set: the trial's samplers, and for smoothed trials the diagnostics."""
    from trainables.data import epoch_generator
    from trainables.quality.diagnostics import smoothed_diagnostics
    from trainables.quality.trial_evaluation import DIAGNOSTIC_STREAM, SAMPLE_STREAM, SAMPLER
    from trainables.sampling.naive import gradient_denoise, two_step_sample
    payload = torch.load(path, weights_only=True)
    cfg = TrialConfig.from_flat(payload["config"])
    nets = _networks(payload["config"], {u: st[weights] for u, st in payload["states"].items()})
    n, shape = cfg.eval.num_eval_samples, image_shape(cfg.data.dataset, cfg.data.image_size)  # (C, H, W)
    generator = epoch_generator(cfg.train.seed, payload["epoch"], stream=SAMPLE_STREAM)  # as the product's evaluation
    start = time.perf_counter()
    row = {"kind": cfg.train.kind, "seed": cfg.train.seed, "epoch": payload["epoch"], "weights": weights}
    if cfg.train.kind == "baseline":
        row.update(_scores(SAMPLER(nets["baseline"], n, shape, discretized=True, generator=generator), cfg, "direct"))
    else:
        x_noisy, twostep = two_step_sample(nets["smoothed"], nets["denoiser"], n, shape, generator=generator,
                                           sampler=SAMPLER)
        onestep = gradient_denoise(nets["smoothed"], x_noisy, cfg.data.noise_std, mode=cfg.eval.gradient_mode)
        row.update(_scores(onestep, cfg, "onestep"))
        row.update(_scores(twostep, cfg, "twostep"))
        diag = smoothed_diagnostics(nets["smoothed"], nets["denoiser"], cfg, x_noisy, log=lambda m: None,
                                    generator=epoch_generator(cfg.train.seed, payload["epoch"], stream=DIAGNOSTIC_STREAM))
        row.update({k.replace(f"fd_{_extractor(cfg)}_", "fd_"): v for k, v in diag.items()})
    row["eval_seconds"] = time.perf_counter() - start
    return row


def _extractor(cfg: TrialConfig) -> str:
    from search_spaces.metric_names import default_extractor
    return cfg.eval.extractor or default_extractor(cfg.data.dataset)


def evaluate(args) -> None:
    """Score every `--every`-th epoch checkpoint not yet in curves.jsonl; appends a row per checkpoint and weight set."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    table = out / "curves.jsonl"  # one JSON row per (kind, seed, epoch, weights): the kinds' columns differ
    done = set()
    if table.exists():
        rows = [json.loads(line) for line in table.read_text().splitlines() if line.strip()]
        done = {(r["kind"], r["seed"], r["epoch"], r["weights"]) for r in rows}
    while True:  # one process for the whole evaluation: every row is scored by the same extractor
        _evaluate_new(out, table, done, args)
        if not args.poll:
            return
        time.sleep(args.poll)


def _evaluate_new(out: Path, table: Path, done: set, args) -> None:
    for path in sorted(out.glob("*_seed*/epoch*.pt")):
        kind, seed = path.parent.name.split("_seed")
        epoch = int(path.stem[len("epoch"):])
        if epoch % args.every:
            continue
        for weights in args.weights:
            if (kind, int(seed), epoch, weights) in done:
                continue
            row = evaluate_checkpoint(path, weights)
            done.add((kind, int(seed), epoch, weights))
            print(json.dumps(row), flush=True)
            with table.open("a") as f:
                f.write(json.dumps(row) + "\n")


CURVES = [("baseline", "fd_direct", "baseline direct"), ("smoothed", "fd_onestep", "one-step"),
          ("smoothed", "fd_twostep", "two-step"), ("smoothed", "fd_xtilde", "x~ samples vs real x~"),
          ("smoothed", "fd_realnoisy", "real x~ (floor)"), ("smoothed", "fd_onestep_realnoisy", "one-step of real x~"),
          ("smoothed", "fd_twostep_realnoisy", "two-step of real x~")]


def aggregate(rows: list[dict]) -> dict:
    """(weights, epoch, curve label) -> (mean, t95 half-width over seeds, n seeds, bootstrap SE of the mean)."""
    from analysis.intervals import seed_interval
    out = {}
    keys = {(r["weights"], r["epoch"]) for r in rows}
    for weights, epoch in sorted(keys):
        for kind, metric, label in CURVES:
            picked = [r for r in rows if r["kind"] == kind and r["weights"] == weights and r["epoch"] == epoch
                      and metric in r]
            if not picked:
                continue
            interval = seed_interval([r[metric] for r in picked])
            se = (sum(r[f"{metric}_se"] ** 2 for r in picked) ** 0.5) / len(picked)
            out[weights, epoch, label] = (interval.mean, interval.half_width, interval.n, se)
    return out


def table(args) -> None:
    """Markdown table and a plot from curves.jsonl. A cell: mean over seeds ± the 95% t-interval's
    half-width across seeds [the bootstrap SE of that mean from the samples alone] (n seeds)."""
    out = Path(args.out)
    rows = [json.loads(line) for line in (out / "curves.jsonl").read_text().splitlines() if line.strip()]
    stats = aggregate(rows)
    labels = [label for _, _, label in CURVES]
    print("| weights | epoch | " + " | ".join(labels) + " |")
    print("| --- | --- |" + " --- |" * len(labels))
    for weights, epoch in sorted({(w, e) for w, e, _ in stats}):
        cells = []
        for label in labels:
            mean, half, n, se = stats.get((weights, epoch, label), (float("nan"),) * 4)
            interval = f" ± {half:.0f}" if half == half else ""  # no t95 from one seed
            cells.append(f"{mean:.0f}{interval} [{se:.0f}] (n={n})" if n == n else "")
        print(f"| {weights} | {epoch} | " + " | ".join(cells) + " |")
    _plot(stats, labels, out / "learning_curves.png")
    print(f"plot: {out / 'learning_curves.png'}")


def _plot(stats: dict, labels: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    weight_sets = sorted({w for w, _, _ in stats})
    fig, axes = plt.subplots(1, len(weight_sets), figsize=(6 * len(weight_sets), 4.5), sharey=True, squeeze=False)
    for ax, weights in zip(axes[0], weight_sets):
        for label in labels:
            points = sorted((e, m, h) for (w, e, lab), (m, h, n, se) in stats.items() if w == weights and lab == label)
            if points:
                epochs, means, halves = zip(*points)
                ax.errorbar(epochs, means, yerr=[h if h == h else 0 for h in halves], label=label, capsize=3,
                            marker="o", linestyle="--" if "real" in label or "x~" in label else "-")
        ax.set_title(f"weights: {weights} (mean over seeds, bars: 95% t-interval)")
        ax.set_xlabel("epoch")
        ax.set_ylim(bottom=0)
    axes[0][0].set_ylabel("Frechet distance (the dataset classifier's features)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("--out", required=True)
    tr.add_argument("--kind", choices=("smoothed", "baseline"), required=True)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--epochs", type=int, default=12)
    tr.add_argument("--noise-std", type=float, default=0.5)
    tr.add_argument("--dataset", default="fashion_mnist")
    tr.add_argument("--data-dir", default=FASHION_DIR)
    tr.add_argument("--ema", type=float, nargs="*", default=[0.99, 0.998])
    tr.add_argument("--threads", type=int, default=1)
    tr.add_argument("--set", action="append", default=[], help="KEY=VALUE over the study size")
    ev = sub.add_parser("evaluate")
    ev.add_argument("--out", required=True)
    ev.add_argument("--every", type=int, default=2)
    ev.add_argument("--weights", nargs="*", default=["raw", "ema0.995"])
    ev.add_argument("--threads", type=int, default=1)
    ev.add_argument("--poll", type=float, default=0, help="seconds between scans for new checkpoints (0: one pass)")
    tb = sub.add_parser("table")
    tb.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    {"train": train, "evaluate": evaluate, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
