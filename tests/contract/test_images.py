"""Image generation through the official ``openai`` SDK, in both run modes:
the images, their usage, and their charge per image (plus the tokens a GPT
Image model reports), exactly, in the balance and the usage report; and
every way a request can fail."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import openai
import pytest

from loadtests.fake_upstream import FakeUpstream
from tests.support.gateway import Gateway

# tests/conftest.py: "fake-image" costs 0.04 credits an image (DALL·E-like:
# the fake reports no usage); "fake-gpt-image" is GPT Image-like: 5.00 and
# 40.00 credits per million input and output tokens plus 0.01 an image, and
# the fake reports a token a prompt word and 272 output tokens an image.
PER_IMAGE = 40_000
GRANT = 10_000_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def key(gateway: Gateway) -> str:
    return gateway.create_key("10")


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)


def usage_report(gateway: Gateway, key: str) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}/user/usage", headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()


def post(gateway: Gateway, key: str, body: object, path: str = "/v1/images/generations") -> httpx.Response:
    return httpx.post(f"{gateway.url}{path}", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)


def test_images_charged_per_image(gateway: Gateway, key: str, upstream: FakeUpstream) -> None:
    response = client(gateway, key).images.with_raw_response.generate(model="fake-image", prompt="a cat on a mat", n=2,
                                                                       size="1024x1024")
    result = response.parse()

    assert len(result.data) == 2
    for image in result.data:
        assert image.url is not None and image.url.startswith("data:image/png;base64,")
        assert base64.b64decode(image.url.split(",", 1)[1]).startswith(PNG_SIGNATURE)
        assert image.revised_prompt == "a cat on a mat"
    assert result.usage is None, "a DALL·E-like answer has no usage, and the gateway invents none"
    assert response.headers["x-gatewayz-cost"] == "0.080000"
    assert response.headers["x-gatewayz-provider"] == "fake"
    job_id = response.headers["x-gatewayz-job-id"]
    assert upstream.requests[-1]["body"] == {"prompt": "a cat on a mat", "n": 2, "size": "1024x1024",
                                             "model": "fake-image"}

    assert gateway.wait_for_balance(key, GRANT - 2 * PER_IMAGE) == GRANT - 2 * PER_IMAGE
    report = usage_report(gateway, key)
    [row] = report["data"]
    # no tokens were reported: the prompt's are estimated (and priced at 0 here)
    assert (row["job_id"], row["model"], row["images"], row["reported"]) == (job_id, "fake-image", 2, False)
    assert (row["input_tokens"], row["output_tokens"], row["cost_micros"]) == (4, 0, 2 * PER_IMAGE)
    assert (report["totals"]["images"], report["totals"]["by_model"][0]["images"]) == (2, 2)
    assert gateway.reconcile(key) == []


def test_b64_json_images(gateway: Gateway, key: str) -> None:
    result = client(gateway, key).images.generate(model="fake-image", prompt="a dog", response_format="b64_json")
    [image] = result.data
    assert image.url is None and base64.b64decode(image.b64_json).startswith(PNG_SIGNATURE)
    assert gateway.wait_for_balance(key, GRANT - PER_IMAGE) == GRANT - PER_IMAGE


def test_gpt_image_tokens_are_charged_beside_the_images(gateway: Gateway, key: str, upstream: FakeUpstream) -> None:
    response = client(gateway, key).images.with_raw_response.generate(model="fake-gpt-image", prompt="a cat on a mat",
                                                                       n=2, quality="low")
    result = response.parse()
    assert upstream.requests[-1]["body"]["model"] == "gpt-image-fake"
    assert all(base64.b64decode(image.b64_json).startswith(PNG_SIGNATURE) for image in result.data)
    assert (result.usage.input_tokens, result.usage.output_tokens) == (5, 544)
    cost = 5 * 5 + 544 * 40 + 2 * 10_000  # 41,785 micro-credits
    assert result.usage.model_extra["cost"] == "0.041785" == response.headers["x-gatewayz-cost"]
    assert gateway.wait_for_balance(key, GRANT - cost) == GRANT - cost
    [row] = usage_report(gateway, key)["data"]
    assert (row["input_tokens"], row["output_tokens"], row["images"], row["reported"], row["cost_micros"]) == (
        5, 544, 2, True, cost)


def test_unprefixed_path_works_too(gateway: Gateway, key: str) -> None:
    response = post(gateway, key, {"model": "fake-image", "prompt": "a cat"}, path="/images/generations")
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 1


def test_the_mock_paints_offline(gateway: Gateway, key: str) -> None:
    sdk = client(gateway, key)
    first = sdk.images.generate(model="mock/image", prompt="a red fox", n=2)
    again = sdk.images.generate(model="mock/image", prompt="a red fox", response_format="url")
    pngs = [base64.b64decode(image.b64_json) for image in first.data]
    assert all(png.startswith(PNG_SIGNATURE) for png in pngs) and pngs[0] != pngs[1]
    assert again.data[0].url == "data:image/png;base64," + first.data[0].b64_json
    assert first.usage.model_extra["cost"] == "0.020000"
    assert gateway.wait_for_balance(key, GRANT - 30_000) == GRANT - 30_000


def test_other_kinds_of_model_are_refused(gateway: Gateway, key: str) -> None:
    for model, kind in (("fake-small", "chat"), ("fake-embed", "embeddings")):
        with pytest.raises(openai.BadRequestError) as raised:
            client(gateway, key).images.generate(model=model, prompt="a cat")
        assert raised.value.body["param"] == "model" and f"is a {kind} model" in raised.value.message
    assert gateway.balance(key) == GRANT and gateway.held(key) == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "a cat"}, "model"),
        ({"model": "fake-image"}, "prompt"),
        ({"model": "fake-image", "prompt": ""}, "prompt"),
        ({"model": "fake-image", "prompt": "   "}, "prompt"),
        ({"model": "fake-image", "prompt": ["a cat"]}, "prompt"),
        ({"model": "fake-image", "prompt": "a cat", "n": 0}, "n"),
        ({"model": "fake-image", "prompt": "a cat", "n": 11}, "n"),
        ({"model": "fake-image", "prompt": "a cat", "n": "2"}, "n"),
        ({"model": "fake-image", "prompt": "a cat", "n": True}, "n"),
        ({"model": "fake-image", "prompt": "a cat", "size": "big"}, "size"),
        ({"model": "fake-image", "prompt": "a cat", "size": 1024}, "size"),
        ({"model": "fake-image", "prompt": "a cat", "response_format": "png"}, "response_format"),
        ({"model": "fake-image", "prompt": "a cat", "stream": True}, "stream"),
        ("a cat", None),
    ],
)
def test_bad_requests_are_400_and_hold_nothing(gateway: Gateway, key: str, upstream: FakeUpstream, body: object,
                                               param: str | None) -> None:
    seen = len(upstream.requests)
    response = post(gateway, key, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert len(upstream.requests) == seen
    assert gateway.balance(key) == GRANT and gateway.held(key) == 0


def test_the_sdk_refuses_to_stream_through_the_gateway(gateway: Gateway, key: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client(gateway, key).images.generate(model="fake-gpt-image", prompt="a cat", stream=True)
    assert "cannot be streamed" in raised.value.message


@pytest.mark.parametrize(("command", "status"), [("fail:503", 502), ("fail:429", 429), ("fail:400", 400)])
def test_an_upstream_failure_is_not_charged(gateway: Gateway, key: str, command: str, status: int) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        client(gateway, key).images.generate(model="fake-gpt-image", prompt=f"{command} a cat", n=3)
    assert raised.value.status_code == status
    assert f"fake failure {command[5:]}" in raised.value.message
    if status == 429:
        assert raised.value.response.headers["retry-after"] == "7"
    assert gateway.wait_until_settled(key) == 0
    assert gateway.balance(key) == GRANT
    [row] = usage_report(gateway, key)["data"]
    assert (row["images"], row["cost_micros"]) == (0, 0)


def test_insufficient_credit_is_402_before_anything_is_sent(gateway: Gateway, upstream: FakeUpstream) -> None:
    poor = gateway.create_key("0.05")
    seen = len(upstream.requests)
    with pytest.raises(openai.APIStatusError) as raised:
        client(gateway, poor).images.generate(model="fake-image", prompt="a cat", n=2)  # 0.08 credits
    assert raised.value.status_code == 402 and raised.value.body["code"] == "insufficient_credits"
    assert "can cost up to 0.080000 credits" in raised.value.message
    assert len(upstream.requests) == seen
    client(gateway, poor).images.generate(model="fake-image", prompt="a cat")  # one image fits
    assert gateway.wait_for_balance(poor, 50_000 - PER_IMAGE) == 50_000 - PER_IMAGE


def test_a_gpt_image_hold_covers_each_images_output_tokens(gateway: Gateway) -> None:
    # "fake-gpt-image" bounds output at 1,000 tokens an image (its max_output_tokens):
    # n=2 holds 2 × (1,000 × 40 + 10,000), plus the prompt's bound: the job's payload
    # {"prompt":"a cat","n":2} is 24 bytes, 8 tokens at 5 micro-credits.
    held = 2 * (1_000 * 40 + 10_000) + 8 * 5
    just_short = gateway.create_key(f"{(held - 1) / 1_000_000:.6f}")
    with pytest.raises(openai.APIStatusError) as raised:
        client(gateway, just_short).images.generate(model="fake-gpt-image", prompt="a cat", n=2)
    assert raised.value.status_code == 402 and f"can cost up to {held / 1_000_000:.6f} credits" in raised.value.message
    enough = gateway.create_key(f"{held / 1_000_000:.6f}")
    result = client(gateway, enough).images.generate(model="fake-gpt-image", prompt="a cat", n=2)
    cost = 2 * 5 + 544 * 40 + 2 * 10_000
    assert result.usage.model_extra["cost"] == f"{cost / 1_000_000:.6f}"
    assert gateway.wait_for_balance(enough, held - cost) == held - cost
