"""The OpenAI Files API's contract, no I/O: the purposes a file may have,
which of them a client may upload, and the bounds of ``expires_after``."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

# Every purpose OpenAI names. ``batch_output`` files are made by the gateway
# (a batch's output and error files), never uploaded.
Purpose = Literal["batch", "batch_output", "user_data", "assistants", "assistants_output", "vision", "fine-tune",
                  "fine-tune-results", "evals"]
PURPOSES = frozenset(get_args(Purpose))
UPLOAD_PURPOSES = frozenset({"batch", "user_data", "assistants", "vision", "fine-tune", "evals"})

# A file id as the store makes them (``scheduler.files.new_file_id``): any
# other names no file, and is never looked up.
FILE_ID_PATTERN = r"^file-[0-9a-f]{24}$"
# The longest file name kept (``files.filename``).
MAX_FILENAME = 512

# OpenAI's bounds on ``expires_after.seconds``: one hour to thirty days.
MIN_EXPIRY = 3600
MAX_EXPIRY = 30 * 86_400
# Form fields an upload may carry: its four, and room for what a client adds (ignored).
MAX_FORM_FIELDS = 16


class ExpiresAfter(BaseModel):
    """``expires_after`` of an upload: the file is gone ``seconds`` after it
    was created (``anchor`` is always ``created_at``, as OpenAI has it)."""

    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"] = "created_at"
    seconds: int | None = Field(None, ge=MIN_EXPIRY, le=MAX_EXPIRY)  # none: the purpose's default
