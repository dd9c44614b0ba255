"""Batch lines' results, written where each line's job settles: in the
settlement transaction that charges it (``billing.settlement``), so a line
has a result exactly when it has been charged, once, however often its job
or its usage event came.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.batches.store import record_results
from schema.jobs import UsageEvent

# A line whose job settled with no answer or error to show (its worker could
# not record its start, for one): what its result says.
NOT_RUN = {"status": 500, "message": "the gateway could not run this request", "type": "server_error",
           "code": "server_error", "retry_after": None}


async def record_lines(connection: AsyncConnection, events: Sequence[UsageEvent]) -> None:
    """The results of the batch lines among ``events``, each settled just now."""
    rows: list[dict[str, Any]] = []
    for event in events:
        if event.batch is None:
            continue
        result = event.result
        if result is not None and result.response is not None:
            outcome, body = "succeeded", result.response
        elif result is not None and result.error is not None:
            outcome, body = result.outcome, result.error
        else:
            outcome, body = "errored", NOT_RUN
        rows.append({"batch_id": event.batch.batch_id, "line": event.batch.line, "custom_id": event.batch.custom_id,
                     "job_id": event.job_id, "outcome": outcome, "body": orjson.dumps(body).decode()})
    await record_results(connection, rows)
