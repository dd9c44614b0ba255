"""Result streams over Redis pub/sub.

One pub/sub connection per ingress process, read by one task that dispatches
each message by channel to the job's bounded in-process inbox. Subscribing
waits for Redis's confirmation, so a job is enqueued only once its channel is
live. redis-py does not resubscribe after a lost connection: the reader fails
every open inbox cleanly (their clients get an error, never a stream that
looks complete) and starts a fresh connection.

Cancellations: a key per cancelled job (with a TTL to its deadline), set
before its id is published on one channel that each worker process reads
through one subscription of its own (``cancellations``), whatever the
number of jobs it runs. After a lost subscription, the reader says so
(None), and the keys tell what was announced in the gap.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence

import orjson
import redis.asyncio as redis
from redis.exceptions import NoScriptError, RedisError

from scheduler.subscription import Inbox
from scheduler.topology import Topology
from schema.errors import ServiceUnavailable
from schema.jobs import JobMark, StreamEvent

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT = 5.0
RESUBSCRIBE_DELAY = 1.0

# SET … GET, unless the stored mark belongs to a later attempt of the job;
# with the mark, PUBLISH the events in ARGV[5] on channel ARGV[4], if any.
_MARK = """
local before = redis.call('GET', KEYS[1])
if before then
  local attempt = cjson.decode(before)['attempt'] or 0
  if attempt > tonumber(ARGV[2]) then return before end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
if ARGV[4] and ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return before
"""


class RedisResultBus:
    def __init__(self, client: redis.Redis, topology: Topology) -> None:
        self._client = client
        self._topology = topology
        self._inboxes: dict[bytes, Inbox] = {}
        self._confirming: dict[bytes, asyncio.Future[None]] = {}
        self._pubsub: redis.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        # Channels to leave: a finished job's response need not wait for its
        # UNSUBSCRIBE, and under load one command leaves many channels. (Job
        # ids are never reused, so a channel left is never joined again.)
        self._leaving: set[bytes] = set()
        self._leave = asyncio.Event()
        self._leaver: asyncio.Task[None] | None = None
        # Keeps the shared connection subscribed while no job is.
        self._home = f"{topology.namespace}:ingress:{uuid.uuid4().hex}"
        self._mark = client.register_script(_MARK)

    async def start(self) -> None:
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(self._home)
        self._reader = asyncio.create_task(self._read(), name="redis result reader")
        self._leaver = asyncio.create_task(self._unsubscribe_finished(), name="redis result unsubscriber")

    async def close(self) -> None:
        for task in (self._reader, self._leaver):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()

    async def subscribe(self, job_id: str) -> Inbox:
        if self._pubsub is None:
            raise ServiceUnavailable("the result bus is not started")
        channel = self._topology.result_channel(job_id).encode()
        inbox = Inbox(job_id, on_close=lambda _: self._unsubscribe(channel))
        self._leaving.discard(channel)
        confirmed = asyncio.get_running_loop().create_future()
        self._inboxes[channel] = inbox
        self._confirming[channel] = confirmed
        try:
            await self._pubsub.subscribe(channel)
            await asyncio.wait_for(confirmed, SUBSCRIBE_TIMEOUT)
        except (RedisError, OSError, TimeoutError) as error:
            self._inboxes.pop(channel, None)
            raise ServiceUnavailable(f"cannot subscribe to the result stream: {error}") from error
        finally:
            self._confirming.pop(channel, None)
        return inbox

    def _unsubscribe(self, channel: bytes) -> None:
        """Stop delivering at once; leave the channel in the background."""
        self._inboxes.pop(channel, None)
        self._leaving.add(channel)
        self._leave.set()

    async def _unsubscribe_finished(self) -> None:
        while True:
            await self._leave.wait()
            self._leave.clear()
            channels = [channel for channel in self._leaving if channel not in self._inboxes]
            self._leaving.clear()
            if channels and self._pubsub is not None:
                try:
                    await self._pubsub.unsubscribe(*channels)
                except (RedisError, OSError) as error:
                    # The reader's recovery starts a fresh connection with no
                    # job channels, so nothing is left subscribed.
                    log.debug("unsubscribe of %d channels: %s", len(channels), error)

    async def publish(self, *events: StreamEvent) -> None:
        if events:
            await self._client.publish(self._topology.result_channel(events[0]["job"]), orjson.dumps(events))

    async def marked(self, job_id: str) -> JobMark | None:
        stored = await self._client.get(self._mark_key(job_id))
        return JobMark.model_validate_json(stored) if stored is not None else None

    async def mark(self, job_id: str, mark: JobMark, ttl: float, *,
                   publish: Sequence[StreamEvent] = ()) -> JobMark | None:
        channel, events = (self._topology.result_channel(job_id), orjson.dumps(publish)) if publish else ("", b"")
        before = await self._mark(keys=[self._mark_key(job_id)],
                                  args=[mark.model_dump_json(), mark.attempt, max(1, int(ttl)), channel, events])
        return JobMark.model_validate_json(before) if before is not None else None

    async def take(self, job_id: str, mark: JobMark, ttl: float) -> tuple[JobMark | None, bool]:
        # One pipeline. The script goes by its hash: redis-py would check a
        # Script object's presence with SCRIPT EXISTS on every pipeline,
        # another round trip; a Redis that lost it (restarted) is given it.
        key = self._mark_key(job_id)
        args = [mark.model_dump_json(), mark.attempt, max(1, int(ttl))]
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.evalsha(self._mark.sha, 1, key, *args)
            pipe.exists(self._topology.cancel_key(job_id))
            before, cancelled = await pipe.execute(raise_on_error=False)
        if isinstance(before, NoScriptError):
            before = await self._mark(keys=[key], args=args)
        for reply in (before, cancelled):
            if isinstance(reply, Exception):
                raise reply
        return (JobMark.model_validate_json(before) if before is not None else None), bool(cancelled)

    def _mark_key(self, job_id: str) -> str:
        return f"{self._topology.namespace}:jobstate:{job_id}"

    async def cancel(self, job_id: str, ttl: float) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            # The key first: a worker that missed the announcement still sees it.
            pipe.set(self._topology.cancel_key(job_id), b"1", ex=max(1, int(ttl)))
            pipe.publish(self._topology.cancel_channel, job_id.encode())
            await pipe.execute()

    async def cancelled(self, job_id: str) -> bool:
        return bool(await self._client.exists(self._topology.cancel_key(job_id)))

    async def cancellations(self) -> AsyncIterator[str | None]:
        channel = self._topology.cancel_channel
        gap = False
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(channel)
                if gap:
                    gap = False
                    yield None  # back: what was announced meanwhile is in the keys
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message["type"] == "message":
                        yield message["data"].decode()
            except (RedisError, OSError) as error:
                # redis-py does not resubscribe: a fresh connection does.
                log.warning("lost the cancellation subscription (%s); resubscribing", error)
                gap = True
                await asyncio.sleep(RESUBSCRIBE_DELAY)
            finally:
                await pubsub.aclose()

    async def _read(self) -> None:
        while True:
            assert self._pubsub is not None
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisError, OSError) as error:
                await self._recover(error)
                continue
            if message is None:
                continue
            kind, channel = message["type"], message["channel"]
            if kind == "message":
                inbox = self._inboxes.get(channel)
                if inbox is not None:
                    for event in orjson.loads(message["data"]):
                        inbox.deliver(event)
            elif kind == "subscribe":
                confirmed = self._confirming.get(channel)
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)

    async def _recover(self, error: BaseException) -> None:
        log.error("lost the Redis result subscription (%s); failing %d open streams", error, len(self._inboxes))
        for inbox in list(self._inboxes.values()):
            inbox.fail("lost the connection to the result bus")
        self._inboxes.clear()
        for confirmed in self._confirming.values():
            if not confirmed.done():
                confirmed.set_exception(ConnectionError("lost the connection to the result bus"))
        old = self._pubsub
        while True:
            try:
                if old is not None:
                    await old.aclose()
                    old = None
                self._pubsub = self._client.pubsub()
                await self._pubsub.subscribe(self._home)
                log.info("result subscription restored")
                return
            except (RedisError, OSError) as retry_error:
                log.warning("Redis still unreachable: %s", retry_error)
                await asyncio.sleep(1.0)
