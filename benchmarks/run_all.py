"""``make bench``: every benchmark in turn, each in its own process; results under ``benchmarks/results/``.

    .venv/bin/python -m benchmarks.run_all [--quick] [--only overhead,cache_hit_rate]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHMARKS = ("overhead", "cache_hit_rate", "lookup_stages", "eager_gate", "index_churn", "gate_recall",
              "warm_insert", "ivf_trial", "embedder_speed", "embedder_gil", "compression", "limiter", "persistence",
              "replay_speed", "hostile")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated subset of " + ", ".join(BENCHMARKS))
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(BENCHMARKS)
    failed = []
    for name in chosen:
        started = time.monotonic()
        print(f"== {name}", flush=True)
        command = [sys.executable, "-m", f"benchmarks.{name}"] + (["--quick"] if args.quick else [])
        if subprocess.run(command).returncode != 0:
            failed.append(name)
        print(f"== {name}: {time.monotonic() - started:.0f} s", flush=True)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
