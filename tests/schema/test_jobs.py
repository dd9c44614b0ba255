"""The job envelope's pieces that travel as plain data."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schema.errors import RateLimited, UpstreamError
from schema.jobs import USAGE_CEILING, Usage, error_data

counts = st.integers(0, 2 * USAGE_CEILING)


@given(counts, counts, counts, st.booleans())
def test_an_end_events_usage_is_what_model_dump_gives(inputs: int, outputs: int, images: int, reported: bool) -> None:
    usage = Usage(input_tokens=inputs, output_tokens=outputs, images=images, reported=reported)
    assert usage.data() == usage.model_dump()
    assert Usage.model_validate(usage.data()) == usage


def test_an_error_events_data_carries_every_field_of_the_error() -> None:
    assert error_data(UpstreamError("boom", status=503, retry_after=2.0)) == {
        "status": 503, "message": "boom", "type": "upstream_error", "code": "upstream_error", "retry_after": 2.0}
    limited = error_data(RateLimited("slow down", retry_after=1.5))
    assert (limited["status"], limited["retry_after"]) == (429, 1.5)
