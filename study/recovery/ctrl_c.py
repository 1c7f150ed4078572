"""A Ctrl-C the driver receives is never lost.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to be; where
that is a finalizer, a callback or library code that catches BaseException, the exception is
swallowed ("Exception ignored in ...") and the study would run on. The driver's handler
(`recorded`) records the signal before raising, so `raise_if_received` can end the study before
Tune starts trials. From `Tuner.fit` on, Tune's own handler takes the first Ctrl-C (it stops the
run after saving its state; study/orchestrate.finish sees the unfinished trials) and restores this
one for a second Ctrl-C.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

_received = threading.Event()


def _on_sigint(signum, frame) -> None:
    _received.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def recorded() -> Iterator[None]:
    """Within: the driver's SIGINT handler (main thread only, as signal.signal requires) records
    the signal, then raises KeyboardInterrupt as Python's default handler does; the previous
    handler is back after. An ignored SIGINT stays ignored (a study started in the background of
    a non-interactive shell)."""
    previous = signal.getsignal(signal.SIGINT)
    _received.clear()
    if threading.current_thread() is not threading.main_thread() or previous is signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def received() -> bool:
    return _received.is_set()


def raise_if_received() -> None:
    """A Ctrl-C that reached the driver but whose KeyboardInterrupt some code swallowed ends it here."""
    if _received.is_set():
        raise KeyboardInterrupt
