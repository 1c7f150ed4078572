"""Sample quality and likelihood in numbers, knowing nothing of Ray or MLflow.

- `bpd.py`: bits/dim and the two-step bits/dim bound (units: nats in, bits/dim out).
- `scores.py`: Frechet distance and Inception Score as plain numpy functions.
- `extractors.py`: the feature-extractor registry (TF-Inception, dataset classifiers).
- `classifiers.py`: the dataset classifiers behind `<dataset>_cnn`, trained and cached.
- `reference_stats.py`: cached feature statistics of a dataset split.
- `evaluate.py`: images -> the metrics dict of one sampler (distance, IS).
- `trial_evaluation.py`: one trial's evaluation: draw samples of each sampler, score them.
"""
