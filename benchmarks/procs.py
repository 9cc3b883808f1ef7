"""Run the fake upstream and deja as separate processes, as in production, for benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEJA_")}
    env.update({"PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"})
    return env


def start_upstream(delay: float = 0.0) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "providers.fake_openai", "--port", str(port), "--delay",
                             str(delay)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


def start_deja(workdir: Path, upstream_port: int, deja: dict[str, Any]) -> tuple[subprocess.Popen[bytes], int]:
    """``deja serve`` with one model group ``bench`` on the fake upstream, and the given ``deja:`` section."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = {"model_list": [{"model_name": "bench", "litellm_params": {
        "model": "openai/gpt-4o-mini", "api_base": f"http://127.0.0.1:{upstream_port}/v1", "api_key": "x"}}],
        "router_settings": {"num_retries": 0},
        "deja": {"database_url": f"sqlite:///{workdir}/deja.db", "log_level": "warning", **deja}}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "router.cli", "serve", "--config", str(path), "--port",
                             str(port)], env=_env(), cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "deja.log", "wb"))
    wait_port(port, proc)
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_litellm_proxy(binary: str, workdir: Path, upstream_port: int) -> tuple[subprocess.Popen[bytes], int]:
    """The LiteLLM proxy (installed separately, e.g. ``pip install 'litellm[proxy]'`` in another venv) with the same
    model group, no database, for a same-run comparison."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = {"model_list": [{"model_name": "bench", "litellm_params": {
        "model": "openai/gpt-4o-mini", "api_base": f"http://127.0.0.1:{upstream_port}/v1", "api_key": "x"}}],
        "router_settings": {"num_retries": 0}}
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEJA_", "DATABASE_URL"))}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    proc = subprocess.Popen([binary, "--config", str(path), "--port", str(port), "--host", "127.0.0.1"], env=env,
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=open(workdir / "litellm.log", "wb"))
    wait_port(port, proc, timeout=180)
    return proc, port
