"""The ``deja`` command: ``serve``, ``keys create|list|revoke|update``, ``usage``, ``db migrate``,
``cache replay``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from router.config import ConfigError, Settings, load_settings  # noqa: E402
from router.http.errors import DejaError  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deja", description="A semantic-caching OpenAI-compatible LLM proxy.")
    p.add_argument("--config", "-c", default=os.environ.get("DEJA_CONFIG"), help="YAML config file")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1, help="worker processes sharing the port (need Redis)")
    serve.add_argument("--allow-open-bind", action="store_true",
                       help="listen beyond loopback without a master key (anyone who reaches it may use it)")
    serve.add_argument("--config", "-c", dest="config_sub")
    keys = sub.add_parser("keys", help="manage virtual keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create")
    _key_fields(create)
    lst = keys.add_parser("list")
    lst.add_argument("--tenant")
    revoke = keys.add_parser("revoke")
    revoke.add_argument("key_id")
    update = keys.add_parser("update")
    update.add_argument("key_id")
    _key_fields(update)
    usage = sub.add_parser("usage", help="show usage and spend")
    for name in ("since", "until", "tenant", "key", "model", "user", "tag"):
        usage.add_argument(f"--{name}")
    usage.add_argument("--group-by", choices=["day", "model", "key", "tenant", "user", "tag"])
    usage.add_argument("--json", action="store_true")
    db = sub.add_parser("db", help="database maintenance").add_subparsers(dest="action", required=True)
    migrate = db.add_parser("migrate")
    from router.cli.replay import add_parser as add_replay_parser

    add_replay_parser(sub)
    for leaf in (create, lst, revoke, update, usage, migrate):  # `--config` also after the command, as for serve
        leaf.add_argument("--config", "-c", dest="config_sub", help="YAML config file")
    return p


def _key_fields(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name")
    p.add_argument("--tenant")
    p.add_argument("--models", help="comma-separated allowed model groups (default: all)")
    p.add_argument("--rpm", type=int)
    p.add_argument("--tpm", type=int)
    p.add_argument("--budget", type=float, dest="budget_usd")
    p.add_argument("--budget-period", choices=["1h", "1d", "7d", "30d", "daily", "monthly"])
    p.add_argument("--expires-in", type=float, help="seconds until the key expires")
    p.add_argument("--metadata", help="JSON object")


def _key_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name in ("name", "tenant", "rpm", "tpm", "budget_usd", "budget_period", "expires_in"):
        value = getattr(args, name, None)
        if value is not None:
            body[name] = value
    if args.models:
        body["allowed_models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.metadata:
        body["metadata"] = json.loads(args.metadata)
    return body


async def _with_storage(settings: Settings, work: Callable[[Any], Awaitable[int]], *, migrate: bool = True) -> int:
    from router.storage import open_storage, prepare_sqlite_dir

    prepare_sqlite_dir(settings.deja.database_url)
    storage = open_storage(settings.deja.database_url, schema=settings.deja.database_schema)
    await storage.connect()
    try:
        if migrate:
            await storage.migrate()
        return await work(storage)
    finally:
        await storage.close()


async def _keys(args: argparse.Namespace, storage: Any) -> int:
    from router.auth import management as ka

    if args.action == "create":
        record, secret = await ka.create_key(storage, ka.parse(ka.KeySpec, _key_body(args)))
        print(json.dumps({**ka.key_view(record), "key": secret}, indent=2))
        print("Store the key now: it is not shown again.", file=sys.stderr)
    elif args.action == "list":
        from router.http.admin import key_views

        for view in await key_views(storage, await storage.list_keys(tenant=args.tenant)):
            last = view["last_used_at"]
            used = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last)) if last is not None else "never"
            print(f"{view['id']}  {view['key_prefix']:16} tenant={view['tenant']:12} name={view['name']!r} "
                  f"rpm={view['rpm']} tpm={view['tpm']} budget={view['budget_usd']} "
                  f"spend=${view['spend_usd']:.4f} requests={view['requests']} last_used={used} "
                  f"{'active' if view['active'] else 'inactive'}")
    elif args.action == "revoke":
        print(json.dumps(ka.key_view(await ka.revoke_key(storage, args.key_id)), indent=2))
    else:
        body = _key_body(args)
        body.pop("expires_in", None)
        if args.expires_in is not None:
            body["expires_at"] = time.time() + args.expires_in
        record = await ka.update_key(storage, args.key_id, ka.parse(ka.KeyUpdate, body))
        print(json.dumps(ka.key_view(record), indent=2))
    return 0


async def _usage(args: argparse.Namespace, storage: Any) -> int:
    from router.http.admin import _time
    from router.storage import UsageFilter
    from router.storage.report import format_usage

    f = UsageFilter(since=_time(args.since, "since"), until=_time(args.until, "until"), tenant=args.tenant,
                    key_id=args.key, model=args.model, end_user=args.user, tag=args.tag)
    rows = await storage.usage_summary(f, args.group_by)
    print(json.dumps(rows, indent=2) if args.json else format_usage(rows, args.group_by))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = getattr(args, "config_sub", None) or args.config
    try:
        overrides = {"allow_open_bind": True} if getattr(args, "allow_open_bind", False) else None
        settings = load_settings(config, overrides=overrides)
        from router.ops.logs import setup_logging

        setup_logging(settings.deja.log_level, settings.deja.log_format)
        for warning in settings.config_warnings:
            logging.getLogger("deja.config").warning(warning)
        if args.command == "serve":
            host = args.host or settings.deja.host
            port = args.port if args.port is not None else settings.deja.port
            if args.workers > 1:
                from router.cli.workers import run_workers

                return run_workers(settings, host, port, args.workers)
            from router.app import run_server

            run_server(settings, host, port)
            return 0
        if args.command == "keys":
            return asyncio.run(_with_storage(settings, lambda s: _keys(args, s)))
        if args.command == "usage":
            return asyncio.run(_with_storage(settings, lambda s: _usage(args, s)))
        if args.command == "cache":
            from router.cli.replay import run as run_replay

            return run_replay(settings, args)
        return asyncio.run(_with_storage(settings, _migrate_report, migrate=False))
    except ConfigError as exc:
        print(f"deja: {exc}", file=sys.stderr)
        return 2
    except DejaError as exc:
        print(f"deja: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # e.g. the port is taken, or a backend refused the connection at start-up
        print(f"deja: cannot start: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a backend or a shipped file that cannot be used: one clear line, details in debug
        logging.getLogger("deja").debug("start-up failed", exc_info=True)
        print(f"deja: cannot start: {type(exc).__name__}: {exc} (log_level: debug shows the details)",
              file=sys.stderr)
        return 1


async def _migrate_report(storage: Any) -> int:
    applied = await storage.migrate()
    print(f"database up to date ({storage.backend}); applied now: {applied or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
