"""A pool's worker slots, shared by interactive and low work.

A pool runs at most ``concurrency`` jobs at once. Low work (bulk and batch
jobs, ``scheduler.priority.is_low``) may hold at most ``concurrency -
reserved`` of them, so a saturating stream of low work leaves ``reserved``
slots for realtime and standard jobs, which may use all of them; a slot
that frees goes to a waiting interactive job before a low one. The rule
itself is ``reserved_slots``; ``Slots`` enforces it where jobs arrive
pushed by a broker (``scheduler.queues.rabbitmq``), and the in-process
queue applies it as it pulls (``scheduler.queues.memory``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque

# Seconds a freed slot is kept from low work when interactive jobs may be
# on their way (below); enough for the broker to push the next one, even to
# a busy process, and short next to a low job's wait in a saturated pool.
INTERACTIVE_GRACE = 0.05


def reserved_slots(concurrency: int, reserved: int | None) -> int:
    """Slots of a pool of ``concurrency`` kept from low work: ``reserved``
    if set, else a quarter of the pool and at least one. Never all of them,
    or low work would never run: a pool of one slot reserves none."""
    wanted = max(1, concurrency // 4) if reserved is None else reserved
    return max(0, min(wanted, concurrency - 1))


def low_share(concurrency: int, reserved: int) -> int:
    """The slots low work may hold; at least one (a prefetch of 0 would
    mean no limit at all on RabbitMQ)."""
    if not 0 <= reserved < concurrency:
        raise ValueError(f"a pool of {concurrency} slots cannot reserve {reserved}: 0 to {concurrency - 1}")
    return concurrency - reserved


class Slots:
    """``capacity`` slots, at most ``capacity - reserved`` of them held by
    low work. ``take`` waits for a slot; interactive waiters are served
    before low ones, interactive ones by priority (a realtime job pushed
    while standard ones wait passes them), each class in arrival order.
    The fast path (a free slot, nobody waiting) is a few attribute
    operations: this is on every job.

    Interactive jobs are pushed by the broker up to ``capacity`` in hand
    (taken or waiting here); while that many are in hand, more may wait in
    the broker, unseen. So a slot freed by one of them is kept from low
    work for ``INTERACTIVE_GRACE``, time for the broker to push the next
    (the ack that freed the slot went out first); had none come, low work
    gets the slot then. Without this, low work would win every slot freed
    while interactive traffic fills the pool."""

    __slots__ = ("_free", "_low_free", "_interactive", "_low", "_in_hand", "_capacity", "_closed", "_order", "_kept")

    def __init__(self, capacity: int, reserved: int = 0) -> None:
        self._capacity = capacity
        self._free = capacity
        self._low_free = low_share(capacity, reserved)
        self._interactive: list[tuple[int, int, asyncio.Future[bool]]] = []  # a heap: highest priority first
        self._low: deque[asyncio.Future[bool]] = deque()  # the low queue already gives them in priority order
        self._order = itertools.count()
        self._in_hand = 0  # interactive jobs taken or waiting
        self._kept = 0  # free slots kept from low work for INTERACTIVE_GRACE
        self._closed = False

    async def take(self, low: bool, priority: int = 0) -> bool:
        """True once the caller holds a slot (give it back with ``release``,
        and only then); False if the slots were closed first (the pool
        drains: the job must not start). ``priority`` is the job's message
        priority, which orders interactive waiters."""
        if self._closed:
            return False
        if low:
            if self._free > self._kept and self._low_free and not self._low:
                self._free -= 1
                self._low_free -= 1
                return True
        else:
            self._in_hand += 1
            if self._free and not self._interactive:
                self._free -= 1
                if self._kept:
                    self._kept -= 1
                return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if low:
            self._low.append(waiter)
        else:
            heapq.heappush(self._interactive, (-priority, next(self._order), waiter))
        try:
            granted = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release(low)  # granted just as it was cancelled: hand it on
            elif low:
                if waiter in self._low:
                    self._low.remove(waiter)
            else:
                self._in_hand -= 1
                # Rare (a pool stopping, a lost channel): a linear removal is fine.
                self._interactive = [entry for entry in self._interactive if entry[2] is not waiter]
                heapq.heapify(self._interactive)
            raise
        if not granted and not low:
            self._in_hand -= 1
        return granted

    def release(self, low: bool) -> None:
        self._free += 1
        if low:
            self._low_free += 1
        else:
            if self._in_hand == self._capacity and self._low_free and not self._interactive:
                self._kept += 1
                asyncio.get_running_loop().call_later(INTERACTIVE_GRACE, self._unkeep)
            self._in_hand -= 1
        if self._interactive or self._low:
            self._grant()

    def _unkeep(self) -> None:
        if self._kept:
            self._kept -= 1
        self._grant()

    def _grant(self) -> None:
        while self._free and not self._closed:
            if self._interactive:
                _, _, waiter = heapq.heappop(self._interactive)
                if waiter.cancelled():  # its task is being cancelled and no longer waits
                    continue
                self._free -= 1
            elif self._low and self._low_free and self._free > self._kept:
                waiter = self._low.popleft()
                if waiter.cancelled():
                    continue
                self._free -= 1
                self._low_free -= 1
            else:
                return
            waiter.set_result(True)

    def close(self) -> None:
        """Take no more: every waiter, and every later ``take``, gets False."""
        self._closed = True
        for waiter in (*(waiter for _, _, waiter in self._interactive), *self._low):
            if not waiter.cancelled():
                waiter.set_result(False)
        self._interactive.clear()
        self._low.clear()
