"""A pool's worker slots, shared by its three kinds of work.

A pool runs at most ``concurrency`` jobs at once, and keeps the last of
them from the lower kinds of work (``Reserve``): low work (bulk and batch
jobs) holds at most ``concurrency - reserve.interactive`` slots, standard
and low work together at most ``concurrency - reserve.realtime``, and
realtime jobs may use every slot. So a saturating stream of low work
leaves slots to realtime and standard jobs, and a saturating stream of
standard work leaves some to realtime ones. A slot that frees goes to a
waiting realtime job, then a standard one, then a low one. ``Slots``
enforces it where jobs arrive pushed by a broker
(``scheduler.queues.rabbitmq``), and the in-process queue applies it as it
pulls (``scheduler.queues.memory``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass

from scheduler.priority import Work

# Seconds a freed slot is kept from low work when interactive jobs may be
# on their way (below); enough for the broker to push the next one, even to
# a busy process, and short next to a low job's wait in a saturated pool.
INTERACTIVE_GRACE = 0.05


@dataclass(frozen=True, slots=True)
class Reserve:
    """The slots of a pool kept from lower kinds of work: ``interactive``
    from low work, and ``realtime`` of those from standard work too."""

    interactive: int = 0
    realtime: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.realtime <= self.interactive:
            raise ValueError(f"the realtime reserve ({self.realtime}) is part of the interactive one "
                             f"({self.interactive}): 0 to {self.interactive}")

    @classmethod
    def of_pool(cls, concurrency: int, interactive: int | None = None, realtime: int | None = None) -> Reserve:
        """The reserve of a pool of ``concurrency`` slots from the settings
        (``GATEWAYZ_RESERVED_SLOTS``, ``GATEWAYZ_REALTIME_SLOTS``), None where
        unset. Kept from low work: ``interactive`` if set, else a quarter of
        the pool and at least one, and at least the realtime reserve; of
        those, kept for realtime work alone: ``realtime``, none if unset (a
        pool without realtime traffic would lose them). Never all of the
        pool, or low work would never run: a pool of one slot reserves none."""
        wanted_realtime = realtime or 0
        wanted = max(1, concurrency // 4) if interactive is None else interactive
        kept = max(0, min(max(wanted, wanted_realtime), concurrency - 1))
        return cls(kept, min(wanted_realtime, kept))

    def share(self, concurrency: int, work: Work) -> int:
        """The most slots ``work`` and the kinds below it may hold at once in
        a pool of ``concurrency``; at least one (a prefetch of 0 would mean no
        limit at all on RabbitMQ)."""
        kept = (0, self.realtime, self.interactive)[work]
        if kept >= concurrency:
            raise ValueError(f"a pool of {concurrency} slots cannot reserve {kept}: 0 to {concurrency - 1}")
        return concurrency - kept


NO_RESERVE = Reserve()


class Slots:
    """``capacity`` slots shared as ``reserve`` says. ``take`` waits for a
    slot; waiters are served realtime first, then standard, then low, each
    kind by message priority (bulk before batch), then in arrival order.
    The fast path (a free slot, nobody of its kind waiting) is a few list
    operations: this is on every job.

    A slot freed by a realtime or standard job while low work waits for
    one is kept from it for ``INTERACTIVE_GRACE``: interactive work comes in
    runs (a client's next call follows its last; the broker pushes the next
    job once the ack that freed the slot is out), and a low job would hold
    the slot far longer than the grace. Had no interactive job come, low
    work gets the slot then. Without this, low work would win every slot
    freed while interactive traffic keeps the pool busy. (Low work that
    does not wait here has no backlog: the broker pushes low jobs until as
    many are in hand as low work may hold.)

    Likewise a slot freed by a realtime job while as many realtime jobs are
    in hand (taken or waiting here) as the broker pushes is kept from
    standard and low work for the grace: more realtime jobs may wait in the
    broker, unseen, and the next is pushed once the ack that freed the slot
    is out; a standard job already here would otherwise take it first."""

    __slots__ = ("_free", "_room", "_waiting", "_closed", "_order", "_kept", "_kept_for_realtime",
                 "_realtime_in_hand", "_capacity")

    def __init__(self, capacity: int, reserve: Reserve = NO_RESERVE) -> None:
        self._capacity = capacity  # the realtime jobs the broker pushes at most
        self._free = capacity
        # Slots each kind of work, with the kinds below it, may still take (realtime's is unused: ``_free``).
        self._room = [reserve.share(capacity, work) for work in Work]
        # Per kind, a heap of waiters: highest message priority first, then first come.
        self._waiting: list[list[tuple[int, int, asyncio.Future[bool]]]] = [[] for _ in Work]
        self._order = itertools.count()
        self._kept = 0  # free slots kept from low work for INTERACTIVE_GRACE
        self._kept_for_realtime = 0  # … and from standard work too
        self._realtime_in_hand = 0  # realtime jobs taken or waiting
        self._closed = False

    def _can_take(self, work: Work) -> bool:
        room, free = self._room, self._free
        if work is Work.LOW:
            return bool(room[Work.LOW] and room[Work.STANDARD]) and free > self._kept + self._kept_for_realtime
        if work is Work.STANDARD:
            return bool(room[Work.STANDARD]) and free > self._kept_for_realtime
        return bool(free)

    def _hold(self, work: Work) -> None:
        self._free -= 1
        for kind in range(work, 0, -1):  # the rooms it counts in: its kind's and those above (realtime's is _free)
            self._room[kind] -= 1
        if work is Work.REALTIME and self._kept_for_realtime:
            self._kept_for_realtime -= 1
        elif work is not Work.LOW and self._kept:
            self._kept -= 1

    async def take(self, work: Work, priority: int = 0) -> bool:
        """True once the caller holds a slot (give it back with ``release``,
        and only then); False if the slots were closed first (the pool
        drains: the job must not start). ``priority`` is the job's message
        priority, which orders the waiters of its kind."""
        if self._closed:
            return False
        if work is Work.REALTIME:
            self._realtime_in_hand += 1
        waiting = self._waiting[work]
        if not waiting and self._can_take(work):
            self._hold(work)
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        heapq.heappush(waiting, (-priority, next(self._order), waiter))
        try:
            granted = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release(work)  # granted just as it was cancelled: hand it on
            else:
                if work is Work.REALTIME:
                    self._realtime_in_hand -= 1
                # Rare (a pool stopping, a lost channel): a linear removal is fine.
                self._waiting[work] = [entry for entry in waiting if entry[2] is not waiter]
                heapq.heapify(self._waiting[work])
            raise
        if not granted and work is Work.REALTIME:
            self._realtime_in_hand -= 1
        return granted

    def release(self, work: Work) -> None:
        self._free += 1
        for kind in range(work, 0, -1):
            self._room[kind] += 1
        waiting = self._waiting
        kept = False
        if work is Work.REALTIME:
            if self._realtime_in_hand == self._capacity and not waiting[Work.REALTIME]:
                # The broker may hold more realtime jobs: the next is on its way.
                self._kept_for_realtime += 1
                asyncio.get_running_loop().call_later(INTERACTIVE_GRACE, self._unkeep_for_realtime)
                kept = True
            self._realtime_in_hand -= 1
        if not any(waiting):
            return
        if (not kept and work is not Work.LOW and waiting[Work.LOW] and not waiting[Work.REALTIME]
                and not waiting[Work.STANDARD]):
            self._kept += 1
            asyncio.get_running_loop().call_later(INTERACTIVE_GRACE, self._unkeep)
        self._grant()

    def _unkeep(self) -> None:
        if self._kept:
            self._kept -= 1
        self._grant()

    def _unkeep_for_realtime(self) -> None:
        if self._kept_for_realtime:
            self._kept_for_realtime -= 1
        self._grant()

    def _grant(self) -> None:
        while self._free and not self._closed:
            for work in Work:
                waiting = self._waiting[work]
                if waiting and self._can_take(work):
                    break
            else:
                return
            _, _, waiter = heapq.heappop(waiting)
            if waiter.cancelled():  # its task is being cancelled and no longer waits
                continue
            self._hold(work)
            waiter.set_result(True)

    def close(self) -> None:
        """Take no more: every waiter, and every later ``take``, gets False."""
        self._closed = True
        for waiting in self._waiting:
            for _, _, waiter in waiting:
                if not waiter.cancelled():
                    waiter.set_result(False)
            waiting.clear()
