"""Ray's result dicts as plain data: the trial's own metrics and error lines."""
from __future__ import annotations

from ray.tune.result import AUTO_RESULT_KEYS

RAY_KEYS = set(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag", "should_checkpoint", "__duplicate__"}


def reported_metrics(result: dict) -> dict[str, float]:
    """The metrics a trial reported (Experiment.run_epoch's), without Ray's bookkeeping keys."""
    return {k: float(v) for k, v in result.items()
            if k not in RAY_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}



def exception_line(text: str) -> str:
    """The last "SomeError: message" line of a traceback, without the exception's module path."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.split(":", 1)[0].endswith(("Error", "Exception", "Interrupt"))]
    line = (errors or lines or ["trial failed"])[-1]
    head, sep, rest = line.partition(":")
    return (head.rsplit(".", 1)[-1] + sep + rest)[:500]
