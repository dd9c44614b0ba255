"""Priority classes and the message priorities they run at.

A key's plan sets its class; a request may ask for a lower one (the
``x-gatewayz-priority`` header), never a higher one: asking for more than
the plan gives is not an error, the job runs at the plan's class, and the
response says which class it ran at. Queues serve higher priorities first
(RabbitMQ message priorities, the in-process priority queue), so a
saturated pool takes realtime jobs before standard ones, and standard ones
before bulk.

Level 3 is left free for a class between realtime and standard, and 0 is
below every class a request can choose: it is for the batch API, whose jobs
wait behind all interactive traffic.
"""

from __future__ import annotations

from enum import IntEnum

from schema.errors import InvalidRequest
from schema.jobs import MAX_PRIORITY
from schema.plans import PRIORITY_CLASSES, PriorityClass

MESSAGE_PRIORITY: dict[PriorityClass, int] = {"realtime": MAX_PRIORITY, "standard": 2, "bulk": 1}
BATCH_PRIORITY = 0
# Bulk and batch jobs are low work: a pool keeps some slots from them for
# realtime and standard jobs (``scheduler.queues.slots``).
LOW_PRIORITY_MAX = MESSAGE_PRIORITY["bulk"]
_STANDARD = MESSAGE_PRIORITY["standard"]


class Work(IntEnum):
    """A pool's kinds of work, highest first. Each waits in a queue of its
    own, and a pool keeps slots of its reserve from the kinds below
    (``scheduler.queues.slots``)."""

    REALTIME = 0
    STANDARD = 1
    LOW = 2  # bulk and batch


def work_of(priority: int) -> Work:
    """The kind of work of a job at this message priority: above standard's
    priority (realtime, and the free level 3) is realtime work."""
    if priority > _STANDARD:
        return Work.REALTIME
    return Work.LOW if priority <= LOW_PRIORITY_MAX else Work.STANDARD


def requested_class(value: str | None) -> PriorityClass | None:
    """The class a request asked for (case and spaces ignored); an unknown
    name is refused, since a typo would otherwise silently change nothing."""
    if value is None:
        return None
    wanted = value.strip().lower()
    for name in PRIORITY_CLASSES:
        if wanted == name:
            return name
    raise InvalidRequest(f"Unknown priority class {value!r}: use one of {', '.join(PRIORITY_CLASSES)}",
                         param="x-gatewayz-priority")


def effective_class(plan_class: PriorityClass, requested: PriorityClass | None) -> PriorityClass:
    """The lower of the plan's class and the requested one."""
    if requested is None:
        return plan_class
    return min(plan_class, requested, key=MESSAGE_PRIORITY.__getitem__)
