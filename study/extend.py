"""Extending a study: `--resume --name NAME --num-samples 20` on a study of 6 adds 14 trials.

A resumed study keeps its settings, with one exception: a larger `--num-samples` of a
space that searches something. The old trials stay as they are (Tune's experiment, their
MLflow runs), Optuna's TPE continues from its whole history (the searcher state Tune
saved: completed, pruned and failed trials), ASHA keeps its rungs, and the new trials
join the same Tune experiment and MLflow experiment, so analysis sees one study. How Tune
is made to create the extra trials: trainables/tune/extend.py.

Not an extension: fewer trials (a study is never shrunk), and the `paper` space, whose
--num-samples repeats its fixed trials with new seeds (a new --name runs more repeats).
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Optional

from study.config import StudyConfig, StudyError
from study.storage import STUDY_FILE, StudyDir

EXTENSIONS_KEY = "extensions"  # in study.json: [{"from": 6, "to": 20, "time": ...}, ...]


def comparable_request(stored: StudyConfig, asked: StudyConfig, flags: dict[str, Any],
                       stored_flags: dict[str, Any]) -> tuple[StudyConfig, Optional[int]]:
    """(the request to compare with the stored study, the new num_samples or None).

    `asked` is the resume request resolved like a new study; `flags` are the explicit flags
    of this command, `stored_flags` those of the command that started the study. A larger
    num_samples is taken out of the comparison, and so is the scheduler that "auto" would
    resolve differently for the larger study (ASHA from 5 searched trials on): the running
    study keeps the scheduler it has. Raises StudyError for a smaller num_samples.
    """
    new = None
    if asked.num_samples != stored.num_samples:
        if not stored.searched:
            raise StudyError(f"study {stored.name!r} exists with other settings: num_samples={stored.num_samples} "
                             f"(asked {asked.num_samples}); space {stored.space!r} "
                             "searches nothing, so --num-samples repeats its fixed trials; choose a new --name")
        if asked.num_samples < stored.num_samples:
            raise StudyError(f"study {stored.name!r} exists with other settings: num_samples={stored.num_samples} "
                             f"(asked {asked.num_samples}); a study can be extended with a larger --num-samples, "
                             "never shrunk")
        new = asked.num_samples
        asked = dataclasses.replace(asked, num_samples=stored.num_samples)
        if "scheduler" not in flags and "scheduler" not in stored_flags:
            asked = dataclasses.replace(asked, scheduler=stored.scheduler)
    return asked, new


def record_extension(study_dir: StudyDir, cfg: StudyConfig, flags: dict[str, Any]) -> Optional[int]:
    """Rewrite study.json for the larger study (config, flags, the extension appended); returns
    the old num_samples, or None when `cfg` does not extend the stored study (nothing written)."""
    doc = json.loads(study_dir.read_text(STUDY_FILE))
    old = int(doc["config"]["num_samples"])
    if cfg.num_samples <= old:
        return None
    doc["config"]["num_samples"] = cfg.num_samples  # the stored config otherwise unchanged (address included)
    doc["flags"] = {**flags, "num_samples": cfg.num_samples}
    doc.setdefault(EXTENSIONS_KEY, []).append({"from": old, "to": cfg.num_samples,
                                               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    study_dir.write_text(STUDY_FILE, json.dumps(doc, indent=2, sort_keys=True))
    return old
