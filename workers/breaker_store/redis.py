"""Circuit breaker state in Redis, shared by every worker and ingress
(distributed mode): one JSON record per breaker, written by a
compare-and-set script, and an index of every breaker written."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import cast

import redis.asyncio as redis

from scheduler.outages import reaching_redis
from scheduler.topology import Topology
from schema.circuits import CircuitRecord
from schema.errors import StoreUnavailable

# Compare-and-set of one JSON record; the index lets health list every breaker.
_SWAP = """
local stored = redis.call('GET', KEYS[1])
local version = 0
if stored then version = cjson.decode(stored)['version'] end
if version ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
"""


def _reaching_redis() -> AbstractContextManager[None]:
    return reaching_redis(StoreUnavailable, "the circuit breakers' Redis")


class RedisBreakerStore:
    def __init__(self, client: redis.Redis, topology: Topology) -> None:
        self._client = client
        self._topology = topology
        self._swap = client.register_script(_SWAP)

    async def load(self, *breakers: str) -> list[CircuitRecord]:
        with _reaching_redis():
            stored = await self._client.mget([self._topology.breaker_key(name) for name in breakers])
        return [CircuitRecord.model_validate_json(raw) if raw is not None else CircuitRecord() for raw in stored]

    async def swap(self, breaker: str, record: CircuitRecord) -> bool:
        written = record.model_copy(update={"version": record.version + 1})
        with _reaching_redis():
            done = await self._swap(keys=[self._topology.breaker_key(breaker), self._topology.breaker_index],
                                    args=[record.version, written.model_dump_json(), breaker])
        return bool(done)

    async def every(self) -> dict[str, CircuitRecord]:
        with _reaching_redis():
            # The client returns bytes (no decode_responses); redis-py types either.
            members = cast(set[bytes], await self._client.smembers(self._topology.breaker_index))
            names = sorted(name.decode() for name in members)
        if not names:
            return {}
        records = await self.load(*names)
        return dict(zip(names, records, strict=True))

    async def reset(self, *breakers: str) -> None:
        if breakers:
            with _reaching_redis():
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.delete(*(self._topology.breaker_key(name) for name in breakers))
                    pipe.srem(self._topology.breaker_index, *breakers)
                    await pipe.execute()
