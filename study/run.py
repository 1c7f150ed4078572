"""`python -m study.run --space noise_sweep`: run or resume a study (see --help)."""
from __future__ import annotations

import sys
from typing import Optional

from study.cli import parse
from study.config import StudyError

INTERRUPTED = "interrupted; re-run the same command to resume"


def main(argv: Optional[list[str]] = None) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines reach a log file or a pipe as they happen
    flags = parse(argv)
    from study.recovery import ctrl_c

    with ctrl_c.recorded():  # a Ctrl-C whose KeyboardInterrupt some library swallows still ends the study
        return _run(flags)


def _run(flags: dict) -> int:
    try:
        from study import preflight
        from study.recovery import driver_log
        from study.recovery.disk_space import disk_full_reason
        from study.recovery.lock import study_lock
        from study.orchestrate import prepare, run_study
        from study.storage import StudyDir
        from study.recovery.trust import restrict_umask

        cfg, resuming, stored_flags = prepare(flags)
        if flags.get("dry_run"):
            print(cfg.to_json())
            print(f"# {'resumes the existing' if resuming else 'starts a new'} study in {cfg.storage_path}/{cfg.name}")
            if not resuming:
                from study import estimate

                cpus, gpus = estimate.local_resources()
                estimate.announce(cfg, cpus, gpus, estimate.local_gpus_per_trial(cfg, gpus))
            return 0
        preflight.check_storage(cfg)
        preflight.check_mlflow(cfg.mlflow_uri)  # before the lock: a refusal writes nothing,
        preflight.check_optuna_storage(cfg.optuna_storage)  # not even an object store's directory marker
        restrict_umask()
        with study_lock(StudyDir(cfg.storage_path, cfg.name), take_over=bool(flags.get("take_over"))):
            cfg, resuming, stored_flags = prepare(flags)  # again, locked: another driver may have begun it meanwhile
            driver_log.route_library_logs(cfg)  # Ray's, MLflow's tracebacks to a file; the terminal keeps our lines
            summary = run_study(cfg, resuming, stored_flags)
    except StudyError as err:
        print(f"python -m study.run: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130  # the shell's code for a Ctrl-C'd command
    except Exception as err:
        reason = disk_full_reason(err)
        if reason is None:
            raise
        log = f" (Ray's and MLflow's messages: {driver_log.current()})" if driver_log.current() else ""
        print(f"python -m study.run: error: the disk is full ({reason}); free space, then re-run the same "
              f"command to resume from the last saved state{log}", file=sys.stderr)
        return 1
    if summary["interrupted"]:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
