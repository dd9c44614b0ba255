"""Result streams over Redis pub/sub.

Each ingress process subscribes once, at start, to a channel of its own
(``reply_to``); the jobs it queues carry that channel, and workers publish
their events there. One task reads the subscription
(``scheduler.result_bus.subscriber``, on a connection of its own, every
message that has arrived at once) and dispatches each event by its job id to
the job's bounded in-process inbox. So a request costs no SUBSCRIBE or
UNSUBSCRIBE: its inbox exists before its job is queued, which is all
"subscribe before publish" asks. (A job without a ``reply_to``, from an
ingress of an older release, is published on its own channel ``job:<id>``,
which nobody here reads: upgrade workers first.) A lost subscription
(Redis restarted, or dropped a subscriber over its output buffer limit)
loses what was published meanwhile, so the reader fails every open inbox at
once (their clients get an error, never a stream that looks complete), then
subscribes again on a fresh connection, refusing new jobs until it has.

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
from contextlib import AbstractContextManager

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError
from redis.typing import EncodableT

from scheduler.outages import reaching_redis
from scheduler.result_bus import Inbox
from scheduler.result_bus.subscriber import Subscriber
from scheduler.topology import Topology
from schema.errors import BusUnavailable
from schema.jobs import JobMark, StreamEvent

log = logging.getLogger(__name__)

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
        self._inboxes: dict[str, Inbox] = {}
        # Events posted in this event-loop turn, by channel, and the future of their publishing.
        self._outgoing: dict[str, list[StreamEvent]] | None = None
        self._published: asyncio.Future[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._subscriber: Subscriber | None = None  # the home channel is live (None: jobs are refused)
        self._reader: asyncio.Task[None] | None = None
        self._home = f"{topology.namespace}:ingress:{uuid.uuid4().hex}"
        self._mark = client.register_script(_MARK)

    @property
    def reply_to(self) -> str | None:
        """The channel this process's jobs are answered on."""
        return self._home if self._reader is not None else None

    async def start(self) -> None:
        with _reaching_bus():
            self._subscriber = await Subscriber.open(self._client, self._home)
        self._reader = asyncio.create_task(self._read(), name="redis result reader")

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._subscriber is not None:
            self._subscriber.close()
            self._subscriber = None

    async def subscribe(self, job_id: str) -> Inbox:
        if self._subscriber is None:
            raise BusUnavailable("the result bus is not subscribed (Redis is unreachable)")
        inbox = Inbox(job_id, on_close=lambda box: self._inboxes.pop(box.job_id, None))
        self._inboxes[job_id] = inbox
        return inbox

    def _channel(self, job_id: str, to: str | None) -> str:
        return to or self._topology.result_channel(job_id)

    async def publish(self, *events: StreamEvent, to: str | None = None) -> None:
        if events:
            await asyncio.shield(self.post(events, to))  # shared by the turn's posts: never cancelled by one

    def post(self, events: Sequence[StreamEvent], to: str | None = None) -> asyncio.Future[None]:
        # Posts wait while a publish is in flight and go out together in the
        # next, one message per ingress: a batch per round trip, not per event.
        if self._outgoing is None:
            self._outgoing, self._published = {}, asyncio.get_running_loop().create_future()
            if self._sender is None or self._sender.done():
                self._sender = asyncio.create_task(self._send(), name="result events")
        assert self._published is not None
        channel = self._channel(events[0]["job"], to)
        if (queued := self._outgoing.get(channel)) is None:
            self._outgoing[channel] = list(events)
        else:
            queued.extend(events)
        return self._published

    async def _send(self) -> None:
        while self._outgoing is not None:
            outgoing, published = self._outgoing, self._published
            self._outgoing = self._published = None
            assert published is not None
            try:
                with _reaching_bus():
                    if len(outgoing) == 1:
                        ((channel, events),) = outgoing.items()
                        await self._client.publish(channel, orjson.dumps(events))
                    else:
                        await asyncio.gather(*(self._client.publish(channel, orjson.dumps(events))
                                               for channel, events in outgoing.items()))
            except BusUnavailable as error:
                published.set_exception(error)
            except asyncio.CancelledError:  # the bus is closing
                published.cancel()
                raise
            else:
                published.set_result(None)

    async def marked(self, job_id: str) -> JobMark | None:
        with _reaching_bus():
            stored = await self._client.get(self._mark_key(job_id))
        return JobMark.model_validate_json(stored) if stored is not None else None

    async def mark(self, job_id: str, mark: JobMark, ttl: float, *,
                   publish: Sequence[StreamEvent] = (), to: str | None = None) -> JobMark | None:
        channel, events = (self._channel(job_id, to), orjson.dumps(publish)) if publish else ("", b"")
        with _reaching_bus():
            before = await self._mark(keys=[self._mark_key(job_id)],
                                      args=[mark.model_dump_json(), mark.attempt, max(1, int(ttl)), channel, events])
        return JobMark.model_validate_json(before) if before is not None else None

    async def take(self, job_id: str, mark: JobMark, ttl: float) -> tuple[JobMark | None, bool]:
        # Both at once: the shared client pipelines them (with whatever
        # else this process asks in the meantime), one round trip.
        args: list[EncodableT] = [mark.model_dump_json(), mark.attempt, max(1, int(ttl))]
        with _reaching_bus():
            before, cancelled = await asyncio.gather(self._mark(keys=[self._mark_key(job_id)], args=args),
                                                     self._client.exists(self._topology.cancel_key(job_id)))
        return (JobMark.model_validate_json(before) if before is not None else None), bool(cancelled)

    def _mark_key(self, job_id: str) -> str:
        return f"{self._topology.namespace}:jobstate:{job_id}"

    async def cancel(self, job_id: str, ttl: float) -> None:
        with _reaching_bus():
            async with self._client.pipeline(transaction=False) as pipe:
                # The key first: a worker that missed the announcement still sees it.
                pipe.set(self._topology.cancel_key(job_id), b"1", ex=max(1, int(ttl)))
                pipe.publish(self._topology.cancel_channel, job_id.encode())
                await pipe.execute()

    async def cancelled(self, job_id: str) -> bool:
        with _reaching_bus():
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
            assert self._subscriber is not None
            try:
                await self._subscriber.read(self._dispatch)
            except OSError as error:  # ConnectionError and TimeoutError among them
                await self._recover(error)

    def _dispatch(self, message: bytes) -> None:
        try:
            events: list[StreamEvent] = orjson.loads(message)
            inboxes = self._inboxes
            for event in events:
                inbox = inboxes.get(event["job"])
                if inbox is not None:  # like pub/sub: nobody waiting, nothing kept
                    inbox.deliver(event)
        except (orjson.JSONDecodeError, TypeError, KeyError):
            # Not a worker's: dropped, and the reader reads on (a stream it
            # belonged to sees the gap).
            log.error("a message on the result channel is not a list of events: %r", message[:200])

    def _fail_open(self, why: str) -> None:
        log.error("lost the Redis result subscription (%s); failing %d open streams", why, len(self._inboxes))
        for inbox in list(self._inboxes.values()):
            inbox.fail("lost the connection to the result bus")
        self._inboxes.clear()

    async def _recover(self, error: BaseException) -> None:
        assert self._subscriber is not None
        self._subscriber.close()
        self._subscriber = None  # new jobs are refused until it is back
        self._fail_open(str(error) or type(error).__name__)
        while True:
            try:
                self._subscriber = await Subscriber.open(self._client, self._home)
                log.info("result subscription restored")
                return
            except OSError as retry_error:
                log.warning("Redis still unreachable: %s", retry_error)
                await asyncio.sleep(RESUBSCRIBE_DELAY)


def _reaching_bus() -> AbstractContextManager[None]:
    return reaching_redis(BusUnavailable, "the result bus (Redis)")
