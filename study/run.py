"""`python -m study.run --space noise_sweep`: run or resume a study (see --help)."""
from __future__ import annotations

import sys
from typing import Optional

from study.cli import parse
from study.config import StudyError


def main(argv: Optional[list[str]] = None) -> int:
    flags = parse(argv)
    try:
        from study.orchestrate import prepare, run_study

        cfg, resuming, stored_flags = prepare(flags)
        if flags.get("dry_run"):
            print(cfg.to_json())
            print(f"# {'resumes the existing' if resuming else 'starts a new'} study in {cfg.storage_path}/{cfg.name}")
            if not resuming:
                from study import estimate

                cpus, gpus = estimate.local_resources()
                estimate.announce(cfg, cpus, gpus, estimate.local_gpus_per_trial(cfg, gpus))
            return 0
        summary = run_study(cfg, resuming, stored_flags)
    except StudyError as err:
        print(f"python -m study.run: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return 130 if summary["interrupted"] else 0  # 130: the shell's code for a Ctrl-C'd command


if __name__ == "__main__":
    sys.exit(main())
