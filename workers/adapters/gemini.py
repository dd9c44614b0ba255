"""Adapter for the Google Gemini API (``generateContent`` and
``streamGenerateContent``), native.

The payload is already a ``GenerateContentRequest`` (``schema.translate``
makes one from an OpenAI request); the model goes in the path,
``{base_url}/models/{model}:generateContent``, and a stream asks for
server-sent events (``:streamGenerateContent?alt=sse``). The same code
serves the Gemini API (``https://generativelanguage.googleapis.com/v1beta``,
the key in ``x-goog-api-key``) and Vertex AI (``…/v1/projects/{project}/
locations/{region}/publishers/google``, with ``auth = "bearer"``).

A stream yields every ``GenerateContentResponse`` as Google sends it, to the
end of the body (the usage may come after the last ``finishReason``), and is
complete only if a candidate finished or the prompt was blocked: a body that
ends before that raises, so a cut stream never looks complete. An
``{"error": …}`` event raises as its HTTP status would.

Errors map as for every provider (``ProviderHTTP``), plus Google's own ways:
a key Google does not know is a 400 with reason ``API_KEY_INVALID``, and an
account the API will not serve (region, billing) a 400
``FAILED_PRECONDITION``: both are the gateway's fault (502), never the
client's bad request. A 429 may give its wait only in a ``RetryInfo`` detail,
which becomes the ``retry-after``. Vertex AI wraps errors in a JSON array.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from urllib.parse import quote

import orjson

from schema.catalog import ProviderSpec
from schema.errors import UpstreamError
from schema.jobs import DialectObject
from schema.translate import Dialect
from workers.adapters.http import ProviderHTTP

KEY_REFUSED = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})


def _error_object(content: bytes) -> DialectObject | None:
    """The ``error`` object of a Google error body, bare or in an array."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _details(error: DialectObject) -> list[DialectObject]:
    details = error.get("details")
    return [detail for detail in details if isinstance(detail, dict)] if isinstance(details, list) else []


def _retry_delay(error: DialectObject) -> float | None:
    """A ``google.rpc.RetryInfo`` detail's ``retryDelay`` (``"7s"``), in seconds."""
    for detail in _details(error):
        delay = detail.get("retryDelay")
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo") and isinstance(delay, str):
            try:
                return max(0.0, float(delay.removesuffix("s")))
            except ValueError:
                return None
    return None


class GeminiHTTP(ProviderHTTP):
    def status_error(self, status: int, content: bytes, headers: Mapping[str, str]) -> UpstreamError:
        error = _error_object(content)
        if error is None:
            return super().status_error(status, content, headers)
        if any(detail.get("reason") in KEY_REFUSED for detail in _details(error)):
            return UpstreamError(f"provider {self.name!r} refused the gateway's credentials", status=502)
        if error.get("status") == "FAILED_PRECONDITION":
            message = self.redact(
                f"provider {self.name!r} will not serve the gateway's account: {error.get('message')}"
            )
            return UpstreamError(message, status=502)
        answer = super().status_error(status, orjson.dumps({"error": error}), headers)
        if answer.retry_after is None and answer.status in (429, 502):
            answer.retry_after = _retry_delay(error)
        return answer


def _finished(response: DialectObject) -> bool:
    """Whether a candidate finished, or the prompt was blocked (no candidate will come)."""
    candidates = response.get("candidates")
    if isinstance(candidates, list) and any(isinstance(c, dict) and c.get("finishReason") for c in candidates):
        return True
    feedback = response.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


class GeminiAdapter:
    dialect: Dialect = "gemini"

    def __init__(self, provider: ProviderSpec, *, connect_timeout: float = 10.0) -> None:
        self._http = GeminiHTTP(provider, connect_timeout=connect_timeout)
        self._name = provider.name

    async def aclose(self) -> None:
        await self._http.aclose()

    @staticmethod
    def _path(model: str, method: str) -> str:
        return f"/models/{quote(model.removeprefix('models/'), safe='')}:{method}"

    async def complete(self, model: str, payload: DialectObject) -> DialectObject:
        answer = await self._http.post_json(self._path(model, "generateContent"), payload)
        if not isinstance(answer.get("candidates"), list) and not isinstance(answer.get("promptFeedback"), dict):
            raise UpstreamError(f"provider {self._name!r} sent a body that is not a GenerateContentResponse")
        return answer

    async def stream(self, model: str, payload: DialectObject) -> AsyncIterator[DialectObject]:
        finished = False
        events = self._http.events(self._path(model, "streamGenerateContent"), payload, params={"alt": "sse"})
        async with aclosing(events):
            async for _, data in events:
                if not isinstance(data, dict):
                    raise UpstreamError(f"provider {self._name!r} sent a stream event that is not an object")
                if "error" in data:
                    raise self._event_error(data)
                finished = finished or _finished(data)
                yield data
        if not finished:
            raise UpstreamError(f"provider {self._name!r} ended the stream before it finished")

    def _event_error(self, data: DialectObject) -> UpstreamError:
        """An error sent after the stream's 200: mapped like its HTTP ``code``
        (the provider's fault when it gives none). No ``retry-after`` travels
        with an event, but a ``RetryInfo`` detail may."""
        error = data.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
        return self._http.status_error(status, orjson.dumps(data), {})
