"""``deja cache replay``: replay logged requests through the cache offline and report what it would have done.

Reads a JSONL file (``deja cache replay traffic.jsonl``) or, without a file, deja's own usage rows from
``deja.database_url`` (stored messages; ``--since/--until/--tenant/--key/--model`` narrow them). Uses the
configured embedder and the shipped verifier; sends nothing upstream and writes to no live cache.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from router.config import Settings

PAGE = 1000


def add_parser(sub: Any) -> None:
    """``cache replay`` and its options, under the ``deja`` command's subparsers."""
    cache = sub.add_parser("cache", help="the response cache").add_subparsers(dest="action", required=True)
    p = cache.add_parser("replay", help="replay logged requests through the cache offline",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", help="JSONL of chat bodies or {request, response, label} records; "
                   "default: deja's usage store")
    for name in ("since", "until", "tenant", "key", "model"):
        p.add_argument(f"--{name}", help="usage store only: filter the rows replayed")
    p.add_argument("--limit", type=int, help="replay at most this many requests (the most recent)")
    p.add_argument("--judged", help="JSONL of judged pairs {text_a, text_b, label} to measure wrong hits")
    p.add_argument("--thresholds", default="0.80:0.99:0.01",
                   help="LOW:HIGH:STEP or a comma list (default 0.80:0.99:0.01)")
    p.add_argument("--cutoffs", default="",
                   help="other verifier classifier cutoffs to try, comma-separated (the shipped one always runs)")
    p.add_argument("--target", type=float, default=0.02, help="wrong-hit rate to stay under (default 0.02)")
    p.add_argument("--top-k", type=int, default=5, help="candidates compared per lookup, as live (default 5)")
    p.add_argument("--ttl", type=float, help="entry lifetime in seconds (default: deja.cache.ttl_seconds)")
    p.add_argument("--price-as", help="price every request as this LiteLLM model")
    p.add_argument("--samples", type=int, default=5, help="would-be hits shown per similarity band")
    p.add_argument("--embedding-threads", type=int,
                   help="ONNX/torch threads (default: deja.cache.embedding_threads, else one per core up to 4: "
                        "a batch job, unlike the server, has no event loop to leave room for)")
    p.add_argument("--json", dest="json_path", help="write the full report as JSON here")
    p.add_argument("--html", dest="html_path", help="write a self-contained HTML report here")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--config", "-c", dest="config_sub", help="YAML config file")


def batch_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def cutoffs(spec: str) -> tuple[float, ...]:
    """``0.6,0.8``: classifier cutoffs between 0 and 1."""
    try:
        values = tuple(float(x) for x in spec.split(",") if x.strip())
    except ValueError as exc:
        raise ValueError(f"--cutoffs must be a comma list of numbers, got {spec!r}") from exc
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"--cutoffs must lie in 0..1, got {spec!r}")
    return values


def thresholds(spec: str) -> tuple[float, ...]:
    """``0.8:0.99:0.01`` (inclusive) or ``0.9,0.95``."""
    try:
        if ":" in spec:
            low, high, step = (float(x) for x in spec.split(":"))
            if step <= 0 or high < low:
                raise ValueError
            count = int(round((high - low) / step)) + 1
            values = tuple(round(low + step * i, 4) for i in range(count))
        else:
            values = tuple(float(x) for x in spec.split(",") if x.strip())
    except ValueError as exc:
        raise ValueError(f"--thresholds must be LOW:HIGH:STEP or a comma list, got {spec!r}") from exc
    if not values or any(not -1.0 <= v <= 1.0 for v in values):
        raise ValueError(f"--thresholds must lie in -1..1, got {spec!r}")
    return values


async def usage_rows(settings: Settings, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Usage rows with their stored bodies, newest first (paged), at most ``--limit``."""
    from router.http.admin import _time
    from router.storage import UsageFilter, open_storage, prepare_sqlite_dir

    f = UsageFilter(since=_time(args.since, "since"), until=_time(args.until, "until"), tenant=args.tenant,
                    key_id=args.key, model=args.model)
    prepare_sqlite_dir(settings.deja.database_url)
    storage = open_storage(settings.deja.database_url, schema=settings.deja.database_schema)
    await storage.connect()
    rows: list[dict[str, Any]] = []
    try:
        await storage.migrate()
        cursor: str | None = None
        while args.limit is None or len(rows) < args.limit:
            page, cursor = await storage.list_requests(f, limit=PAGE, cursor=cursor, include_bodies=True)
            rows.extend(page)
            if cursor is None:
                break
    finally:
        await storage.close()
    return rows if args.limit is None else rows[: args.limit]


async def replay(settings: Settings, args: argparse.Namespace) -> int:
    from cache.embedder import create_embedder
    from cache.replay import (
        Judge,
        ProgressBar,
        ReplayOptions,
        format_table,
        read_jsonl,
        run_replay,
        write_html,
        write_json,
    )
    from cache.replay.records import from_usage_rows
    from cache.verify import Verifier

    cache = settings.deja.cache
    if args.file:
        requests, read = read_jsonl(args.file)
        if args.limit is not None:
            requests = requests[-args.limit:]
        source = {"name": args.file, "kind": "jsonl"}
    else:
        requests, read = from_usage_rows(await usage_rows(settings, args))
        source = {"name": settings.deja.database_url.split("@")[-1], "kind": "usage store"}
    if not requests:
        print(f"deja: nothing to replay ({read.read} inputs; skipped: {dict(read.skipped)})", file=sys.stderr)
        return 1
    options = ReplayOptions(thresholds=thresholds(args.thresholds), default_threshold=cache.threshold,
                            ttl_seconds=args.ttl or cache.ttl_seconds, top_k=args.top_k,
                            max_semantic_temperature=cache.max_semantic_temperature,
                            normalize=settings.deja.compression.default != "off",
                            target_wrong_rate=args.target, samples_per_band=args.samples,
                            price_as=args.price_as, source=source, cutoffs=cutoffs(args.cutoffs))
    judge = Judge.load(args.judged) if args.judged else None
    embedder = await create_embedder(cache.embedding_model, backend=cache.embedding_backend,
                                     threads=args.embedding_threads or cache.embedding_threads or batch_threads())
    try:
        report = await run_replay(requests, embedder, Verifier.load_default(), judge=judge, options=options,
                                  read=read, progress=(lambda *a: None) if args.quiet else ProgressBar())
    finally:
        await embedder.close()
    print(format_table(report))
    if args.json_path:
        write_json(report, args.json_path)
    if args.html_path:
        write_html(report, args.html_path)
    return 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    from cache.replay import ReplayInputError

    try:
        return asyncio.run(replay(settings, args))
    except (ReplayInputError, ValueError) as exc:
        print(f"deja: {exc}", file=sys.stderr)
        return 2
