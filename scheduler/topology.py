"""Names and shapes of the queues, exchanges and channels, one place for all
roles so that every declarer agrees (RabbitMQ refuses a redeclaration with
different arguments)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from scheduler.priority import Work
from schema.jobs import DEFAULT_PRIORITY, MAX_PRIORITY

if TYPE_CHECKING:  # the embedded mode never loads the AMQP libraries
    from pamqp.common import FieldTable

__all__ = ["DEFAULT_PRIORITY", "MAX_PRIORITY", "Topology"]

_QUEUE_SUFFIX = {Work.REALTIME: ".realtime", Work.STANDARD: "", Work.LOW: ".low"}


@dataclass(frozen=True, slots=True)
class Topology:
    namespace: str

    @property
    def jobs_exchange(self) -> str:
        return f"{self.namespace}.jobs"

    def job_queue(self, provider: str, work: Work = Work.STANDARD) -> str:
        """``provider``'s queue of one kind of work: standard jobs in
        ``<namespace>.jobs.<provider>``, realtime ones in ``….realtime``, bulk
        and batch ones in ``….low``. Each is consumed apart, so that a pool
        can keep slots from the kinds below (``scheduler.queues.slots``)."""
        return f"{self.namespace}.jobs.{self.job_routing_key(provider, work)}"

    @staticmethod
    def job_routing_key(provider: str, work: Work) -> str:
        """Routes a job to ``job_queue(provider, work)`` on the jobs exchange."""
        return provider + _QUEUE_SUFFIX[work]

    @property
    def dead_exchange(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def dead_queue(self) -> str:
        return f"{self.namespace}.dead-letters"

    @property
    def parked_queue(self) -> str:
        """Dead letters the reader cannot settle (not a job, or failing every
        time), kept for an operator; nothing consumes it."""
        return f"{self.namespace}.dead-letters.parked"

    @property
    def usage_queue(self) -> str:
        return f"{self.namespace}.usage"

    def result_channel(self, job_id: str) -> str:
        return f"{self.namespace}:job:{job_id}"

    def cancel_key(self, job_id: str) -> str:
        """Redis key set while a job's cancellation stands (a worker that takes it later skips it)."""
        return f"{self.namespace}:cancel:{job_id}"

    @property
    def cancel_channel(self) -> str:
        """Redis channel announcing every cancelled job's id to every worker process."""
        return f"{self.namespace}:cancels"

    def breaker_key(self, breaker: str) -> str:
        """Redis key of one circuit breaker's shared state (``provider`` or ``provider/model``)."""
        return f"{self.namespace}:breaker:{breaker}"

    @property
    def breaker_index(self) -> str:
        """Redis set of every breaker that has a state."""
        return f"{self.namespace}:breakers"

    def health_key(self, provider: str, source: str) -> str:
        """Redis list of a provider's recent outcomes from ``source`` (requests, probe), newest first."""
        return f"{self.namespace}:health:{provider}:{source}"

    @property
    def probe_round_key(self) -> str:
        """Redis key held for one probe interval by the prober round that runs in it."""
        return f"{self.namespace}:health:round"

    def probe_successor_key(self, chain: str, number: int) -> str:
        """Redis key held by the run of a probe chain's round ``number`` that sends the next round."""
        return f"{self.namespace}:health:round:{chain}:{number}"

    @property
    def batch_queue(self) -> str:
        """dramatiq's queue of the batch orchestrator's steps (``scheduler.batches.actors``)."""
        return f"{self.namespace}.batches"

    @property
    def prober_queue(self) -> str:
        """dramatiq's queue of the active prober (dramatiq adds ``.DQ`` and ``.XQ`` beside it)."""
        return f"{self.namespace}.prober"

    @property
    def rate_limit_prefix(self) -> str:
        """Redis keys of rate-limit buckets: ``<prefix>key:12:tokens`` (hashes that expire once empty)."""
        return f"{self.namespace}:ratelimit:"

    @property
    def provider_listings(self) -> str:
        """Redis hash: provider name -> its last good model list (scheduler.listing_store)."""
        return f"{self.namespace}:catalog:listings"

    @property
    def provider_listings_version(self) -> str:
        """Redis counter, raised by every save of ``provider_listings``."""
        return f"{self.namespace}:catalog:version"

    def pool_depth(self, provider: str) -> str:
        """Redis hash: message priority -> jobs counted waiting in ``provider``'s queue."""
        return f"{self.namespace}:pool:{provider}:depth"

    def pool_workers(self, provider: str) -> str:
        """Redis hash: worker id -> its last beat (JSON, ``scheduler.pool_stats.WorkerBeat``)."""
        return f"{self.namespace}:pool:{provider}:workers"

    def pool_waiting(self, provider: str) -> str:
        """Redis hash: worker id -> jobs it took that wait in it for a slot (``WorkerBeat.waiting``)."""
        return f"{self.namespace}:pool:{provider}:waiting"

    def pool_seen(self, provider: str) -> str:
        """Redis string: when any worker of ``provider`` last beat (epoch seconds)."""
        return f"{self.namespace}:pool:{provider}:seen"

    @property
    def job_queue_arguments(self) -> FieldTable:
        return {"x-max-priority": MAX_PRIORITY, "x-dead-letter-exchange": self.dead_exchange}
