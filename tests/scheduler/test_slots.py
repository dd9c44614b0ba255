"""The slot rule of a pool (``scheduler.queues.slots``): how many slots
are reserved, and ``Slots``, which enforces it where a broker pushes jobs."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.priority import Work, work_of
from scheduler.queues import slots as slots_module
from scheduler.queues.slots import INTERACTIVE_GRACE, Reserve, Slots

REALTIME, STANDARD, LOW = Work


@pytest.mark.parametrize(("concurrency", "interactive", "realtime", "reserve"), [
    (1, None, None, Reserve(0, 0)), (2, None, None, Reserve(1, 0)), (4, None, None, Reserve(1, 0)),
    (7, None, None, Reserve(1, 0)), (8, None, None, Reserve(2, 0)), (16, None, None, Reserve(4, 0)),
    (4, 0, None, Reserve(0, 0)), (4, 2, None, Reserve(2, 0)), (4, 3, None, Reserve(3, 0)),
    (4, 10, None, Reserve(3, 0)), (1, 5, None, Reserve(0, 0)), (1, 5, 5, Reserve(0, 0)),
    (4, None, 2, Reserve(2, 2)), (4, 3, 2, Reserve(3, 2)), (4, 1, 0, Reserve(1, 0)), (4, None, 9, Reserve(3, 3)),
    (16, 0, 3, Reserve(3, 3)), (16, None, 2, Reserve(4, 2)),
])
def test_a_pools_reserve(concurrency: int, interactive: int | None, realtime: int | None, reserve: Reserve) -> None:
    assert Reserve.of_pool(concurrency, interactive, realtime) == reserve


def test_each_kind_of_work_keeps_at_least_one_slot() -> None:
    assert [Reserve(3, 3).share(4, work) for work in Work] == [4, 1, 1]
    assert [Reserve(3, 1).share(4, work) for work in Work] == [4, 3, 1]
    for reserve in (Reserve(4, 0), Reserve(5, 1)):
        with pytest.raises(ValueError, match="cannot reserve"):
            reserve.share(4, LOW)
    with pytest.raises(ValueError, match="part of the interactive one"):
        Reserve(1, 2)


def test_the_kind_of_work_of_each_message_priority() -> None:
    assert [work_of(priority) for priority in range(5)] == [LOW, LOW, STANDARD, REALTIME, REALTIME]


async def taken(slots: Slots, work: Work) -> bool:
    """Whether a take succeeds without waiting."""
    try:
        return await asyncio.wait_for(slots.take(work), 0.01)
    except TimeoutError:
        return False


async def test_low_work_holds_at_most_its_share_and_interactive_the_rest() -> None:
    slots = Slots(4, Reserve(1))
    assert [await taken(slots, LOW) for _ in range(4)] == [True, True, True, False]
    assert await taken(slots, STANDARD)
    assert not await taken(slots, STANDARD), "the pool is full"


async def test_interactive_work_alone_uses_every_slot() -> None:
    slots = Slots(4, Reserve(1))
    assert [await taken(slots, STANDARD) for _ in range(5)] == [True, True, True, True, False]


async def test_a_freed_slot_goes_to_a_waiting_interactive_job_first() -> None:
    slots = Slots(4, Reserve(1))
    for work in (LOW, LOW, STANDARD, STANDARD):
        assert await slots.take(work)
    low_waiter = asyncio.create_task(slots.take(LOW))
    await asyncio.sleep(0)
    interactive_waiter = asyncio.create_task(slots.take(STANDARD))
    await asyncio.sleep(0)
    slots.release(LOW)
    await asyncio.sleep(0)
    assert interactive_waiter.done() and interactive_waiter.result()
    assert not low_waiter.done()
    slots.release(STANDARD)
    assert await asyncio.wait_for(low_waiter, 1)


async def test_a_slot_freed_by_an_interactive_job_waits_for_the_next_one() -> None:
    slots = Slots(2, Reserve(1))
    for _ in range(2):
        assert await slots.take(STANDARD)
    low_waiter = asyncio.create_task(slots.take(LOW))
    await asyncio.sleep(0)
    slots.release(STANDARD)  # interactive work comes in runs: the next may be on its way
    await asyncio.sleep(0)
    assert not low_waiter.done(), "kept for the interactive job on its way"
    assert await taken(slots, STANDARD), "which takes it when it comes"
    await asyncio.sleep(INTERACTIVE_GRACE * 2)
    assert not low_waiter.done(), "the pool is full again"
    slots.release(STANDARD)
    await asyncio.sleep(INTERACTIVE_GRACE * 2)
    assert low_waiter.done() and low_waiter.result(), "no interactive job came in time: low work gets the slot"


async def test_low_work_gets_the_slot_after_the_grace_if_no_interactive_job_comes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots_module, "INTERACTIVE_GRACE", 0.02)
    slots = Slots(1, Reserve(0))
    assert await slots.take(STANDARD)
    low_waiter = asyncio.create_task(slots.take(LOW))
    await asyncio.sleep(0)
    slots.release(STANDARD)
    assert await asyncio.wait_for(low_waiter, 1)


async def test_closing_starts_no_waiting_job_and_takes_no_more() -> None:
    slots = Slots(2, Reserve(1))
    for work in (LOW, STANDARD):
        assert await slots.take(work)
    waiters = [asyncio.create_task(slots.take(work)) for work in (LOW, STANDARD)]
    await asyncio.sleep(0)
    slots.close()
    assert await asyncio.gather(*waiters) == [False, False]
    slots.release(LOW)
    assert not await slots.take(STANDARD)


async def test_a_cancelled_waiter_leaves_its_turn_to_the_next() -> None:
    slots = Slots(1, Reserve(0))
    assert await slots.take(STANDARD)
    first, second = (asyncio.create_task(slots.take(STANDARD)) for _ in range(2))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    slots.release(STANDARD)
    assert await asyncio.wait_for(second, 1)
    assert first.cancelled()
    assert not await taken(slots, STANDARD), "the one slot is held by the second waiter"


async def test_interactive_waiters_are_served_by_priority_then_in_order() -> None:
    slots = Slots(1, Reserve(0))
    assert await slots.take(STANDARD, 2)
    waiters = {name: asyncio.create_task(slots.take(STANDARD, priority))
               for name, priority in (("standard", 2), ("realtime", 4), ("standard-2", 2))}
    await asyncio.sleep(0)
    served = []
    for _ in range(3):
        slots.release(STANDARD)
        await asyncio.sleep(0)
        served += [name for name, task in waiters.items() if task.done() and name not in served]
    assert served == ["realtime", "standard", "standard-2"]


async def test_a_slot_is_kept_only_from_low_work_waiting_for_one() -> None:
    slots = Slots(1, Reserve(0))
    assert await slots.take(STANDARD)
    slots.release(STANDARD)  # no low job waits: were one pushed now, nothing held it back
    assert await taken(slots, LOW)


async def test_standard_and_low_work_leave_the_realtime_reserve() -> None:
    slots = Slots(4, Reserve(2, 1))
    assert [await taken(slots, LOW) for _ in range(3)] == [True, True, False], "low work holds 2"
    assert [await taken(slots, STANDARD) for _ in range(2)] == [True, False], "standard work the 3rd"
    assert await taken(slots, REALTIME), "the 4th is realtime's"
    assert not await taken(slots, REALTIME), "the pool is full"


async def test_standard_work_alone_leaves_the_realtime_reserve_and_realtime_alone_uses_every_slot() -> None:
    slots = Slots(4, Reserve(2, 2))
    assert [await taken(slots, STANDARD) for _ in range(3)] == [True, True, False]
    assert [await taken(slots, REALTIME) for _ in range(3)] == [True, True, False]
    slots = Slots(4, Reserve(2, 2))
    assert [await taken(slots, REALTIME) for _ in range(5)] == [True, True, True, True, False]


async def test_a_freed_slot_goes_to_realtime_then_standard_then_low_within_their_shares() -> None:
    slots = Slots(3, Reserve(2, 1))  # low work may hold 1 slot, standard and low work 2
    assert await slots.take(LOW) and await slots.take(STANDARD) and await slots.take(REALTIME)
    waiters = {work: asyncio.create_task(slots.take(work)) for work in (LOW, STANDARD, REALTIME)}
    await asyncio.sleep(0)
    slots.release(LOW)
    await asyncio.sleep(0)
    assert [work for work, task in waiters.items() if task.done()] == [REALTIME]
    slots.release(REALTIME)
    await asyncio.sleep(0)
    assert [work for work, task in waiters.items() if task.done()] == [STANDARD, REALTIME]
    slots.release(REALTIME)  # standard work holds its share: the slot stays realtime's
    await asyncio.sleep(0)
    assert not waiters[LOW].done()
    assert await taken(slots, REALTIME) and not await taken(slots, STANDARD)
    slots.release(REALTIME)
    slots.release(STANDARD)
    assert await asyncio.wait_for(waiters[LOW], 1)


async def test_a_slot_freed_by_a_realtime_job_is_kept_from_low_work_too() -> None:
    slots = Slots(2, Reserve(1))
    assert await slots.take(REALTIME) and await slots.take(REALTIME)
    low_waiter = asyncio.create_task(slots.take(LOW))
    await asyncio.sleep(0)
    slots.release(REALTIME)
    await asyncio.sleep(0)
    assert not low_waiter.done(), "kept for the interactive job that may follow"
    await asyncio.sleep(INTERACTIVE_GRACE * 2)
    assert low_waiter.done() and low_waiter.result(), "none came: low work gets the slot"


async def test_a_slot_freed_while_the_broker_pushed_all_the_realtime_jobs_it_may_waits_for_the_next() -> None:
    slots = Slots(1)
    assert await slots.take(REALTIME)  # as many realtime jobs in hand as the broker pushes: more may wait there
    standard_waiter = asyncio.create_task(slots.take(STANDARD))
    await asyncio.sleep(0)
    slots.release(REALTIME)
    await asyncio.sleep(0)
    assert not standard_waiter.done(), "kept for the realtime job on its way"
    assert await taken(slots, REALTIME), "which takes it when it comes"
    slots.release(REALTIME)
    await asyncio.sleep(INTERACTIVE_GRACE * 2)
    assert standard_waiter.done() and standard_waiter.result(), "none came: the standard job gets the slot"


async def test_a_slot_freed_by_a_realtime_job_goes_to_a_standard_one_while_the_broker_may_push_more() -> None:
    slots = Slots(2)
    assert await slots.take(REALTIME) and await slots.take(STANDARD)
    standard_waiter = asyncio.create_task(slots.take(STANDARD))
    await asyncio.sleep(0)
    slots.release(REALTIME)  # 1 realtime job in hand of the 2 the broker pushes: none waits there
    await asyncio.sleep(0)
    assert standard_waiter.done() and standard_waiter.result()
