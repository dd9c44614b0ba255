"""The slot rule of a pool (``scheduler.queues.slots``): how many slots
are reserved, and ``Slots``, which enforces it where a broker pushes jobs."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.queues import slots as slots_module
from scheduler.queues.slots import INTERACTIVE_GRACE, Slots, low_share, reserved_slots


@pytest.mark.parametrize(("concurrency", "setting", "reserved"), [
    (1, None, 0), (2, None, 1), (4, None, 1), (7, None, 1), (8, None, 2), (16, None, 4),
    (4, 0, 0), (4, 2, 2), (4, 3, 3), (4, 10, 3), (1, 5, 0),
])
def test_reserved_slots(concurrency: int, setting: int | None, reserved: int) -> None:
    assert reserved_slots(concurrency, setting) == reserved


def test_low_work_keeps_at_least_one_slot() -> None:
    assert low_share(4, 3) == 1
    for reserved in (4, 5, -1):
        with pytest.raises(ValueError, match="cannot reserve"):
            low_share(4, reserved)


async def taken(slots: Slots, low: bool) -> bool:
    """Whether a take succeeds without waiting."""
    try:
        return await asyncio.wait_for(slots.take(low), 0.01)
    except TimeoutError:
        return False


async def test_low_work_holds_at_most_its_share_and_interactive_the_rest() -> None:
    slots = Slots(4, reserved=1)
    assert [await taken(slots, low=True) for _ in range(4)] == [True, True, True, False]
    assert await taken(slots, low=False)
    assert not await taken(slots, low=False), "the pool is full"


async def test_interactive_work_alone_uses_every_slot() -> None:
    slots = Slots(4, reserved=1)
    assert [await taken(slots, low=False) for _ in range(5)] == [True, True, True, True, False]


async def test_a_freed_slot_goes_to_a_waiting_interactive_job_first() -> None:
    slots = Slots(4, reserved=1)
    for low in (True, True, False, False):
        assert await slots.take(low)
    low_waiter = asyncio.create_task(slots.take(low=True))
    await asyncio.sleep(0)
    interactive_waiter = asyncio.create_task(slots.take(low=False))
    await asyncio.sleep(0)
    slots.release(low=True)
    await asyncio.sleep(0)
    assert interactive_waiter.done() and interactive_waiter.result()
    assert not low_waiter.done()
    slots.release(low=False)
    assert await asyncio.wait_for(low_waiter, 1)


async def test_a_slot_freed_while_interactive_jobs_fill_the_prefetch_waits_for_the_next_one() -> None:
    slots = Slots(2, reserved=1)
    for _ in range(2):
        assert await slots.take(low=False)
    low_waiter = asyncio.create_task(slots.take(low=True))
    await asyncio.sleep(0)
    slots.release(low=False)  # as many interactive jobs were in hand as the broker pushes: more may come
    await asyncio.sleep(0)
    assert not low_waiter.done(), "kept for the interactive job on its way"
    assert await taken(slots, low=False), "which takes it when it comes"
    await asyncio.sleep(INTERACTIVE_GRACE * 2)
    assert not low_waiter.done(), "the pool is full again"
    slots.release(low=False)
    await asyncio.sleep(INTERACTIVE_GRACE * 2)
    assert low_waiter.done() and low_waiter.result(), "no interactive job came in time: low work gets the slot"


async def test_low_work_gets_the_slot_after_the_grace_if_no_interactive_job_comes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots_module, "INTERACTIVE_GRACE", 0.02)
    slots = Slots(1, reserved=0)
    assert await slots.take(low=False)
    low_waiter = asyncio.create_task(slots.take(low=True))
    await asyncio.sleep(0)
    slots.release(low=False)
    assert await asyncio.wait_for(low_waiter, 1)


async def test_closing_starts_no_waiting_job_and_takes_no_more() -> None:
    slots = Slots(2, reserved=1)
    for low in (True, False):
        assert await slots.take(low)
    waiters = [asyncio.create_task(slots.take(low)) for low in (True, False)]
    await asyncio.sleep(0)
    slots.close()
    assert await asyncio.gather(*waiters) == [False, False]
    slots.release(low=True)
    assert not await slots.take(low=False)


async def test_a_cancelled_waiter_leaves_its_turn_to_the_next() -> None:
    slots = Slots(1, reserved=0)
    assert await slots.take(low=False)
    first, second = (asyncio.create_task(slots.take(low=False)) for _ in range(2))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    slots.release(low=False)
    assert await asyncio.wait_for(second, 1)
    assert first.cancelled()
    assert not await taken(slots, low=False), "the one slot is held by the second waiter"


async def test_interactive_waiters_are_served_by_priority_then_in_order() -> None:
    slots = Slots(1, reserved=0)
    assert await slots.take(low=False, priority=2)
    waiters = {name: asyncio.create_task(slots.take(low=False, priority=priority))
               for name, priority in (("standard", 2), ("realtime", 4), ("standard-2", 2))}
    await asyncio.sleep(0)
    served = []
    for _ in range(3):
        slots.release(low=False)
        await asyncio.sleep(0)
        served += [name for name, task in waiters.items() if task.done() and name not in served]
    assert served == ["realtime", "standard", "standard-2"]


async def test_a_low_job_arriving_during_the_grace_waits_for_it() -> None:
    slots = Slots(1, reserved=0)
    assert await slots.take(low=False)
    slots.release(low=False)  # the only interactive job in hand ended: the next may be on its way
    assert not await taken(slots, low=True), "kept for the interactive job"
    late = asyncio.create_task(slots.take(low=True))
    await asyncio.sleep(INTERACTIVE_GRACE * 2)
    assert late.done() and late.result(), "none came: low work gets the slot"
