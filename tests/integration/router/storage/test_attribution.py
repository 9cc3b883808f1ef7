"""Spend attribution in both backends: tags, end users, key activity, tenant spend, one stored request,
and the upgrade from schema version 1 (existing rows and keys kept, the rollup's last use filled in)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import replace
from typing import Any

import pytest

from router.storage import KeyRecord, Storage, UsageFilter, open_storage
from tests.integration.router.storage.helpers import BASE, DAY, make_records

TAGS = ("prod", "batch", "team:search", "eu")


def tagged(n: int, prefix: str = "tag") -> list[Any]:
    rng = random.Random(11)
    records = make_records(n, prefix=prefix)
    for r in records:
        chosen = rng.sample(TAGS, rng.randint(0, 3))
        r.tags = json.dumps(chosen) if chosen else None
        r.trace_id = f"{rng.getrandbits(128):032x}"
        r.metadata = json.dumps({"tags": chosen, "run": r.request_id})
    return records


def by_tag(records: list[Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in records:
        for tag in json.loads(r.tags or "[]"):
            out[tag]["requests"] += 1
            out[tag]["cost_usd"] += r.cost_usd
    return out


async def test_group_and_filter_by_tag(storage: Storage) -> None:
    records = tagged(200)
    await storage.write_usage(records[:90])
    await storage.write_usage(records[60:])  # a replay of 30 rows: their tags are not counted twice
    want = by_tag(records)
    for f in (UsageFilter(), UsageFilter(since=BASE, until=BASE + 3 * DAY)):
        summary = {row["group"]: row for row in await storage.usage_summary(f, "tag")}
        assert summary.keys() == want.keys()
        for tag, row in summary.items():
            assert row["requests"] == want[tag]["requests"]
            assert row["cost_usd"] == pytest.approx(want[tag]["cost_usd"])
    (only,) = await storage.usage_summary(UsageFilter(tag="eu", tenant="acme"), None)
    expected = [r for r in records if r.tenant == "acme" and "eu" in json.loads(r.tags or "[]")]
    assert only["requests"] == len(expected) and only["cost_usd"] == pytest.approx(sum(r.cost_usd for r in expected))
    rows, _ = await storage.list_requests(UsageFilter(tag="batch"), limit=1000)
    assert sorted(r["request_id"] for r in rows) == sorted(
        r.request_id for r in records if "batch" in json.loads(r.tags or "[]"))
    by_model = {row["group"]: row["requests"] for row in await storage.usage_summary(UsageFilter(tag="prod"), "model")}
    assert sum(by_model.values()) == want["prod"]["requests"]


async def test_group_and_filter_by_end_user(storage: Storage) -> None:
    records = make_records(150)
    await storage.write_usage(records)
    counts: dict[Any, int] = defaultdict(int)
    for r in records:
        counts[r.end_user] += 1
    summary = {row["group"]: row["requests"] for row in await storage.usage_summary(UsageFilter(), "user")}
    assert summary == dict(counts)
    (row,) = await storage.usage_summary(UsageFilter(end_user="user-1", since=BASE, until=BASE + 3 * DAY), None)
    assert row["requests"] == counts["user-1"]


async def test_key_activity_from_the_rollup(storage: Storage) -> None:
    records = make_records(250)
    await storage.write_usage(records[:100])
    await storage.write_usage(records[100:])
    activity = await storage.key_activity()
    for key in ("key_a", "key_b"):
        mine = [r for r in records if r.key_id == key]
        assert activity[key].requests == len(mine)
        assert activity[key].spend_usd == pytest.approx(sum(r.cost_usd for r in mine))
        assert activity[key].last_used_at == pytest.approx(max(r.ts for r in mine))
    assert "" not in activity and None not in activity
    assert (await storage.key_activity(["key_a", "nobody"])).keys() == {"key_a"}
    assert await storage.key_activity([]) == {}
    await storage.delete_older_than(BASE + 10 * DAY)  # retention leaves the rollup, hence the activity
    assert (await storage.key_activity(["key_b"]))["key_b"] == activity["key_b"]


async def test_tenant_spend_since(storage: Storage) -> None:
    records = make_records(300)
    await storage.write_usage(records)
    for since in (BASE + 1.5 * DAY, BASE + 3600, BASE - 3600):
        want = sum(r.cost_usd for r in records if r.tenant == "acme" and r.ts >= since)
        assert await storage.tenant_spend_since("acme", since) == pytest.approx(want)
    assert await storage.tenant_spend_since("nobody", BASE) == 0.0


async def test_get_request_with_bodies_metadata_and_trace_id(storage: Storage) -> None:
    records = tagged(5)
    await storage.write_usage(records)
    target = records[3]
    row = await storage.get_request(target.request_id)
    assert row is not None
    assert row["request_body"] == target.request_body and row["response_body"] == target.response_body
    assert (row["tags"], row["metadata"], row["trace_id"]) == (target.tags, target.metadata, target.trace_id)
    assert row["stream"] is target.stream
    assert await storage.get_request(target.request_id, tenant=target.tenant) == row
    other = "globex" if target.tenant == "acme" else "acme"
    assert await storage.get_request(target.request_id, tenant=other) is None
    assert await storage.get_request("req-missing") is None


async def test_retention_deletes_tags_too(storage: Storage) -> None:
    old = tagged(40, prefix="old")
    await storage.write_usage(old)
    assert await storage.delete_older_than(BASE + 10 * DAY, batch=7) == 40
    assert await storage.usage_summary(UsageFilter(), "tag") == []


@pytest.mark.parametrize("period", ["1h", "1d", "7d", "30d", "daily", "monthly", None])
async def test_every_budget_period_is_stored(storage: Storage, period: str | None) -> None:
    key = KeyRecord(id="key_p", name="p", tenant="acme", secret_hash="e" * 64, prefix="sk-deja-p",
                    budget_usd=1.0, budget_period=period, created_at=BASE)
    await storage.insert_key(key)
    assert await storage.get_key("key_p") == key
    assert await storage.update_key("key_p", budget_period="7d") == replace(key, budget_period="7d")


async def test_upgrade_from_version_1_keeps_rows_and_keys(storage_target: tuple[str, str | None],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from router.storage import migrations, postgres, sqlite

    url, schema = storage_target
    monkeypatch.setattr(sqlite, "SQLITE", migrations.SQLITE[:1])
    monkeypatch.setattr(postgres, "POSTGRES", migrations.POSTGRES[:1])
    old = open_storage(url, schema=schema)
    await old.connect()
    assert await old.migrate() == [1]
    await _v1_rows(old)
    await old.close()
    monkeypatch.undo()
    new = open_storage(url, schema=schema)
    await new.connect()
    try:
        assert await new.migrate() == [v for v, _ in migrations.SQLITE[1:]]
        key = await new.get_key("key_v1")
        assert key is not None and key.budget_period == "monthly" and key.metadata == {"team": "x"}
        activity = (await new.key_activity())["key_v1"]
        assert (activity.requests, activity.last_used_at) == (1, BASE + 60)
        assert activity.spend_usd == pytest.approx(0.5)
        (row,), _ = await new.list_requests(UsageFilter(), include_bodies=True)
        assert row["tags"] is None and row["request_body"] == "[]"
    finally:
        await new.close()


async def _v1_rows(storage: Any) -> None:
    """A key, a usage row and its rollup as version 1 wrote them (without the columns version 2 adds)."""
    key = ("key_v1", "v1", "acme", "d" * 64, "sk-deja-v1", '["m"]', None, None, 5.0, "monthly", None,
           '{"team": "x"}', BASE, None)
    usage = ("req-v1", BASE + 60, "chat", "key_v1", "acme", None, "m", None, None, "miss", None, 1, 1, 1, 0.5,
             0.0, 0.0, 10.0, None, 200, None, False, "[]", "{}")
    rollup = (1, 0, 1, 1, 1, 0.5, 0.0, 0.0, 0, 1)
    if storage.backend == "sqlite":
        def run(db: Any) -> None:
            db.execute(f"INSERT INTO api_keys VALUES ({', '.join('?' * len(key))})", key)
            db.execute(f"INSERT INTO usage_log VALUES ({', '.join('?' * len(usage))})", usage)
            db.execute(f"INSERT INTO usage_daily VALUES ({', '.join('?' * (4 + len(rollup)))})",
                       ("2026-01-10", "acme", "key_v1", "m", *rollup))
        await storage._run(run)
        return
    from datetime import date

    async with storage._conn() as conn:
        await conn.execute(f"INSERT INTO api_keys VALUES ({', '.join(f'${i + 1}' for i in range(len(key)))})", *key)
        await conn.execute(f"INSERT INTO usage_log VALUES ({', '.join(f'${i + 1}' for i in range(len(usage)))})",
                           *usage)
        await conn.execute(f"INSERT INTO usage_daily VALUES ({', '.join(f'${i + 1}' for i in range(4 + len(rollup)))})",
                           date(2026, 1, 10), "acme", "key_v1", "m", *rollup)


@pytest.mark.parametrize("store_bodies", [True, False])
async def test_metadata_is_capped_and_kept_without_bodies(storage: Storage, store_bodies: bool) -> None:
    from router.storage import UsageWriter
    from router.storage.writer import MAX_METADATA_BYTES

    big, small = make_records(2, prefix="meta")
    big.metadata = json.dumps({"note": "x" * 20_000})
    small.metadata, small.tags = json.dumps({"run": "7"}), json.dumps(["a"])
    writer = UsageWriter(storage, store_bodies=store_bodies, flush_interval=3600)
    await writer.start()
    writer.submit(big)
    writer.submit(small)
    await writer.close()
    rows = {r["request_id"]: r for r in (await storage.list_requests(UsageFilter(), include_bodies=True))[0]}
    stub = json.loads(rows[big.request_id]["metadata"])  # still JSON: a stub holding the head
    assert len(rows[big.request_id]["metadata"].encode()) <= MAX_METADATA_BYTES and stub["truncated"] is True
    assert rows[small.request_id]["metadata"] == small.metadata and rows[small.request_id]["tags"] == '["a"]'
    assert (rows[small.request_id]["request_body"] is None) is not store_bodies  # metadata is not a body
