"""Storage pieces that need no database server: URLs, cursors, body caps, spill file, writer logic, report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from router.storage import (
    InvalidQueryError,
    StorageError,
    StorageUnavailableError,
    UsageFilter,
    UsageRecord,
    UsageWriter,
    open_storage,
)
from router.storage.models import decode_cursor, encode_cursor
from router.storage.postgres import PostgresStorage
from router.storage.report import format_usage
from router.storage.spill import SpillFile
from router.storage.sqlite import SqliteStorage, _path_of
from router.storage.writer import cap_body
from tests.integration.router.storage.helpers import BASE, DAY, make_records, wait_for


class MemoryStorage:
    """Idempotent in-memory write_usage, switchable down."""

    backend = "memory"

    def __init__(self) -> None:
        self.rows: dict[str, UsageRecord] = {}
        self.down = False
        self.calls = 0

    async def write_usage(self, rows: Sequence[UsageRecord]) -> int:
        self.calls += 1
        if self.down:
            raise StorageUnavailableError("down")
        new = [r for r in rows if r.request_id not in self.rows]
        self.rows.update((r.request_id, r) for r in new)
        return len(new)

    async def delete_older_than(self, ts: float, *, batch: int = 5000) -> int:
        old = [k for k, r in self.rows.items() if r.ts < ts]
        for k in old:
            del self.rows[k]
        return len(old)


def test_open_storage_picks_backend_by_url() -> None:
    assert isinstance(open_storage("postgresql://u@h/db"), PostgresStorage)
    assert isinstance(open_storage("postgres://u@h/db", schema="s1"), PostgresStorage)
    assert isinstance(open_storage("sqlite://:memory:"), SqliteStorage)
    with pytest.raises(StorageError):
        open_storage("mysql://u@h/db")
    with pytest.raises(StorageError):
        open_storage("postgresql://u@h/db", schema='x"; DROP TABLE y; --')


def test_sqlite_urls_follow_sqlalchemy_convention() -> None:
    assert _path_of("sqlite:///rel/deja.db") == "rel/deja.db"
    assert _path_of("sqlite:////abs/deja.db") == "/abs/deja.db"
    assert _path_of("sqlite://:memory:") == ":memory:"
    assert _path_of("sqlite:///:memory:") == ":memory:"


def test_cursor_round_trips_exact_float_and_rejects_garbage() -> None:
    ts = 1767225600.123456789
    assert decode_cursor(encode_cursor(ts, "req-é")) == (ts, "req-é")
    for bad in ("", "%%%", "bm90IGpzb24"):
        with pytest.raises(InvalidQueryError):
            decode_cursor(bad)


def test_filter_day_alignment_decides_rollup_use() -> None:
    assert UsageFilter().day_aligned()
    assert UsageFilter(since=BASE, until=BASE + DAY).day_aligned()
    assert not UsageFilter(since=BASE + 1).day_aligned()


def test_cap_body_keeps_small_bodies_and_stubs_big_ones_as_valid_json() -> None:
    assert cap_body(None, 10) is None
    small = '{"a": 1}'
    assert cap_body(small, 100) is small
    big = json.dumps({"content": "é" * 5000})
    capped = cap_body(big, 500)
    assert len(capped.encode()) <= 500
    stub = json.loads(capped)
    assert stub["truncated"] is True and stub["bytes"] == len(big.encode())
    assert big.startswith(stub["head"])


def test_spill_file_survives_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "spill.jsonl"
    spill = SpillFile(str(path))
    records = make_records(3)
    for r in records[:2]:
        spill.append(r)
    spill.close()
    with open(path, "ab") as fh:
        fh.write(b'{"request_id": "torn')  # a crash in the middle of a write
    reopened = SpillFile(str(path))
    reopened.open()
    assert reopened.pending == 3
    reopened.append(records[2])
    got, offset, lines = reopened.read_batch(10)
    assert [r.request_id for r in got] == [r.request_id for r in (records[0], records[1], records[2])]
    assert lines == 4 and reopened.corrupt == 1
    reopened.commit(offset, lines)
    assert reopened.pending == 0 and path.stat().st_size == 0
    reopened.close()


async def test_writer_retries_until_storage_returns() -> None:
    storage = MemoryStorage()
    storage.down = True
    errors: list[str] = []
    writer = UsageWriter(storage, batch_size=10, flush_interval=0.01, on_error=errors.append)
    await writer.start()
    try:
        for r in make_records(35):
            writer.submit(r)
        await wait_for(lambda: storage.calls >= 3)
        assert writer.depth == 35 and not writer.healthy
        storage.down = False
        await wait_for(lambda: writer.depth == 0)
    finally:
        await writer.close()
    assert len(storage.rows) == 35
    assert writer.written == 35 and writer.errors >= 3 and writer.healthy
    assert set(errors) == {"StorageUnavailableError"}


async def test_without_spill_file_overflow_is_counted_as_dropped() -> None:
    storage = MemoryStorage()
    storage.down = True
    errors: list[str] = []
    writer = UsageWriter(storage, max_queue=20, flush_interval=3600, on_error=errors.append)
    await writer.start()
    for r in make_records(25):
        writer.submit(r)
    assert writer.dropped == 5 and errors.count("dropped") == 5
    assert writer.depth == 20
    await writer.close()  # down at shutdown and nowhere to spill: the rest is dropped, and counted
    assert writer.dropped == 25


async def test_submit_never_raises() -> None:
    writer = UsageWriter(MemoryStorage(), flush_interval=3600)
    writer.submit(None)  # type: ignore[arg-type]
    assert writer.dropped == 1
    await writer.close()


async def test_submit_after_close_goes_to_the_spill_file(tmp_path: Path) -> None:
    storage = MemoryStorage()
    spill = tmp_path / "late.jsonl"
    writer = UsageWriter(storage, flush_interval=3600, spill_path=str(spill))
    await writer.start()
    await writer.close()
    (late,) = make_records(1)
    writer.submit(late)
    assert json.loads(spill.read_text())["request_id"] == late.request_id


async def test_sqlite_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    storage = open_storage(f"sqlite:///{blocker}/sub/deja.db")
    with pytest.raises(StorageUnavailableError):
        await storage.connect()


async def test_postgres_unreachable_is_unavailable() -> None:
    storage = PostgresStorage("postgresql://postgres@127.0.0.1:1/test", timeout=2.0)
    with pytest.raises(StorageUnavailableError):
        await storage.connect()
    with pytest.raises(StorageUnavailableError):
        await storage.write_usage(make_records(1))
    assert await storage.ping() is False


def test_report_formats_a_readable_table_with_totals() -> None:
    keys = ("group", "requests", "prompt_tokens", "completion_tokens", "cost_usd", "saved_usd", "cache_hits")
    rows = [
        dict(zip(keys, ("gpt-4o", 1200, 345000, 12000, 1.23456, 0.5, 300), strict=True)),
        dict(zip(keys, (None, 3, 30, 1, 0.0, 0.0, 0), strict=True)),
    ]
    rows[0].update(cache_lookups=1000, cache_hit_rate=0.3)
    rows[1].update(cache_lookups=0, cache_hit_rate=0.0)
    lines = format_usage(rows, "model").splitlines()
    assert lines[0].split("  ")[0] == "model"
    assert "cache hits" in lines[0] and "cost $" in lines[0]
    assert lines[2].split() == ["gpt-4o", "1,200", "345,000", "12,000", "1.2346", "0.5000", "30.0%"]
    assert lines[3].split()[0] == "(none)"
    assert lines[-1].split() == ["TOTAL", "1,203", "345,030", "12,001", "1.2346", "0.5000", "30.0%"]
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule are aligned
    assert format_usage([], "day") == "no usage in this period"


async def test_submit_leaves_the_callers_record_untouched() -> None:
    storage = MemoryStorage()
    writer = UsageWriter(storage, store_bodies=False, flush_interval=3600)
    (record,) = make_records(1)
    body = record.request_body
    writer.submit(record)
    await writer.close()
    assert record.request_body == body
    assert storage.rows[record.request_id].request_body is None
