"""The admin API (master key; a virtual key may read its own usage; without a master key, local clients may
read usage and requests).

- ``POST/GET /admin/keys``, ``GET/PATCH/DELETE /admin/keys/{id}``: virtual keys (``?tenant=`` filters lists),
  each with its activity: ``spend_usd``, ``requests``, ``last_used_at`` (from the daily rollup)
- ``GET /admin/usage?since=&until=&tenant=&key=&model=&user=&tag=&group_by=day|model|key|tenant|user|tag``
- ``GET /admin/requests?…&limit=&cursor=&bodies=true``: page through logged interactions
- ``GET /admin/requests/{id}``: one interaction with its request and response (a virtual key: its tenant's only)
- ``DELETE /admin/cache[?namespace=&model=]``, ``GET /admin/cache/stats``
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from aiohttp import web

from router.appkeys import AUTH, CACHE, STORAGE
from router.auth.keys import Principal
from router.auth.management import KeySpec, KeyUpdate, create_key, key_view, parse, revoke_key, update_key
from router.http import errors as err
from router.http.parsing import read_json
from router.storage import GROUP_BY, InvalidQueryError, KeyActivity, KeyRecord, Storage, UsageFilter

ADMIN_MAX_BODY = 1 << 20


async def _json(request: web.Request) -> Any:
    """The body as JSON, read as the OpenAI routes read theirs: NaN/Infinity, deep nesting and lone
    surrogates are 400s."""
    return await read_json(request, ADMIN_MAX_BODY)


async def key_views(storage: Storage, records: list[KeyRecord]) -> list[dict[str, Any]]:
    """Keys as the API shows them, each with its activity (requests, spend, last use) from the rollup."""
    if not records:
        return []
    activity = await storage.key_activity(None if len(records) > 100 else [r.id for r in records])
    return [{**key_view(r), **activity.get(r.id, KeyActivity()).view()} for r in records]


async def keys_create(request: web.Request) -> web.Response:
    await request.app[AUTH].require_master(request.headers)
    record, secret = await create_key(request.app[STORAGE], parse(KeySpec, await _json(request)))
    return web.json_response({**key_view(record), **KeyActivity().view(), "key": secret}, status=201)


async def keys_list(request: web.Request) -> web.Response:
    await request.app[AUTH].require_master(request.headers)
    records = await request.app[STORAGE].list_keys(tenant=request.query.get("tenant"))
    return web.json_response({"object": "list", "data": await key_views(request.app[STORAGE], records)})


async def keys_get(request: web.Request) -> web.Response:
    await request.app[AUTH].require_master(request.headers)
    record = await request.app[STORAGE].get_key(request.match_info["key_id"])
    if record is None:
        raise err.NotFoundError(f"No key {request.match_info['key_id']}.", param="id", code="key_not_found")
    return web.json_response((await key_views(request.app[STORAGE], [record]))[0])


async def keys_update(request: web.Request) -> web.Response:
    await request.app[AUTH].require_master(request.headers)
    record = await update_key(request.app[STORAGE], request.match_info["key_id"],
                              parse(KeyUpdate, await _json(request)))
    request.app[AUTH].invalidate(record.secret_hash)
    return web.json_response((await key_views(request.app[STORAGE], [record]))[0])


async def keys_revoke(request: web.Request) -> web.Response:
    await request.app[AUTH].require_master(request.headers)
    record = await revoke_key(request.app[STORAGE], request.match_info["key_id"])
    request.app[AUTH].invalidate(record.secret_hash)
    return web.json_response((await key_views(request.app[STORAGE], [record]))[0])


def _time(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise err.BadRequestError(f"{name} must be unix seconds or an ISO date, got {value!r}", param=name) from exc
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _is_local(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address((request.remote or "").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


async def _reader(request: web.Request) -> Principal:
    """The master key reads everything; a virtual key reads only its own usage. Without a master key (open
    mode) only local clients may read: a gateway opened with allow_open_bind must not hand out stored prompts."""
    principal = await request.app[AUTH].authenticate(request.headers)
    if principal.is_master:
        return principal
    if request.app[AUTH].open:
        if not _is_local(request):
            raise err.PermissionDeniedError(
                "Without a master key, usage and requests can be read only from this machine.", code="admin_only")
        return principal
    if principal.key_id is None:
        raise err.PermissionDeniedError("The admin API needs the master key.", code="admin_only")
    return principal


def _filter(request: web.Request, principal: Principal) -> UsageFilter:
    q = request.query
    key = q.get("key") or None
    if principal.key_id is not None and not principal.is_master:
        if key not in (None, principal.key_id):
            raise err.PermissionDeniedError("A key may read only its own usage.", param="key", code="admin_only")
        key = principal.key_id
    return UsageFilter(since=_time(q.get("since"), "since"), until=_time(q.get("until"), "until"),
                       tenant=q.get("tenant") or None, key_id=key, model=q.get("model") or None,
                       tag=q.get("tag") or None, end_user=q.get("user") or None)


async def usage(request: web.Request) -> web.Response:
    principal = await _reader(request)
    group_by = request.query.get("group_by") or None
    if group_by is not None and group_by not in GROUP_BY:
        raise err.BadRequestError(f"group_by must be one of {', '.join(GROUP_BY)}", param="group_by")
    try:
        rows = await request.app[STORAGE].usage_summary(_filter(request, principal), group_by)
    except InvalidQueryError as exc:
        raise err.BadRequestError(str(exc)) from exc
    return web.json_response({"object": "list", "group_by": group_by, "data": rows})


async def requests_page(request: web.Request) -> web.Response:
    principal = await _reader(request)
    try:
        limit = max(1, min(500, int(request.query.get("limit", "50"))))
    except ValueError as exc:
        raise err.BadRequestError("limit must be an integer", param="limit") from exc
    bodies = request.query.get("bodies", "false").lower() in ("1", "true", "yes")
    try:
        rows, cursor = await request.app[STORAGE].list_requests(
            _filter(request, principal), limit=limit, cursor=request.query.get("cursor") or None,
            include_bodies=bodies)
    except InvalidQueryError as exc:
        raise err.BadRequestError(str(exc), param="cursor") from exc
    for row in rows:  # stored as JSON text; shown as JSON (bodies stay text here, as they always were)
        row["tags"], row["metadata"] = _parsed(row.get("tags")), _parsed(row.get("metadata"))
    return web.json_response({"object": "list", "data": rows, "next_cursor": cursor})


async def request_get(request: web.Request) -> web.Response:
    """One stored interaction, request and response included. A virtual key reads its own tenant's only; an
    id it may not read is a 404, like an unknown one (ids of other tenants are not confirmed)."""
    principal = await _reader(request)
    request_id = request.match_info["request_id"]
    tenant = principal.tenant if principal.key_id is not None and not principal.is_master else None
    row = await request.app[STORAGE].get_request(request_id, tenant=tenant)
    if row is None:
        raise err.NotFoundError(f"No stored request {request_id}.", param="id", code="request_not_found")
    for field in ("request_body", "response_body", "metadata", "tags"):
        row[field] = _parsed(row.get(field))
    return web.json_response({"object": "request", **row})


def _parsed(text: Any) -> Any:
    """Stored JSON text as JSON (a body that is not JSON stays the text it is)."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


async def cache_clear(request: web.Request) -> web.Response:
    await request.app[AUTH].require_master(request.headers)
    cache = request.app.get(CACHE)
    if cache is None:
        return web.json_response({"deleted": 0, "enabled": False})
    deleted = await cache.clear(namespace=request.query.get("namespace"), model=request.query.get("model"))
    return web.json_response({"deleted": deleted, "enabled": True})


async def cache_stats(request: web.Request) -> web.Response:
    await request.app[AUTH].require_master(request.headers)
    cache = request.app.get(CACHE)
    if cache is None:
        return web.json_response({"enabled": False})
    return web.json_response({"enabled": True, **asdict(await cache.stats())})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/admin/keys", keys_create)
    r.add_get("/admin/keys", keys_list)
    r.add_get("/admin/keys/{key_id}", keys_get)
    r.add_patch("/admin/keys/{key_id}", keys_update)
    r.add_delete("/admin/keys/{key_id}", keys_revoke)
    r.add_get("/admin/usage", usage)
    r.add_get("/admin/requests", requests_page)
    r.add_get("/admin/requests/{request_id}", request_get)
    r.add_delete("/admin/cache", cache_clear)
    r.add_get("/admin/cache/stats", cache_stats)
