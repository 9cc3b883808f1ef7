"""KeySpend on real databases: the rollup's total plus what this replica recorded since, re-read when old."""

from __future__ import annotations

from typing import Any

import pytest

from router.storage import Storage
from router.storage.spend import KeySpend
from tests.integration.router.storage.helpers import make_records


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rows_for(key: str, costs: list[float], prefix: str) -> list[Any]:
    records = make_records(len(costs), prefix=prefix)
    for r, cost in zip(records, costs, strict=True):
        r.key_id, r.cost_usd = key, cost
    return records


async def test_spend_is_the_rollup_plus_what_was_recorded_since(storage: Storage) -> None:
    await storage.write_usage(rows_for("key_s", [0.25, 0.5], "a"))
    clock = Clock()
    spend = KeySpend(storage, refresh_seconds=5, clock=clock)
    assert await spend.current("key_s") == pytest.approx(0.75)
    assert await spend.current("key_nobody") == 0.0
    spend.add("key_s", 0.1)  # answered here, not yet written
    assert await spend.current("key_s") == pytest.approx(0.85)
    await storage.write_usage(rows_for("key_s", [0.1, 2.0], "b"))  # that row, and another replica's
    assert await spend.current("key_s") == pytest.approx(0.85)  # not re-read yet
    clock.now += 5
    assert await spend.current("key_s") == pytest.approx(0.85)  # answers at once, re-reads in the background
    await spend.settled()
    assert await spend.current("key_s") == pytest.approx(2.85)  # the replica's own cost is not counted twice


async def test_a_failing_database_gives_no_value_or_the_last_one(storage: Storage) -> None:
    class Broken:
        fail = True

        async def key_activity(self, key_ids: Any = None) -> Any:
            if self.fail:
                raise OSError("database away")
            return await storage.key_activity(key_ids)

    broken = Broken()
    spend = KeySpend(broken, clock=Clock())  # type: ignore[arg-type]
    assert await spend.current("key_s") is None
    broken.fail = False
    await storage.write_usage(rows_for("key_s", [1.5], "c"))
    assert await spend.current("key_s") == pytest.approx(1.5)
