"""A cancellation announced while a worker's subscription to them was down
(its Redis restarted) still stops the job once the subscription is back:
the watch asks about every running job after a gap."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from scheduler.result_bus.redis import RedisResultBus
from scheduler.topology import Topology
from tests.support.redis_server import own_redis
from workers.cancels import CancelWatch, JobCancelled


async def test_a_cancel_announced_during_a_gap_still_stops_the_running_job() -> None:
    topology = Topology(f"gztest{uuid.uuid4().hex[:8]}")
    with own_redis() as server:
        worker = redis.Redis.from_url(server.url, retry=Retry(NoBackoff(), 1))  # as the runtime's client
        cancels = CancelWatch(RedisResultBus(worker, topology))
        watch = asyncio.create_task(cancels.run())
        running = asyncio.Event()

        async def work() -> None:
            running.set()
            await asyncio.Event().wait()

        async def watched() -> None:
            with cancels.watching("j") as watch:
                await watch.run(work(), cancelled=False)

        job = asyncio.create_task(watched())
        ingress = redis.Redis.from_url(server.url)
        try:
            await running.wait()
            for _ in range(200):  # the watch's subscription is live
                if dict(await ingress.pubsub_numsub(topology.cancel_channel))[topology.cancel_channel.encode()]:
                    break
                await asyncio.sleep(0.01)
            server.stop()
            await ingress.aclose()
            await asyncio.sleep(0.1)  # the watch sees its connection go, and waits before resubscribing
            server.start()
            ingress = redis.Redis.from_url(server.url)
            listening = dict(await ingress.pubsub_numsub(topology.cancel_channel))[topology.cancel_channel.encode()]
            assert listening == 0, "the watch resubscribed before the cancel: nothing was missed"
            await RedisResultBus(ingress, topology).cancel("j", 60)  # announced to nobody
            with pytest.raises(JobCancelled):
                await asyncio.wait_for(job, 10)
        finally:
            job.cancel()
            watch.cancel()
            await asyncio.gather(job, watch, return_exceptions=True)
            await ingress.aclose()
            await worker.aclose()
