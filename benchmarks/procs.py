"""Run the fake upstream and deja as separate processes, as in production, for benchmarks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run_and_save(name: str, measure: Callable[[], Awaitable[dict[str, Any]]],
                 plot: Callable[[dict[str, Any], Path], None]) -> dict[str, Any]:
    """Run a benchmark's ``measure`` (a SIGTERM still stops its servers through its try/finally), then write
    ``results/<name>.json`` and ``results/<name>.png``."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = asyncio.run(measure())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / f"{name}.png")
    return result


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


def _env(root: Path = ROOT) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEJA_")}
    env.update({"PYTHONPATH": str(root), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"})
    return env


_UPSTREAM_WITH_CHUNK_DELAY = """
import asyncio, sys
from providers.fake_openai import Behaviour, FakeOpenAI
async def run():
    behaviour = Behaviour(delay=float(sys.argv[2]), chunk_delay=float(sys.argv[3]))
    fake = await FakeOpenAI(default=behaviour).start(int(sys.argv[1]))
    while True:  # forget what was received: a long soak would otherwise grow the fake's memory
        fake.received.clear()
        await asyncio.sleep(5)
asyncio.run(run())
"""


def start_upstream(delay: float = 0.0, chunk_delay: float = 0.0) -> tuple[subprocess.Popen[bytes], int]:
    """The fake OpenAI server in its own process; ``delay`` before each answer, ``chunk_delay`` between stream
    chunks (so that a stream is still running when a client goes away)."""
    port = free_port()
    if chunk_delay:
        command = [sys.executable, "-c", _UPSTREAM_WITH_CHUNK_DELAY, str(port), str(delay), str(chunk_delay)]
    else:
        command = [sys.executable, "-m", "providers.fake_openai", "--port", str(port), "--delay", str(delay)]
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


def start_deja(workdir: Path, upstream_port: int, deja: dict[str, Any],
               root: Path = ROOT) -> tuple[subprocess.Popen[bytes], int]:
    """``deja serve`` with one model group ``bench`` on the fake upstream, and the given ``deja:`` section;
    ``root``: the source tree to run (another checkout, e.g. main for a before/after)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = {"model_list": [{"model_name": "bench", "litellm_params": {
        "model": "openai/gpt-4o-mini", "api_base": f"http://127.0.0.1:{upstream_port}/v1", "api_key": "x"}}],
        "router_settings": {"num_retries": 0},
        "deja": {"database_url": f"sqlite:///{workdir}/deja.db", "log_level": "warning", **deja}}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = "router.cli" if (root / "router" / "cli.py").exists() else "router.cli.main"  # a tree before the move
    proc = subprocess.Popen([sys.executable, "-m", cli, "serve", "--config", str(path), "--port",
                             str(port)], env=_env(root), cwd=workdir, stdout=subprocess.DEVNULL,
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


def start_litellm_proxy(binary: str, workdir: Path, upstream_port: int,
                        litellm_settings: dict[str, Any] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """The LiteLLM proxy (installed separately, e.g. ``pip install 'litellm[proxy]'`` in another venv) with the same
    model group, no database, for a same-run comparison; ``litellm_settings`` (e.g. its cache) go in its config."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {"model_list": [{"model_name": "bench", "litellm_params": {
        "model": "openai/gpt-4o-mini", "api_base": f"http://127.0.0.1:{upstream_port}/v1", "api_key": "x"}}],
        "router_settings": {"num_retries": 0}}
    if litellm_settings:
        config["litellm_settings"] = litellm_settings
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEJA_", "DATABASE_URL"))}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    proc = subprocess.Popen([binary, "--config", str(path), "--port", str(port), "--host", "127.0.0.1"], env=env,
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=open(workdir / "litellm.log", "wb"))
    wait_port(port, proc, timeout=180)
    return proc, port


def pinned_version(package: str, default: str, constraints: Path = ROOT / "constraints.txt") -> str:
    """The ``package==version`` pin of ``constraints.txt``, else ``default``."""
    try:
        for line in constraints.read_text().splitlines():
            name, _, version = line.split("#")[0].strip().partition("==")
            if name.strip().lower() == package and version.strip():
                return version.strip()
    except OSError:
        pass
    return default


LITELLM_PROXY_VERSION = pinned_version("litellm", "1.100.5")  # the LiteLLM deja pins


def ensure_litellm_proxy(venv: Path = ROOT / ".bench" / "litellm-proxy",
                         version: str = LITELLM_PROXY_VERSION) -> str:
    """``litellm[proxy]==version`` in its own virtual environment (created once; skipped when already installed).
    Returns the path of its ``litellm`` binary."""
    binary = venv / "bin" / "litellm"
    stamp = venv / f".installed-{version}"
    if stamp.exists() and binary.exists():
        return str(binary)
    if not (venv / "bin" / "python").exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    print(f"installing litellm[proxy]=={version} into {venv} (once)", file=sys.stderr, flush=True)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q",
                           f"litellm[proxy]=={version}"], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
        raise RuntimeError(f"installing litellm[proxy]=={version} into {venv} failed")
    stamp.touch()
    return str(binary)


PORTKEY_VERSION = "1.15.2"


def ensure_portkey(prefix: Path = ROOT / ".bench" / "portkey", version: str = PORTKEY_VERSION) -> Path:
    """``@portkey-ai/gateway@version`` from the npm registry into ``prefix`` (once); its server script."""
    script = prefix / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    stamp = prefix / f".installed-{version}"
    if stamp.exists() and script.exists():
        return script
    prefix.mkdir(parents=True, exist_ok=True)
    print(f"installing @portkey-ai/gateway@{version} into {prefix} (once)", file=sys.stderr, flush=True)
    done = subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--ignore-scripts",
                           f"@portkey-ai/gateway@{version}"], capture_output=True, text=True)
    if done.returncode != 0 or not script.exists():
        print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
        raise RuntimeError(f"installing @portkey-ai/gateway@{version} into {prefix} failed")
    stamp.touch()
    return script


def start_portkey(script: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The Portkey gateway (Node, no cache, default settings); route with ``portkey_headers``."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["node", str(script), f"--port={port}", "--headless"], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=open(workdir / "portkey.log", "wb"))
    wait_port(port, proc)
    return proc, port


def portkey_headers(upstream_port: int) -> dict[str, str]:
    return {"x-portkey-provider": "openai", "x-portkey-custom-host": f"http://127.0.0.1:{upstream_port}/v1",
            "Authorization": "Bearer x"}


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on; the name may hold spaces


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (and children they reaped)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        try:
            fields = _stat_fields(p)
        except OSError:
            continue
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
    return total / ticks


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``: peak resident) in KiB, summed over the
    process and its descendants."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total
