"""Configuration groups: the repeats of one configuration with different seeds (`--repeats R`).

A trial's group is its flat config without `seed`, named by a short hash of the config as
MLflow holds it (every value as `str(value)`, the run's params), so that the study's MLflow
tag, results.csv and the analysis frames agree, and analysis can recompute the group of an
older run from its params alone. Here, in the bottom layer, because study and analysis both
need it and neither may import the other.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

GROUP_TAG = "config_group"     # MLflow tag of every trial run: config_group() below
LABEL_TAG = "config_label"     # MLflow tag: the group for people, `smoothed s=0.4814 K=5`
NOT_GROUPED = ("seed",)        # the keys in which repeats of one configuration differ
GROUP_HASH_CHARS = 10


def config_group(config: dict[str, Any]) -> str:
    """Short stable hash of a trial's flat config (or its MLflow params) without its seed."""
    shared = {str(k): str(v) for k, v in config.items() if k not in NOT_GROUPED}
    return hashlib.sha1(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:GROUP_HASH_CHARS]
