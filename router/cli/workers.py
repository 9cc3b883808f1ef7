"""``deja serve --workers N``: N processes sharing one port (SO_REUSEPORT), for more than one core.

Workers share nothing in memory, so several workers need Redis for the cache and the limits (one shared cache, one
shared limit), and aggregate their metrics through ``PROMETHEUS_MULTIPROC_DIR`` (a fresh directory per run
unless set). SIGTERM/SIGINT is passed to every worker, each of which drains its own usage queue.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time

from router.app import check_bind, run_server
from router.config import ConfigError, Settings

log = logging.getLogger("deja")


def _exit_before_serving(_signum: int, _frame: object) -> None:
    raise SystemExit(0)  # nothing accepted yet, so nothing to finish; serve() replaces this handler


def _worker(settings: Settings, host: str, port: int) -> None:
    signal.signal(signal.SIGTERM, _exit_before_serving)
    signal.signal(signal.SIGINT, _exit_before_serving)
    from router.ops.logs import setup_logging

    setup_logging(settings.deja.log_level, settings.deja.log_format)
    run_server(settings, host, port, reuse_port=True)


def check_workers(settings: Settings, workers: int) -> None:
    deja = settings.deja
    if workers > 1 and not deja.redis_url:
        raise ConfigError("--workers: several workers need deja.redis_url, so that they share one cache and one "
                          "set of rate limits")
    if workers > 1 and "memory" in (deja.cache.backend, deja.limits.backend):
        raise ConfigError("--workers: deja.cache.backend and deja.limits.backend must be redis (or auto)")


def run_workers(settings: Settings, host: str, port: int, workers: int) -> int:
    check_bind(settings, host)
    check_workers(settings, workers)
    owned_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        owned_dir = tempfile.mkdtemp(prefix="deja-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = owned_dir
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(settings, host, port), name=f"deja-worker-{i}")
             for i in range(workers)]
    stopping = False
    signalled: set[int] = set()

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.pid and proc.pid not in signalled and proc.is_alive():
                signalled.add(proc.pid)
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for proc in procs:
        if not stopping:
            proc.start()
    try:
        while any(p.is_alive() for p in procs):
            if stopping:
                stop(signal.SIGTERM, None)  # reaches a worker whose start raced with the signal
            elif any(p.exitcode not in (None, 0) for p in procs):
                log.error("a worker exited; stopping the others")
                stop(signal.SIGTERM, None)
            time.sleep(0.2)
    finally:
        for proc in procs:
            if proc.pid is not None:
                proc.join(timeout=60)
        if owned_dir:
            shutil.rmtree(owned_dir, ignore_errors=True)
    # A worker we signalled while it was still booting dies of the default SIGTERM action before serve() takes
    # the signal over; it had accepted nothing, so that is a clean stop too.
    clean = {0} | ({-signal.SIGTERM} if stopping else set())
    started = [p for p in procs if p.pid is not None]  # a stop during spawning leaves the rest unstarted
    return 0 if all(p.exitcode in clean and (p.exitcode == 0 or p.pid in signalled) for p in started) else 1
