"""The batch API's contracts: a batch line's place on its job and usage
event, what a line ended with, and the statuses of both dialects.

A batch line is an ordinary job at the batch priority whose answer goes to
no client: its worker puts the answer (or error) on the job's usage event
(``LineResult``), and billing, settling that event once by job id, writes
the line's result in the same transaction as its charge. So every line
appears in its batch's results exactly once and is charged at most once,
however often its job is redelivered.
"""

from __future__ import annotations

from typing import Literal

from schema.jobs import BatchLine, LineResult

BatchApi = Literal["openai", "anthropic"]
BatchStatus = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired",
                      "cancelling", "cancelled"]
# What became of one line (Anthropic's result types; OpenAI's output file holds
# the ``succeeded`` ones and its error file the rest).
LineOutcome = Literal["succeeded", "errored", "canceled", "expired"]
ACTIVE_STATUSES: tuple[BatchStatus, ...] = ("validating", "in_progress", "finalizing", "cancelling")
ENDED_STATUSES: tuple[BatchStatus, ...] = ("failed", "completed", "expired", "cancelled")

__all__ = ["ACTIVE_STATUSES", "BATCH_ID_PATTERN", "ENDED_STATUSES", "MESSAGE_BATCH_ID_PATTERN", "BatchApi",
           "BatchLine", "BatchStatus", "LineOutcome", "LineResult", "line_job_id"]


# A batch id as the gateway makes them (``scheduler.batches.store.new_batch_id``):
# anything else is no batch, answered without a database lookup.
BATCH_ID_PATTERN = r"^batch_[0-9a-f]{32}$"
MESSAGE_BATCH_ID_PATTERN = r"^msgbatch_[0-9a-f]{32}$"


def line_job_id(batch_id: str, line: int) -> str:
    """A line's job id, the same each time the line is released: a line
    released twice (its orchestrator died before it noted the release) is
    one job, which runs, holds and settles once."""
    return f"job_{batch_id}_{line}"
