"""Ray's loggers, for the driver log (study/recovery/driver_log.py routes them to a file).

Importing Ray installs a handler that prints on stderr on the "ray" logger (once per process);
importing this module makes sure that has happened before the driver replaces it.
"""
from __future__ import annotations

import ray  # noqa: F401  (the import installs the handler)

RAY_LOGGERS = ("ray",)  # Tune's ("ray.tune.*") and Train's records reach the handlers of "ray"
