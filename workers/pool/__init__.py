"""The pool runtime: one provider's jobs in, result events and usage out.

For each job: skip it if its deadline passed while it waited, call the
upstream through the provider's adapter, publish numbered events on the job's
result channel, publish a durable usage event, and only then let the queue
acknowledge the job. Every job gets exactly one usage event, which settles it
and closes its hold.

One module per step around one loop, as dramatiq keeps its per-message
concerns:

- ``loop``: ``ProviderPool``, the loop that ties the steps together;
- ``intake``: taking a job (its mark, cancellation, stale and deadline checks,
  redelivered copies);
- ``attempts``: running it on the provider (adapter, breakers, timeouts,
  retries);
- ``handoff``: handing it to the model's next candidate (failover);
- ``events``: its numbered result events;
- ``usage``: its usage event and what it charges.
"""

from workers.pool.loop import ProviderPool

__all__ = ["ProviderPool"]
