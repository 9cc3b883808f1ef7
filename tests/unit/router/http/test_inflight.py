"""The in-flight body budget: large bodies wait their turn (first come, first served), small ones never do."""

from __future__ import annotations

import asyncio

import pytest

from router.http import inflight
from router.http.inflight import BodyBudget, limit_malloc_arenas, trim_heap

KB = 1024


def test_cost_small_unknown_and_huge_bodies() -> None:
    budget = BodyBudget(1000 * KB, small_bytes=64 * KB)
    assert budget.cost(10 * KB, max_body=10_000 * KB) == 0  # small: never waits
    assert budget.cost(200 * KB, max_body=10_000 * KB) == 200 * KB
    assert budget.cost(None, max_body=300 * KB) == 300 * KB  # unknown length: the largest allowed
    assert budget.cost(5000 * KB, max_body=10_000 * KB) == 1000 * KB  # over the budget: runs alone
    assert BodyBudget(0).cost(5000 * KB, max_body=10_000 * KB) == 0  # 0: off


async def test_large_bodies_wait_in_order_and_idle_trims() -> None:
    idle: list[int] = []
    budget = BodyBudget(1000, small_bytes=0, on_idle=lambda: idle.append(budget.used))
    await budget.acquire(600)
    order: list[str] = []

    async def take(name: str, n: int) -> None:
        await budget.acquire(n)
        order.append(name)

    second = asyncio.create_task(take("second", 600))
    third = asyncio.create_task(take("third", 100))  # would fit, but waits behind the second (FIFO)
    await asyncio.sleep(0)
    assert order == [] and len(budget._waiters) == 2 and budget.waited == 2
    budget.release(600)
    await asyncio.gather(second, third)
    assert order == ["second", "third"] and budget.used == 700
    budget.release(600)
    budget.release(100)
    assert budget.used == 0 and idle == [0]


async def test_a_waiter_that_times_out_leaves_the_queue() -> None:
    budget = BodyBudget(1000, small_bytes=0, wait_seconds=0.01)
    await budget.acquire(1000)
    with pytest.raises(TimeoutError):
        await budget.acquire(10)
    assert not budget._waiters and budget.used == 1000
    budget.release(1000)
    await budget.acquire(1000)  # nothing was left holding bytes
    assert budget.used == 1000


async def test_a_cancelled_waiter_lets_the_next_one_in() -> None:
    budget = BodyBudget(1000, small_bytes=0)
    await budget.acquire(900)
    big = asyncio.create_task(budget.acquire(500))
    await asyncio.sleep(0)
    small = asyncio.create_task(budget.acquire(100))
    await asyncio.sleep(0)
    big.cancel()
    await small
    assert budget.used == 1000 and not budget._waiters


def test_glibc_heap_controls_apply() -> None:
    if inflight._libc() is None:
        pytest.skip("not glibc: nothing to cap or trim")
    assert limit_malloc_arenas(8) is True
    trim_heap()


def test_freezing_start_up_takes_its_objects_out_of_full_collections() -> None:
    import gc

    from router.http.inflight import freeze_startup_objects

    class Node:
        def __init__(self) -> None:
            self.peer: Node | None = None

    gc.unfreeze()
    survivor = Node()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        assert not any(o is survivor for o in gc.get_objects(generation=2))  # full collections skip it
        late = Node()
        gc.collect()
        assert any(o is late for o in gc.get_objects(generation=2))  # what comes after start-up still is
    finally:
        gc.unfreeze()
