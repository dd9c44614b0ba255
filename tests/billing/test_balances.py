"""The balances mirror, in memory and in Redis, on both databases: holds
taken against it never overspend an account or a key's limits, and it
follows the ledger exactly (settlements, releases, credits), including
changes that commit while it loads and changes sent twice; in Redis, with
the hold journal, a mirror that is lost is rebuilt with its open holds."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

import pytest
import redis.asyncio as redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.adjustments import adjust_credits
from billing.balances import AccountChange, AccountSnapshot, Balance, Balances, KeySnapshot, Reservation, Settled
from billing.balances.memory import MemoryBalances
from billing.balances.redis import RedisBalances
from billing.journal import HoldJournal, JournaledBalances
from billing.keys import change_key
from billing.ledger import Ledger
from billing.limits import KeyLimits
from billing.snapshots import LedgerSnapshots
from billing.sweeps import release_overdue
from schema.database import create_engine, migrate
from schema.errors import InsufficientCredits, KeyExpired, KeyLimitExceeded, KeyRevoked, Unauthenticated
from schema.jobs import Price, Usage, UsageEvent
from schema.settings import Settings
from tests.support.services import REDIS_URL, require_services

OUTPUT_ONLY = Price(output_per_mtok=Decimal("1"))  # a micro-credit per output token


class GatedSnapshots:
    """The ledger's snapshots, which can be held open after the read (a load in flight)."""

    def __init__(self, inner: LedgerSnapshots) -> None:
        self.inner = inner
        self.read = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def account(self, account_id: int) -> AccountSnapshot | None:
        snapshot = await self.inner.account(account_id)
        self.read.set()
        await self.release.wait()
        return snapshot

    async def key(self, key_id: int, now: float) -> KeySnapshot | None:
        return await self.inner.key(key_id, now)


@dataclass
class Mirror:
    kind: str
    ledger: Ledger
    balances: Balances
    snapshots: GatedSnapshots
    journal: HoldJournal | None = None

    async def account(self, grant: int, **limits: int | None) -> tuple[int, int]:
        account_id = await self.ledger.create_account("t", grant)  # type: ignore[arg-type]
        key_id = await self.ledger.create_key(account_id, "t", uuid.uuid4().hex, "gz-t", limits=KeyLimits(**limits))
        return account_id, key_id

    async def hold(self, account_id: int, key_id: int, amount: int, *, now: float | None = None,
                   expires_in: float = 60) -> str:
        job_id = f"job_{uuid.uuid4().hex}"
        now = time.time() if now is None else now
        await self.balances.reserve(Reservation(job_id, account_id, key_id, amount, now, now + expires_in))
        return job_id

    async def settle(self, job_id: str, account_id: int, key_id: int, cost: int, hold: int,
                     held_at: float | None = None) -> None:
        await self.ledger.settle_many([UsageEvent(job_id=job_id, account_id=account_id, key_id=key_id, provider="p",
                                                  model="m", usage=Usage(output_tokens=cost), price=OUTPUT_ONLY,
                                                  hold=hold, held_at=held_at)])

    async def quiet(self) -> None:
        if self.journal is not None:
            await self.journal.flush()

    async def agrees(self, account_id: int, unrecorded: int = 0) -> Balance:
        """The mirror's balance, checked against the ledger's: they differ by
        the holds the ledger has not recorded (embedded: all open ones)."""
        await self.quiet()
        mirrored = await self.balances.balance(account_id)
        recorded = await self.ledger.balance(account_id)
        assert mirrored.total == recorded.total
        assert (mirrored.available, mirrored.held) == (recorded.available - unrecorded, recorded.held + unrecorded)
        return mirrored


@pytest.fixture(params=["memory", "redis"])
async def mirror(request: pytest.FixtureRequest, database_settings: Settings) -> AsyncIterator[Mirror]:
    engine = create_engine(database_settings)
    await migrate(engine)
    snapshots = GatedSnapshots(LedgerSnapshots(engine))
    client: redis.Redis | None = None
    namespace = f"gztest-bal-{uuid.uuid4().hex[:8]}"
    if request.param == "memory":
        inner: Balances = MemoryBalances(snapshots)
    else:
        require_services()
        client = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=64))
        inner = RedisBalances(client, snapshots, namespace)
    ledger = Ledger(engine, follow=inner.apply)
    journal = HoldJournal(ledger) if request.param == "redis" else None
    balances = JournaledBalances(inner, journal, ledger) if journal is not None else inner
    try:
        yield Mirror(request.param, ledger, balances, snapshots, journal)
    finally:
        await balances.aclose()
        if client is not None:
            keys = [key async for key in client.scan_iter(f"{namespace}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
        await engine.dispose()


def unique(reference: str) -> str:
    return f"{reference}-{uuid.uuid4().hex}"


def unrecorded(mirror: Mirror, amount: int) -> int:
    """What open holds the ledger lacks: in memory every open hold (no journal), in Redis none (once flushed)."""
    return amount if mirror.journal is None else 0


async def test_a_hold_takes_from_available_and_refuses_what_is_not_there(mirror: Mirror) -> None:
    account_id, key_id = await mirror.account(1000)
    await mirror.hold(account_id, key_id, 300)
    with pytest.raises(InsufficientCredits, match="up to 0.000701 credits and your account has 0.000700 available"):
        await mirror.hold(account_id, key_id, 701)
    balance = await mirror.agrees(account_id, unrecorded(mirror, 300))
    assert (balance.available, balance.held) == (700, 300)


async def test_two_hundred_holds_at_once_on_an_account_that_affords_fifty(mirror: Mirror) -> None:
    account_id, key_id = await mirror.account(500)
    results = await asyncio.gather(*(mirror.hold(account_id, key_id, 10) for _ in range(200)), return_exceptions=True)
    assert sum(isinstance(result, str) for result in results) == 50
    assert all(isinstance(result, (str, InsufficientCredits)) for result in results)
    balance = await mirror.agrees(account_id, unrecorded(mirror, 500))
    assert (balance.available, balance.held) == (0, 500)


async def test_settlement_charges_the_cost_and_gives_back_the_rest(mirror: Mirror) -> None:
    account_id, key_id = await mirror.account(1000)
    job = await mirror.hold(account_id, key_id, 300)
    await mirror.quiet()
    await mirror.settle(job, account_id, key_id, cost=50, hold=300)
    balance = await mirror.agrees(account_id)
    assert (balance.available, balance.held) == (950, 0)
    assert await mirror.ledger.reconcile() == []


async def test_a_job_settled_twice_is_charged_once(mirror: Mirror) -> None:
    account_id, key_id = await mirror.account(1000)
    job = await mirror.hold(account_id, key_id, 300)
    for _ in range(3):
        await mirror.settle(job, account_id, key_id, cost=50, hold=300)
    change = AccountChange(account_id, 10**9, settled=(Settled(job, 50, key_id, ()),))
    await mirror.balances.apply([change, change])  # sent again, as after a consumer died
    balance = await mirror.agrees(account_id)
    assert (balance.available, balance.held) == (950, 0)


async def test_a_change_that_commits_while_the_account_loads_is_applied_once(mirror: Mirror) -> None:
    account_id, key_id = await mirror.account(1000)
    await mirror.ledger.top_up(unique("before"), account_id, 5)  # type: ignore[arg-type]
    mirror.snapshots.release.clear()
    load = asyncio.create_task(mirror.balances.balance(account_id))
    await mirror.snapshots.read.wait()  # the ledger was read; the load has not landed yet
    await mirror.ledger.top_up(unique("during"), account_id, 7)  # type: ignore[arg-type]
    mirror.snapshots.release.set()
    assert (await load).available == 1012
    await mirror.ledger.top_up(unique("after"), account_id, 11)  # type: ignore[arg-type]
    assert (await mirror.agrees(account_id)).available == 1023


async def test_credits_and_deductions_follow(mirror: Mirror) -> None:
    account_id, key_id = await mirror.account(1000)
    await mirror.balances.balance(account_id)  # loaded before they happen
    await mirror.ledger.top_up(unique("payment"), account_id, 500)  # type: ignore[arg-type]
    await adjust_credits(mirror.ledger, account_id, -200, "correction")
    assert (await mirror.agrees(account_id)).available == 1300
    with pytest.raises(InsufficientCredits):
        await mirror.hold(account_id, key_id, 1301)


async def test_key_limits_bound_holds_and_count_what_settles(mirror: Mirror) -> None:
    account_id, key_id = await mirror.account(10_000, daily=100)
    first = await mirror.hold(account_id, key_id, 60)
    with pytest.raises(KeyLimitExceeded, match="daily limit of 0.000100 credits has 0.000040 left"):
        await mirror.hold(account_id, key_id, 50)
    await mirror.quiet()
    await mirror.settle(first, account_id, key_id, cost=10, hold=60)
    second = await mirror.hold(account_id, key_id, 90)
    with pytest.raises(KeyLimitExceeded, match="has 0.000000 left"):
        await mirror.hold(account_id, key_id, 1)
    await mirror.quiet()
    await mirror.settle(second, account_id, key_id, cost=90, hold=90)
    await mirror.agrees(account_id)
    with pytest.raises(KeyLimitExceeded):
        await mirror.hold(account_id, key_id, 1)
    assert await mirror.ledger.reconcile() == []


async def test_a_key_limit_set_with_holds_open_counts_them(mirror: Mirror) -> None:
    account_id, key_id = await mirror.account(10_000)
    await mirror.settle(await mirror.hold(account_id, key_id, 50), account_id, key_id, cost=30, hold=50)
    await mirror.hold(account_id, key_id, 20)  # still running when the limit is set
    await mirror.quiet()
    await change_key(mirror.ledger.engine, key_id, {"total_limit": 60})
    await mirror.balances.forget_key(key_id)
    with pytest.raises(KeyLimitExceeded, match="has 0.000010 left"):
        await mirror.hold(account_id, key_id, 11)
    await mirror.hold(account_id, key_id, 10)


async def test_revoked_expired_and_foreign_keys_hold_nothing(mirror: Mirror) -> None:
    account_id, key_id = await mirror.account(1000)
    other_account, _ = await mirror.account(1000)
    with pytest.raises(Unauthenticated):
        await mirror.hold(other_account, key_id, 10)
    await change_key(mirror.ledger.engine, key_id, {"expires_at": time.time() + 60})
    await mirror.balances.forget_key(key_id)
    with pytest.raises(KeyExpired, match="This API key expired at"):
        await mirror.hold(account_id, key_id, 10, now=time.time() + 61)
    await change_key(mirror.ledger.engine, key_id, {}, revoke=True)
    await mirror.balances.forget_key(key_id)
    with pytest.raises(KeyRevoked):
        await mirror.hold(account_id, key_id, 10)
    balance = await mirror.agrees(account_id)
    assert (balance.available, balance.held) == (1000, 0)


async def test_a_hold_cancelled_before_or_after_the_journal_wrote_it_is_given_back_everywhere(mirror: Mirror) -> None:
    """A job the broker refused gives its hold back: at once in the mirror,
    and in the ledger too, by the journal, whether it had written it or not."""
    account_id, key_id = await mirror.account(1000)
    unwritten = await mirror.hold(account_id, key_id, 300)
    await mirror.balances.cancel(unwritten, account_id)  # before the journal's linger is up
    written = await mirror.hold(account_id, key_id, 200)
    await mirror.quiet()  # written into the ledger
    await mirror.balances.cancel(written, account_id)
    assert (await mirror.balances.balance(account_id)).available == 1000
    balance = await mirror.agrees(account_id)  # the journal flushed: the ledger gave it back too
    assert (balance.available, balance.held) == (1000, 0)


async def test_a_hold_no_job_reported_is_given_back_after_its_expiry(mirror: Mirror) -> None:
    account_id, key_id = await mirror.account(1000)
    await mirror.hold(account_id, key_id, 300, expires_in=-1)
    await mirror.quiet()
    await mirror.ledger.release_expired()  # the journal wrote it: the ledger's sweep gives it back
    await release_overdue(mirror.ledger, mirror.balances)  # never written: the mirror's does
    balance = await mirror.agrees(account_id)
    assert (balance.available, balance.held) == (1000, 0)


async def test_a_mirror_lost_with_holds_open_is_rebuilt_with_them(mirror: Mirror) -> None:
    if mirror.kind != "redis":
        pytest.skip("an embedded mirror is lost only with its process, and its jobs with it")
    account_id, key_id = await mirror.account(1000)
    job = await mirror.hold(account_id, key_id, 300)
    await mirror.quiet()
    client = mirror.balances._balances._client  # type: ignore[attr-defined]
    namespace = mirror.balances._balances._ns  # type: ignore[attr-defined]
    await client.delete(*[key async for key in client.scan_iter(f"{namespace}*")])  # Redis restarted empty
    with pytest.raises(InsufficientCredits):
        await mirror.hold(account_id, key_id, 701)
    await mirror.settle(job, account_id, key_id, cost=40, hold=300)
    balance = await mirror.agrees(account_id)
    assert (balance.available, balance.held) == (960, 0)


Step = Callable[[Mirror, dict[str, object]], Awaitable[None]]

steps = st.lists(st.tuples(st.sampled_from(["hold", "settle", "cancel", "top_up", "expire", "sweep", "limit"]),
                           st.integers(0, 4), st.integers(0, 300), st.integers(0, 100)), max_size=20)


@pytest.mark.parametrize("backend", ["memory", "redis"])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_any_sequence_keeps_the_mirror_on_the_ledger(database_settings: Settings, backend: str,
                                                     steps: list[tuple[str, int, int, int]]) -> None:
    """Random holds, settlements (at most the hold, as the cap makes them),
    cancellations, credits, sweeps and limit changes: the mirror never lets
    the account below zero, and always agrees with the ledger."""

    async def run() -> None:
        engine = create_engine(database_settings)
        await migrate(engine)
        client = redis.Redis.from_url(REDIS_URL)
        namespace = f"gztest-bal-{uuid.uuid4().hex[:8]}"
        inner: Balances = MemoryBalances(LedgerSnapshots(engine))
        if backend == "redis":
            inner = RedisBalances(client, LedgerSnapshots(engine), namespace)
        ledger = Ledger(engine, follow=inner.apply)
        try:
            account_id = await ledger.create_account("t", 1000)  # type: ignore[arg-type]
            key_id = await ledger.create_key(account_id, "t", uuid.uuid4().hex, "gz-t",
                                             limits=KeyLimits(total=2000))
            open_holds: dict[int, tuple[str, int]] = {}
            for operation, slot, amount, percent in steps:
                now = time.time()
                if operation == "hold" and slot not in open_holds:
                    job = f"job_{uuid.uuid4().hex}"
                    try:
                        await inner.reserve(Reservation(job, account_id, key_id, amount, now,
                                                        now + (60 if amount % 3 else -1)))
                    except (InsufficientCredits, KeyLimitExceeded):
                        continue
                    open_holds[slot] = (job, amount)
                elif operation == "settle" and slot in open_holds:
                    job, held = open_holds.pop(slot)
                    await ledger.settle_many([UsageEvent(job_id=job, account_id=account_id, key_id=key_id,
                                                         provider="p", model="m",
                                                         usage=Usage(output_tokens=held * percent // 100),
                                                         price=OUTPUT_ONLY, hold=held, held_at=now)])
                elif operation == "cancel" and slot in open_holds:
                    await inner.cancel(open_holds.pop(slot)[0], account_id)
                elif operation == "top_up":
                    await ledger.top_up(f"pay-{uuid.uuid4().hex}", account_id, amount + 1)  # type: ignore[arg-type]
                elif operation == "sweep":
                    await release_overdue(ledger, inner, now)
                    open_holds = {slot: hold for slot, hold in open_holds.items()
                                  if hold[0] in {job for job, _ in await inner.overdue(now + 3600, limit=10**6)}}
                elif operation == "limit":
                    await change_key(engine, key_id, {"total_limit": None if percent % 2 else 2000})
                    await inner.forget_key(key_id)
                mirrored = await inner.balance(account_id)
                recorded = await ledger.balance(account_id)
                held = sum(amount for _, amount in open_holds.values())
                assert mirrored.available >= 0
                assert (mirrored.available, mirrored.held) == (recorded.available - held, held)
            assert await ledger.reconcile() == []
        finally:
            keys = [key async for key in client.scan_iter(f"{namespace}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
            await engine.dispose()

    if backend == "redis":
        require_services()
    asyncio.run(run())
