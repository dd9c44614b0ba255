"""What the gateway reads from a client is bounded, in both run modes, and
each refusal is in the dialect's own error format and costs nothing: a body
over ``GATEWAYZ_MAX_BODY_BYTES`` (413), a header block over
``GATEWAYZ_MAX_HEADER_BYTES`` (431), a body that is not JSON (415), and a
request that stalls (408, with its own gateway's short read timeout)."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import orjson
import pytest

from loadtests.fake_upstream import FakeUpstream
from tests.conftest import MODES, gateway_config
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.gateway import ADMIN_TOKEN, Gateway, gateway_in_mode
from tests.support.raw_http import closed_by_server, connect, read_response, request_head

GRANT = 1_000_000  # one credit
MAX_BODY_BYTES = 32 * 1024 * 1024  # the default
HELLO = [{"role": "user", "content": "hello"}]
CHAT = {"model": "mock/echo", "messages": HELLO}
MESSAGES = {"model": "mock/echo", "max_tokens": 10, "messages": HELLO}
READ_TIMEOUT = 0.5


def assert_untouched(gateway: Gateway, key: str) -> None:
    """Nothing was held or charged."""
    assert gateway.balance(key) == GRANT
    assert gateway.held(key) == 0


def error_of(path: str, body: object) -> tuple[str, str | None]:
    """The error's type and code (``None`` in Anthropic's format, which has
    none), checking it is in the dialect of ``path``."""
    assert isinstance(body, dict)
    if path.startswith("/v1/messages"):
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"} and body["error"]["message"]
        return body["error"]["type"], None
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"]
    return body["error"]["type"], body["error"]["code"]


# Body size

def test_a_50_mb_chat_request_is_413_and_costs_nothing(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    client = openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=60)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="mock/echo", messages=[{"role": "user", "content": "x" * 50_000_000}])
    assert raised.value.status_code == 413
    assert (raised.value.type, raised.value.code) == ("invalid_request_error", "request_too_large")
    assert_untouched(gateway, key)


def test_a_50_mb_messages_request_is_413_request_too_large_and_costs_nothing(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    client = anthropic.Anthropic(api_key=key, base_url=gateway.url, max_retries=0, timeout=60)
    with pytest.raises(anthropic.APIStatusError) as raised:
        client.messages.create(model="mock/echo", max_tokens=10,
                               messages=[{"role": "user", "content": "x" * 50_000_000}])
    assert raised.value.status_code == 413
    assert error_of("/v1/messages", raised.value.body) == ("request_too_large", None)
    assert_untouched(gateway, key)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_body_announced_over_the_limit_is_refused_before_it_is_sent(gateway: Gateway, path: str) -> None:
    key = gateway.create_key("1")
    with connect(gateway.server.port) as raw:
        raw.sendall(request_head("POST", path, {"authorization": f"Bearer {key}", "content-type": "application/json",
                                                "content-length": str(MAX_BODY_BYTES + 1)}))
        response = read_response(raw)
        assert response is not None and response.status == 413
        assert error_of(path, response.json())[0] in ("invalid_request_error", "request_too_large")
        assert closed_by_server(raw)
    assert_untouched(gateway, key)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_chunked_body_over_the_limit_is_413_and_costs_nothing(gateway: Gateway, path: str) -> None:
    key = gateway.create_key("1")
    # A JSON body as it would start, then more than the limit of it, sent without a length.
    pieces = iter([b'{"model": "mock/echo", "messages": [{"role": "user", "content": "',
                   *[b"x" * (1024 * 1024)] * 40])
    response = httpx.post(f"{gateway.url}{path}", content=pieces, timeout=60,
                          headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    assert response.status_code == 413
    assert error_of(path, response.json()) == (("request_too_large", None) if path == "/v1/messages"
                                               else ("invalid_request_error", "request_too_large"))
    assert_untouched(gateway, key)


# Header size

def test_a_1_mb_authorization_header_is_431_not_401(gateway: Gateway) -> None:
    client = openai.OpenAI(api_key="gz-" + "a" * 1_000_000, base_url=gateway.base_url, max_retries=0, timeout=30)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="mock/echo", messages=HELLO)
    assert raised.value.status_code == 431
    assert raised.value.code == "request_header_fields_too_large"


def test_a_1_mb_api_key_header_on_messages_is_431_in_anthropics_format(gateway: Gateway) -> None:
    client = anthropic.Anthropic(api_key="gz-" + "a" * 1_000_000, base_url=gateway.url, max_retries=0, timeout=30)
    with pytest.raises(anthropic.APIStatusError) as raised:
        client.messages.create(model="mock/echo", max_tokens=10, messages=HELLO)
    assert raised.value.status_code == 431
    assert error_of("/v1/messages", raised.value.body) == ("invalid_request_error", None)


# Media type

JSON_ENDPOINTS = [
    ("POST", "/v1/chat/completions"), ("POST", "/chat/completions"), ("POST", "/v1/messages"),
    ("POST", "/v1/embeddings"), ("POST", "/v1/images/generations"), ("POST", "/user/coupons/redeem"),
    ("POST", "/admin/coupons"), ("POST", "/admin/accounts/1/credits"), ("PATCH", "/admin/keys/1"),
    ("POST", "/webhooks/stripe"),
]


@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS)
def test_a_body_that_is_not_json_by_its_type_is_415_on_every_json_endpoint(gateway: Gateway, method: str,
                                                                         path: str) -> None:
    key = gateway.create_key("1")
    token = ADMIN_TOKEN if path.startswith("/admin") else key
    response = httpx.request(method, f"{gateway.url}{path}", content=orjson.dumps(CHAT),
                             headers={"authorization": f"Bearer {token}", "content-type": "text/plain"})
    assert response.status_code == 415
    assert error_of(path, response.json()) == (("invalid_request_error", None) if path == "/v1/messages"
                                               else ("invalid_request_error", "unsupported_media_type"))
    assert_untouched(gateway, key)


@pytest.mark.parametrize("media_type", ["application/json; charset=utf-8", "Application/JSON", None])
@pytest.mark.parametrize(("path", "body"), [("/v1/chat/completions", CHAT), ("/v1/messages", MESSAGES)])
def test_json_with_parameters_and_a_missing_type_are_served(gateway: Gateway, media_type: str | None, path: str,
                                                           body: dict[str, object]) -> None:
    key = gateway.create_key("1")
    headers = {"authorization": f"Bearer {key}"}
    if media_type is not None:
        headers["content-type"] = media_type
    response = httpx.post(f"{gateway.url}{path}", content=orjson.dumps(body), headers=headers, timeout=30)
    assert response.status_code == 200, response.text


# Read timeouts, on a gateway of their own

@pytest.fixture(scope="module", params=MODES)
def impatient(request: pytest.FixtureRequest, upstream: FakeUpstream, fake_anthropic: FakeAnthropic,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose clients get ``READ_TIMEOUT`` seconds to send their headers, or to pause within a body."""
    config = gateway_config(upstream.url, fake_anthropic.url)  # type: ignore[attr-defined]
    with gateway_in_mode(request.param, config, tmp_path_factory.mktemp("impatient"),
                         read_timeout=READ_TIMEOUT) as gateway:
        yield gateway


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_stalled_body_is_408_and_costs_nothing(impatient: Gateway, path: str) -> None:
    key = impatient.create_key("1")
    with connect(impatient.server.port) as raw:
        raw.sendall(request_head("POST", path, {"authorization": f"Bearer {key}", "content-type": "application/json",
                                                "content-length": "1000"}) + b'{"model": "mock/echo", ')
        response = read_response(raw)  # within raw_http.TIMEOUT, far above READ_TIMEOUT
        assert response is not None and response.status == 408
        assert error_of(path, response.json()) == (("invalid_request_error", None) if path == "/v1/messages"
                                                   else ("invalid_request_error", "request_timeout"))
        assert closed_by_server(raw)
    assert_untouched(impatient, key)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_stalled_headers_are_408_then_the_connection_is_closed(impatient: Gateway, path: str) -> None:
    with connect(impatient.server.port) as raw:
        raw.sendall(request_head("POST", path, {"content-type": "application/json"})[:-4] + b"\r\nauthoriz")
        response = read_response(raw)
        assert response is not None and response.status == 408
        assert error_of(path, response.json())[0] == "invalid_request_error"
        assert closed_by_server(raw)


def test_a_connection_that_sends_nothing_is_closed(impatient: Gateway) -> None:
    with connect(impatient.server.port) as raw:
        assert read_response(raw) is None
