"""The usage an embeddings or images answer is billed by: what the upstream
reported when it is well formed, else an estimate marked as one."""

from __future__ import annotations

from typing import Any

import pytest

from schema.jobs import Usage
from schema.media import embeddings_usage, images_usage, media_usage


@pytest.mark.parametrize(
    ("payload", "answer", "expected"),
    [
        ({"input": "whatever"}, {"usage": {"prompt_tokens": 7, "total_tokens": 7}}, Usage(input_tokens=7)),
        # missing or malformed: about four characters a token, token ids one each
        ({"input": "twelve chars"}, {}, Usage(input_tokens=3, reported=False)),
        ({"input": ["abcde", "f"]}, {"usage": {"prompt_tokens": -1}}, Usage(input_tokens=3, reported=False)),
        ({"input": [[1, 2, 3], [4]]}, {"usage": {"prompt_tokens": "4"}}, Usage(input_tokens=4, reported=False)),
        ({"input": [5, 6]}, {"usage": None}, Usage(input_tokens=2, reported=False)),
    ],
)
def test_embeddings_usage(payload: dict[str, Any], answer: dict[str, Any], expected: Usage) -> None:
    assert embeddings_usage(payload, answer) == expected == media_usage("embeddings", payload, answer)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"data": [{}, {}], "usage": {"input_tokens": 9, "output_tokens": 544, "total_tokens": 553}},
         Usage(input_tokens=9, output_tokens=544, images=2)),
        # DALL·E reports no tokens: the images are counted, the prompt's estimated (9 characters: 3)
        ({"data": [{"url": "x"}]}, Usage(input_tokens=3, images=1, reported=False)),
        ({"data": [{}], "usage": {"input_tokens": 9}}, Usage(input_tokens=3, images=1, reported=False)),
        ({"data": "oops", "usage": {"input_tokens": 1, "output_tokens": True}}, Usage(input_tokens=3, reported=False)),
    ],
)
def test_images_usage(answer: dict[str, Any], expected: Usage) -> None:
    payload = {"prompt": "a red fox"}
    assert images_usage(payload, answer) == expected == media_usage("images", payload, answer)


def test_chat_answers_are_not_read_here() -> None:
    with pytest.raises(ValueError):
        media_usage("chat", {}, {})
