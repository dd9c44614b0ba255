"""Batch lines' results, written where each line's job settles: in the
settlement transaction that charges it (``billing.settlement``), so a line
has a result exactly when it has been charged, once, however often its job
or its usage event came.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.batches.store import record_results, result_row
from schema.jobs import LineResult, UsageEvent

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
        result = event.result if event.result is not None else LineResult(error=NOT_RUN)
        body = result.response if result.response is not None else result.error or NOT_RUN
        rows.append(result_row(event.batch.batch_id, event.batch.line, event.batch.custom_id, event.job_id,
                               result.outcome, body))
    await record_results(connection, rows)
