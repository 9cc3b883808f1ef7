"""Both backends against real databases: rows, rollup, idempotence, queries, retention, keys, migrations."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest

from router.storage import (
    DuplicateKeyError,
    InvalidQueryError,
    KeyRecord,
    Storage,
    UsageFilter,
    open_storage,
)
from tests.integration.router.storage.helpers import (
    BASE,
    DAY,
    expected_summary,
    group_value,
    make_records,
    raw_count,
    rollup_count,
)


async def test_rows_written_and_read_back(storage: Storage) -> None:
    records = make_records(40)
    assert await storage.write_usage(records) == 40
    rows, cursor = await storage.list_requests(UsageFilter(), limit=100, include_bodies=True)
    assert cursor is None
    assert {r["request_id"]: r for r in rows} == {r.request_id: asdict(r) for r in records}


@pytest.mark.parametrize("group_by", [None, "day", "model", "key", "tenant"])
async def test_rollup_equals_sum_of_rows(storage: Storage, group_by: str | None) -> None:
    records = make_records(300)
    await storage.write_usage(records[:120])
    await storage.write_usage(records[120:])
    expected = expected_summary(records, group_by)
    # A day-aligned filter is answered by the rollup, a sub-day one by raw rows: both must agree with Python.
    for f in (UsageFilter(), UsageFilter(since=BASE, until=BASE + 3 * DAY), UsageFilter(since=BASE - 0.5)):
        summary = await storage.usage_summary(f, group_by)
        assert {row["group"] for row in summary} == set(expected)
        for row in summary:
            want = expected[row["group"]]
            assert row["requests"] == want["requests"]
            assert row["prompt_tokens"] == want["prompt_tokens"]
            assert row["completion_tokens"] == want["completion_tokens"]
            assert row["cache_hits"] == want["cache_hits"]
            assert row["cost_usd"] == pytest.approx(want["cost_usd"])
            assert row["saved_usd"] == pytest.approx(want["saved_usd"])
            assert 0.0 <= row["cache_hit_rate"] <= 1.0


async def test_rollup_table_matches_rows_per_day_tenant_key_model(storage: Storage) -> None:
    records = make_records(200)
    await storage.write_usage(records)
    expected: dict[tuple, list[float]] = {}
    for r in records:
        acc = expected.setdefault((group_value(r, "day"), r.tenant, r.key_id, r.model), [0, 0.0])
        acc[0] += 1
        acc[1] += r.cost_usd
    rollup = await storage.rollup_rows(UsageFilter())
    got = {(r["day"], r["tenant"], r["key_id"], r["model"]): [r["requests"], r["cost_usd"]] for r in rollup}
    assert got.keys() == expected.keys()
    for k, (requests, cost) in expected.items():
        assert got[k][0] == requests
        assert got[k][1] == pytest.approx(cost)


async def test_duplicate_request_ids_insert_once_and_count_once(storage: Storage) -> None:
    records = make_records(100)
    assert await storage.write_usage(records[:60]) == 60
    # A replay overlapping what was written, with a duplicate inside the batch itself.
    assert await storage.write_usage(records[40:] + records[90:95]) == 40
    assert await storage.write_usage(records) == 0
    assert await raw_count(storage) == 100
    assert await rollup_count(storage) == 100
    total = (await storage.usage_summary(UsageFilter(), None))[0]
    assert total["cost_usd"] == pytest.approx(sum(r.cost_usd for r in records))


async def test_filters_select_rows(storage: Storage) -> None:
    records = make_records(150)
    await storage.write_usage(records)
    f = UsageFilter(
        since=BASE + DAY, until=BASE + 2 * DAY, tenant="acme", key_id="key_a", model="gpt-4o-mini"
    )
    want = [
        r
        for r in records
        if BASE + DAY <= r.ts < BASE + 2 * DAY
        and (r.tenant, r.key_id, r.model) == ("acme", "key_a", "gpt-4o-mini")
    ]
    assert want, "test data should hit the filter"
    (total,) = await storage.usage_summary(f, None)
    assert total["requests"] == len(want)
    rows, _ = await storage.list_requests(f, limit=1000)
    assert sorted(r["request_id"] for r in rows) == sorted(r.request_id for r in want)


async def test_list_requests_pages_with_keyset_cursor(storage: Storage) -> None:
    records = make_records(23)
    for r in records[:6]:  # ties on ts are broken by request_id
        r.ts = BASE + 100.0
    await storage.write_usage(records)
    seen, cursor, pages = [], None, 0
    while True:
        rows, cursor = await storage.list_requests(UsageFilter(), limit=5, cursor=cursor)
        pages += 1
        assert len(rows) <= 5
        assert all("request_body" not in r for r in rows)
        seen.extend(rows)
        if cursor is None:
            break
    assert pages == 5
    order = sorted(records, key=lambda r: (r.ts, r.request_id), reverse=True)
    assert [r["request_id"] for r in seen] == [r.request_id for r in order]
    with pytest.raises(InvalidQueryError):
        await storage.list_requests(UsageFilter(), cursor="not a cursor!")


async def test_unknown_group_by_is_rejected(storage: Storage) -> None:
    with pytest.raises(InvalidQueryError):
        await storage.usage_summary(UsageFilter(), "provider")


async def test_retention_deletes_old_rows_in_batches_and_keeps_rollup(storage: Storage) -> None:
    old = make_records(103, start=BASE, span=DAY, prefix="old")
    new = make_records(20, start=BASE + 5 * DAY, span=DAY, prefix="new")
    await storage.write_usage(old + new)
    assert await storage.delete_older_than(BASE + 2 * DAY, batch=10) == 103
    assert await raw_count(storage) == 20
    assert await storage.delete_older_than(BASE + 2 * DAY, batch=10) == 0
    # The daily rollup keeps the history that raw rows no longer hold.
    assert await rollup_count(storage) == 123


async def test_key_spend_since(storage: Storage) -> None:
    records = make_records(300)
    await storage.write_usage(records)
    for since in (BASE + 1.5 * DAY, BASE + DAY, BASE - 3600):
        want = sum(r.cost_usd for r in records if r.key_id == "key_a" and r.ts >= since)
        assert await storage.key_spend_since("key_a", since) == pytest.approx(want)
    assert await storage.key_spend_since("nobody", BASE) == 0.0
    # Whole days come from the rollup, so a budget period survives retention of raw rows.
    before = await storage.key_spend_since("key_b", BASE)
    await storage.delete_older_than(BASE + 3 * DAY)
    assert await storage.key_spend_since("key_b", BASE) == pytest.approx(before)


async def test_migrations_applied_twice_do_nothing(storage: Storage, storage_target) -> None:
    assert await storage.migrate() == []
    url, schema = storage_target
    again = open_storage(url, schema=schema)
    await again.connect()
    try:
        assert await again.migrate() == []
        assert await again.ping()
    finally:
        await again.close()


def _key(n: int, tenant: str = "acme") -> KeyRecord:
    return KeyRecord(
        id=f"key_{n:016x}",
        name=f"key {n}",
        tenant=tenant,
        secret_hash=f"{n:064x}",
        prefix=f"sk-deja-{n:04x}",
        allowed_models=["gpt-4o-mini"],
        rpm=60,
        tpm=None,
        budget_usd=10.0,
        budget_period="monthly",
        expires_at=None,
        metadata={"team": "search"},
        created_at=BASE + n,
        revoked_at=None,
    )


async def test_keys_crud_and_revoke(storage: Storage) -> None:
    keys = [_key(1), _key(2), _key(3, tenant="globex")]
    for k in keys:
        await storage.insert_key(k)
    assert await storage.get_key(keys[0].id) == keys[0]
    assert await storage.get_key_by_hash(keys[2].secret_hash) == keys[2]
    assert await storage.get_key("key_missing") is None
    assert await storage.list_keys() == keys
    assert await storage.list_keys(tenant="acme") == keys[:2]
    with pytest.raises(DuplicateKeyError):
        await storage.insert_key(replace(keys[0], id="key_other"))  # same secret hash
    with pytest.raises(DuplicateKeyError):
        await storage.insert_key(replace(keys[0], secret_hash="f" * 64))  # same id

    updated = await storage.update_key(keys[0].id, rpm=None, tpm=1000, allowed_models=[], metadata={"a": [1]})
    assert updated == replace(keys[0], rpm=None, tpm=1000, allowed_models=[], metadata={"a": [1]})
    assert await storage.update_key("key_missing", rpm=1) is None
    with pytest.raises(InvalidQueryError):
        await storage.update_key(keys[0].id, created_at=0.0)
    with pytest.raises(InvalidQueryError):
        await storage.update_key(keys[0].id, budget_period="weekly")

    assert await storage.revoke_key(keys[1].id, BASE + 50) is True
    assert await storage.revoke_key(keys[1].id, BASE + 60) is False  # already revoked: first time kept
    assert (await storage.get_key(keys[1].id)).revoked_at == BASE + 50
    assert await storage.revoke_key("key_missing", BASE) is False


async def test_bodies_round_trip_as_json_text(storage: Storage) -> None:
    (record,) = make_records(1)
    record.request_body = json.dumps(
        {"messages": [{"role": "user", "content": "héllo ✓"}]}, ensure_ascii=False
    )
    await storage.write_usage([record])
    (row,), _ = await storage.list_requests(UsageFilter(), include_bodies=True)
    assert json.loads(row["request_body"])["messages"][0]["content"] == "héllo ✓"
