"""The OpenAPI document at ``/openapi.json``, and the ``Allow`` header of a
405, as a client generator would read them (the fuzz test,
``test_openapi_fuzz.py``, checks the answers against the document)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.gateway import ADMIN_TOKEN, Gateway

HOT = ("/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/images/generations")


@pytest.fixture
def document(gateway: Gateway) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, operation) for path, methods in document["paths"].items()
            for method, operation in methods.items()]


def test_no_operation_documents_422_and_every_body_is_described(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        assert "422" not in operation["responses"], (method, path)
        # Refreshing, resetting and cancelling take no body (a batch's cancel, as OpenAI's and Anthropic's).
        if method in ("post", "patch") and path not in ("/admin/refresh-providers",) \
                and not path.endswith(("/reset", "/cancel")):
            assert "requestBody" in operation, (method, path)
            assert {"400", "413", "415"} <= set(operation["responses"]), (method, path)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_the_hot_endpoints_describe_their_requests_answers_and_errors(document: dict[str, Any]) -> None:
    for path in HOT:
        operation = document["paths"][path]["post"]
        assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].startswith("#/components/")
        assert {"200", "400", "401", "402", "404", "429", "502", "503", "504"} <= set(operation["responses"])
        error = "AnthropicError" if path == "/v1/messages" else "OpenAIError"
        assert operation["responses"]["402"]["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{error}"}
        assert operation["security"] == [{"ApiKey": []}, {"ApiKeyHeader": []}]
    chat = document["components"]["schemas"]["ChatCompletionRequest"]
    assert chat["additionalProperties"] is True and chat["required"] == ["model", "messages"]
    assert (chat["properties"]["n"]["minimum"], chat["properties"]["n"]["maximum"]) == (1, 128)
    assert document["components"]["schemas"]["MessagesRequest"]["properties"]["max_tokens"]["maximum"] == 10_000_000


def test_security_schemes_and_who_needs_what(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "http", "scheme": "bearer"}
    assert schemes["ApiKeyHeader"] == {**schemes["ApiKeyHeader"], "type": "apiKey", "in": "header", "name": "x-api-key"}
    assert schemes["AdminToken"]["scheme"] == "bearer"
    for method, path, operation in operations(document):
        if path.startswith(("/admin/", "/api/monitoring/")):
            assert operation["security"] == [{"AdminToken": []}], (method, path)
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
        elif path.startswith(("/v1/models", "/health", "/v1/gateways/")):
            assert "security" not in operation, (method, path)
        else:
            assert operation["security"] == [{"ApiKey": []}, {"ApiKeyHeader": []}], (method, path)
    assert "/webhooks/stripe" not in document["paths"]  # Stripe signs its calls; no client makes them


@pytest.mark.parametrize(("path", "allowed"), [
    ("/admin/keys/1", "GET, PATCH"),
    ("/v1/chat/completions", "POST"),
    ("/v1/models/search", "GET"),
])
def test_a_405_allows_every_method_of_the_path(gateway: Gateway, path: str, allowed: str) -> None:
    response = httpx.request("DELETE", f"{gateway.url}{path}", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_405_on_the_anthropic_path_is_in_anthropics_format(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/v1/messages")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                          "message": "Method Not Allowed"}}


@pytest.mark.parametrize("path", ["/v1/chat/completions/", "/v1/messages/", "/embeddings/"])
def test_a_hot_path_with_a_trailing_slash_is_redirected_without_it(gateway: Gateway, path: str) -> None:
    response = httpx.post(f"{gateway.url}{path}?a=1", json={})
    assert response.status_code == 307
    assert response.headers["location"] == f"{gateway.url}{path.rstrip('/')}?a=1"
