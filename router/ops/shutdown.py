"""SIGTERM/SIGINT that always stop the server, even when its event loop is stuck.

``asyncio``'s ``loop.add_signal_handler`` runs its callback on the loop: a loop busy in CPU work (a quadratic
step on a hostile prompt) never runs it, and the process ignores SIGTERM for as long as that lasts. Here the
signals are blocked in every thread and taken by one small thread with ``sigwait``; it sets the stop event on
the loop (``call_soon_threadsafe``: an orderly drain when the loop is alive) and starts the clock: if the process
is still running ``drain_seconds + grace`` after the first signal (or at a second signal), it logs and exits
hard. The usage writer spills what it could not write during the drain, so a hard exit loses only what was
still being answered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading

log = logging.getLogger("deja")

SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
GRACE_SECONDS = 5.0


class Shutdown:
    """Install with ``install()`` before any other thread starts (threads inherit the blocked signals); call
    ``finished()`` once the orderly shutdown is over."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event, drain_seconds: float) -> None:
        self._loop, self._stop = loop, stop
        self.deadline = drain_seconds + GRACE_SECONDS
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def install(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        self._thread = threading.Thread(target=self._watch, name="deja-signals", daemon=True)
        self._thread.start()

    def finished(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        signum = signal.sigwait(SIGNALS)
        log.info("deja got %s: stopping (at most %.0f s)", signal.Signals(signum).name, self.deadline)
        try:
            self._loop.call_soon_threadsafe(self._stop.set)
        except RuntimeError:  # the loop is already closed: the process is on its way out
            return
        again = signal.sigtimedwait(SIGNALS, self.deadline)
        if self._done.is_set():
            return
        why = "a second signal" if again is not None else f"{self.deadline:.0f} s after the signal"
        log.error("deja did not stop in time (%s): exiting now", why)
        logging.shutdown()
        os._exit(1)
