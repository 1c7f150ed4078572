"""Every fault a study survives, in one room: what goes wrong, the module that handles it, the test that holds it.

| fault | handled by | held by |
| --- | --- | --- |
| two drivers on one study (local flock; a lease with a heartbeat on object storage, taken over when stale, at once when its holder is gone from this host, or with --take-over) | `lock.py` | tests/study/test_study_lock.py, tests/study/test_object_storage.py |
| a SIGKILLed driver's local Ray left running | `leftovers.py` | tests/study/test_leftovers.py, tests/study/test_stale_cluster.py |
| Tune's saved state cut by a full disk or a kill: its last good copy restored | `state_backup.py` | tests/study/test_full_disk.py, tests/study/test_disk_full_study.py |
| a disk too small for the study (a warning before), a full disk during it (one line, exit 1, resumable) | `disk_space.py` | tests/study/test_full_disk.py, tests/study/test_disk_full_study.py |
| Ray's, MLflow's and SQLAlchemy's tracebacks on the terminal: to the study's driver.log, which the fault's line names | `driver_log.py` | tests/study/test_driver_log.py, tests/study/test_disk_full_study.py |
| a study directory others can write (Tune's pickles run code as whoever resumes) | `trust.py` | tests/study/test_hostile_inputs.py |
| MLflow runs a kill left RUNNING, trials Tune never reported | `reconcile.py` | tests/study/test_reconcile.py, tests/study/test_chaos.py |
| a kill between Tune's pruning of a checkpoint and its saving the list | trainables/tune/checkpoint_repair.py (the Ray adapter: it reads Tune's private state) | tests/trainables/test_checkpoint_repair.py |
| Tune's trials and its searcher's state saved or uploaded at different moments by a killed driver (a completed trial's Optuna record FAIL, a concurrency slot held forever, a trial lost or made twice) | trainables/tune/reconcile_search.py (the searchers lined up with Tune's restored trials) | tests/trainables/test_reconcile_search.py, tests/study/test_fresh_head.py |
| half-written files of a killed write | trainables/atomic_write.py (the one atomic writer, and its sweep of leftovers) | tests/trainables/test_atomic_write.py, tests/study/test_full_disk.py |
| Ctrl-C: the state stays resumable, exit 130; one whose KeyboardInterrupt a library swallows is not lost | study/run.py, `ctrl_c.py` | tests/study/test_interrupt.py, tests/study/test_ctrl_c.py |
| SIGKILL at random points, then the same command | all of the above | tests/study/test_chaos.py, tests/study/test_resume.py |
| the MLflow server restarted mid-study (MLflow's client retries) | none needed | tests/study/test_mlflow_restart.py |
| a Ray node lost mid-trial; the S3 server unreachable for 30 s (each costs the trials it hits one retry, from the latest registered checkpoint) | Tune's retries (--max-failures); trainables/tune/events.py copies only the grids, so a checkpoint is registered sooner | tests/study/test_cluster.py, tests/tools/test_lab_faults.py |
| the head node lost with its disk: the study resumes on another from object storage | lock.py (--take-over), Tune's restore | tests/study/test_fresh_head.py |

Bad input (one line, exit 2, nothing written) is the CLI's and preflight's (study/cli.py,
study/preflight.py; tests/study/test_bad_inputs.py, test_hostile_inputs.py, test_cluster_flags.py).
"""
