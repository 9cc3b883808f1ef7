"""SIGTERM always stops deja: in order when the drain finishes, at the deadline when it does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]

_PROGRAM = """
import asyncio, sys, time
from router.ops.shutdown import Shutdown

async def main(stuck):
    stop = asyncio.Event()
    shutdown = Shutdown(asyncio.get_running_loop(), stop, drain_seconds=float(sys.argv[2]))
    shutdown.install()
    print("ready", flush=True)
    await stop.wait()
    if stuck:
        await asyncio.to_thread(time.sleep, 600)  # a drain that never ends (a worker thread that never returns)
    print("stopping in order", flush=True)
    shutdown.finished()

asyncio.run(main(sys.argv[1] == "stuck"))
"""


def _run_and_terminate(mode: str, drain: float) -> tuple[int, str, str]:
    proc = subprocess.Popen([sys.executable, "-c", _PROGRAM, mode, str(drain)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.terminate()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def test_sigterm_stops_a_responsive_loop_in_order() -> None:
    code, out, err = _run_and_terminate("responsive", 30)
    assert code == 0 and "stopping in order" in out, err


def test_sigterm_stops_a_stuck_drain_at_the_deadline() -> None:
    code, out, err = _run_and_terminate("stuck", 0.5)
    assert code == 1 and "stopping in order" not in out
    assert "did not stop in time" in err
