"""The prober's rounds on both health stores (in memory, and the real Redis
shared by every prober): one chain gets each interval's round, any other
chain is refused it (and ends), and the chain whose round was redelivered,
because its prober died in the middle of it, gets it again and goes on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.services import redis_namespace
from workers.health_store import HealthStore
from workers.health_store.memory import MemoryHealthStore
from workers.health_store.redis import RedisHealthStore

HOLD = 0.3  # seconds


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[HealthStore]:
    if request.param == "memory":
        yield MemoryHealthStore()
        return
    async with redis_namespace() as (client, topology):
        yield RedisHealthStore(client, topology)


async def test_one_chain_holds_a_round_and_a_redelivered_round_carries_its_chain_on(store: HealthStore) -> None:
    assert await store.claim_round("first", HOLD)
    assert not await store.claim_round("second", HOLD), "a second chain probed in the same interval"
    assert await store.claim_round("first", HOLD), "the redelivered round of the claiming chain was refused"
    assert not await store.claim_round("second", HOLD)


async def test_a_round_is_free_again_once_its_claim_lapses(store: HealthStore) -> None:
    assert await store.claim_round("first", HOLD)
    await asyncio.sleep(HOLD + 0.1)
    assert await store.claim_round("second", HOLD)
    assert not await store.claim_round("first", HOLD), "the lapsed chain took the round back"


async def test_only_one_run_of_a_round_sends_the_next(store: HealthStore) -> None:
    assert await store.claim_successor("first", 7, HOLD)
    assert not await store.claim_successor("first", 7, HOLD), "a round delivered twice split its chain in two"
    assert await store.claim_successor("first", 8, HOLD)
    assert await store.claim_successor("second", 7, HOLD), "another chain's round was taken for this one's"
