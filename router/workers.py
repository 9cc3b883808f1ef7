"""``deja serve --workers N``: N processes sharing one port (SO_REUSEPORT), for more than one core.

Workers share nothing in memory, so several workers need Redis for the cache and the limits (one shared cache, one
shared limit), and aggregate their metrics through ``PROMETHEUS_MULTIPROC_DIR`` (a fresh directory per run
unless set). SIGTERM/SIGINT is passed to every worker, each of which drains its own usage queue.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time

from router.app import check_bind, serve
from router.config import ConfigError, Settings

log = logging.getLogger("deja")


def _worker(settings: Settings, host: str, port: int) -> None:
    from router.logs import setup_logging

    setup_logging(settings.deja.log_level, settings.deja.log_format)
    asyncio.run(serve(settings, host, port, reuse_port=True))


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
    for proc in procs:
        proc.start()
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while any(p.is_alive() for p in procs):
            if not stopping and any(p.exitcode not in (None, 0) for p in procs):
                log.error("a worker exited; stopping the others")
                stop(signal.SIGTERM, None)
            time.sleep(0.2)
    finally:
        for proc in procs:
            proc.join(timeout=60)
        if owned_dir:
            shutil.rmtree(owned_dir, ignore_errors=True)
    return 0 if all(p.exitcode == 0 for p in procs) else 1
