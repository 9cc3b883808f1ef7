"""UsageWriter against real databases: bursts, draining, outages, spill and replay lose no row."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from router.storage import Storage, UsageFilter, UsageWriter, open_storage
from tests.integration.router.storage.helpers import (
    FlakyStorage,
    TcpProxy,
    make_records,
    raw_count,
    rollup_count,
    wait_for,
)


async def test_burst_of_1000_submits_gives_exactly_1000_rows(storage: Storage) -> None:
    written: list[int] = []
    writer = UsageWriter(storage, batch_size=100, flush_interval=0.05, on_written=written.append)
    await writer.start()
    try:
        for record in make_records(1000):
            writer.submit(record)
        await wait_for(lambda: writer.written == 1000 and writer.depth == 0)
    finally:
        await writer.close()
    assert sum(written) == 1000
    assert await raw_count(storage) == 1000
    assert await rollup_count(storage) == 1000


async def test_close_drains_the_queue(storage: Storage) -> None:
    # Neither the size nor the timer trigger fires: only close() can write these rows.
    writer = UsageWriter(storage, batch_size=10_000, flush_interval=3600)
    await writer.start()
    for record in make_records(750):
        writer.submit(record)
    assert writer.depth == 750
    await writer.close()
    assert writer.depth == 0
    assert await raw_count(storage) == 750


async def test_outage_spills_past_memory_bound_then_replays_everything(
    storage: Storage, tmp_path: Path
) -> None:
    flaky = FlakyStorage(storage)
    spill = tmp_path / "spill" / "usage.jsonl"
    errors: list[str] = []
    writer = UsageWriter(
        flaky,
        max_queue=100,
        batch_size=40,
        flush_interval=0.02,
        spill_path=str(spill),
        on_error=errors.append,
    )
    await writer.start()
    records = make_records(500)
    try:
        flaky.down = True
        for record in records:
            writer.submit(record)
        await wait_for(lambda: flaky.failed_writes >= 2)
        assert writer.spilled >= 400
        assert spill.stat().st_size > 0
        assert writer.depth == 500
        assert await raw_count(storage) == 0
        assert "StorageUnavailableError" in errors
        flaky.down = False
        await wait_for(lambda: writer.depth == 0)
    finally:
        await writer.close()
    assert await raw_count(storage) == 500
    assert await rollup_count(storage) == 500
    assert spill.stat().st_size == 0  # replayed and truncated


async def test_spill_left_at_shutdown_is_replayed_once_on_next_start(
    storage: Storage, tmp_path: Path
) -> None:
    spill = str(tmp_path / "usage.jsonl")
    records = make_records(300)
    await storage.write_usage(records[:100])  # some of the spilled rows already made it (a retried batch)
    flaky = FlakyStorage(storage)
    flaky.down = True
    first = UsageWriter(flaky, max_queue=1000, batch_size=50, flush_interval=3600, spill_path=spill)
    await first.start()
    for record in records[50:]:
        first.submit(record)
    await first.close()  # database down: everything goes to the spill file
    assert first.spilled == 250
    assert await raw_count(storage) == 100

    second = UsageWriter(storage, batch_size=64, flush_interval=0.02, spill_path=spill)
    await second.start()
    assert second.depth == 250
    try:
        await wait_for(lambda: second.depth == 0)
    finally:
        await second.close()
    assert second.written == 200
    assert second.duplicates == 50
    assert await raw_count(storage) == 300
    assert await rollup_count(storage) == 300  # the 50 replayed duplicates were not counted again


async def test_writer_retention_deletes_old_rows(storage: Storage) -> None:
    old = make_records(30, start=time.time() - 40 * 86_400, span=3600, prefix="old")
    new = make_records(5, start=time.time() - 3600, span=60, prefix="new")
    await storage.write_usage(old + new)
    writer = UsageWriter(storage, retention_days=30, flush_interval=0.05)
    await writer.start()
    try:
        await wait_for(_count_is(storage, 5))
    finally:
        await writer.close()


def _count_is(storage: Storage, n: int):
    async def check() -> bool:
        return await raw_count(storage) == n

    return check


async def test_postgres_cut_and_restored_loses_no_row(
    database_url: str, pg_schema: str, tmp_path: Path
) -> None:
    upstream = urlparse(database_url)
    proxy = TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 5432)
    await proxy.start()
    proxied_url = database_url.replace(
        upstream.netloc, f"{upstream.username or 'postgres'}@127.0.0.1:{proxy.port}"
    )
    storage = open_storage(proxied_url, schema=pg_schema)
    direct = open_storage(database_url, schema=pg_schema)
    await storage.connect()
    await storage.migrate()
    await direct.connect()
    writer = UsageWriter(
        storage, max_queue=150, batch_size=50, flush_interval=0.02, spill_path=str(tmp_path / "s")
    )
    await writer.start()
    records = make_records(600)
    try:
        for record in records[:100]:
            writer.submit(record)
        await wait_for(lambda: writer.written == 100)

        proxy.cut()
        for record in records[100:]:
            writer.submit(record)  # must not raise nor block while the database is gone
        await wait_for(lambda: writer.errors >= 2)
        assert not await storage.ping()
        assert writer.spilled > 0
        assert writer.depth == 500

        proxy.restore()
        await wait_for(lambda: writer.depth == 0, timeout=30)
    finally:
        await writer.close()
        await storage.close()
        await proxy.close()
    try:
        assert await raw_count(direct) == 600
        assert await rollup_count(direct) == 600
        rows, _ = await direct.list_requests(UsageFilter(), limit=1000)
        assert sorted(r["request_id"] for r in rows) == sorted(r.request_id for r in records)
    finally:
        await direct.close()


@pytest.mark.parametrize("store_bodies", [True, False])
async def test_bodies_capped_or_not_stored(storage: Storage, store_bodies: bool) -> None:
    (record,) = make_records(1)
    record.request_body = json.dumps({"messages": [{"role": "user", "content": "x" * 50_000}]})
    writer = UsageWriter(storage, max_body_bytes=1024, store_bodies=store_bodies, flush_interval=3600)
    await writer.start()
    writer.submit(record)
    await writer.close()
    (row,), _ = await storage.list_requests(UsageFilter(), include_bodies=True)
    if not store_bodies:
        assert row["request_body"] is None and row["response_body"] is None
        return
    assert len(row["request_body"].encode()) <= 1024
    stub = json.loads(row["request_body"])
    assert stub["truncated"] is True and stub["bytes"] == len(record.request_body)
    assert row["response_body"] == record.response_body


async def test_invalid_rows_are_isolated_and_rejected_not_blocking(storage: Storage) -> None:
    records = make_records(200)
    records[17].model = None  # type: ignore[assignment]  # NOT NULL violation
    records[150].cost_usd = "twelve"  # type: ignore[assignment]  # not a number
    errors: list[str] = []
    writer = UsageWriter(storage, batch_size=64, flush_interval=0.02, on_error=errors.append)
    await writer.start()
    try:
        for record in records:
            writer.submit(record)
        await wait_for(lambda: writer.depth == 0)
    finally:
        await writer.close()
    assert writer.rejected == 2 and errors.count("rejected") == 2
    assert writer.written == 198
    rows, _ = await storage.list_requests(UsageFilter(), limit=1000)
    valid = {r.request_id for i, r in enumerate(records) if i not in (17, 150)}
    assert {r["request_id"] for r in rows} == valid


async def test_text_no_database_can_store_is_escaped_never_dropped(storage: Storage) -> None:
    """PostgreSQL refuses NUL in TEXT, no backend can encode a lone surrogate: the row is kept, its text
    escaped (NUL as the six characters \\u0000) or replaced (U+FFFD), in every text column and body."""
    record, other = make_records(2, prefix="dirty")
    record.end_user, record.model, record.error_type = "x\x00y", "m\ud800", "e\udfff\x00"
    record.request_body, record.response_body = '{"a": "\x00"}', "answer \ud83d"
    writer = UsageWriter(storage, batch_size=10, flush_interval=0.02)
    await writer.start()
    try:
        writer.submit(record)
        writer.submit(other)
        await wait_for(lambda: writer.written == 2 and writer.depth == 0)
    finally:
        await writer.close()
    assert writer.rejected == 0 and writer.dropped == 0
    rows, _ = await storage.list_requests(UsageFilter(), limit=10, include_bodies=True)
    stored = {r["request_id"]: r for r in rows}[record.request_id]
    assert (stored["end_user"], stored["model"], stored["error_type"]) == ("x\\u0000y", "m\ufffd", "e\ufffd\\u0000")
    assert stored["request_body"] == '{"a": "\\u0000"}' and stored["response_body"] == "answer \ufffd"
    assert record.end_user == "x\x00y"  # the caller's record is left as it was
