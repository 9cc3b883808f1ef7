"""SIGTERM/SIGINT: drain in order, but always stop within the drain time.

The first signal sets the stop event (``serve`` then stops accepting, finishes in-flight requests and drains
the usage queue) and starts a clock in a thread of its own: if the process is still running ``drain_seconds +
GRACE_SECONDS`` later (a handler that ignores cancellation, a worker thread that never returns, a database that
hangs the final flush), it logs and exits hard. A second signal exits at once. The usage writer spills what it
could not write during the drain, so a hard exit loses only what was still being answered. The signal is
handled on the event loop, which must therefore never be stuck: CPU work of any size runs bounded or off it
(the verifier, compression, token counting).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading

log = logging.getLogger("deja")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACE_SECONDS = 5.0


class Shutdown:
    """``install()`` on the running loop; call ``finished()`` once the orderly shutdown is over."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event, drain_seconds: float) -> None:
        self._loop, self._stop = loop, stop
        self.deadline = drain_seconds + GRACE_SECONDS
        self._done = threading.Event()
        self._clock: threading.Timer | None = None

    def install(self) -> None:
        for sig in SIGNALS:
            self._loop.add_signal_handler(sig, self._signalled, sig)

    def finished(self) -> None:
        self._done.set()
        if self._clock is not None:
            self._clock.cancel()

    def _signalled(self, sig: signal.Signals) -> None:
        if self._clock is not None:
            self._expire(f"a second {sig.name}")
            return
        log.info("deja got %s: stopping (at most %.0f s)", sig.name, self.deadline)
        self._stop.set()
        self._clock = threading.Timer(self.deadline, self._expire, args=(f"{self.deadline:.0f} s after the signal",))
        self._clock.daemon = True
        self._clock.start()

    def _expire(self, why: str) -> None:
        if self._done.is_set():
            return
        log.error("deja did not stop in time (%s): exiting now", why)
        logging.shutdown()
        os._exit(1)
