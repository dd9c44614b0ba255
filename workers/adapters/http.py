"""What every HTTP provider adapter shares: one pooled ``aiohttp`` session per
provider with its key sent the provider's way, server-sent events read as
``(event, data)`` pairs (``workers.adapters.sse``), and upstream failures
mapped to the status the client should see, with the key redacted from
every message.

Why aiohttp: measured by ``python -m loadtests.clients`` against ``httpx``
(alone and on the ``httpx-aiohttp`` transport), pydantic's ``httpx2`` and
``pyreqwest``, it spends the least CPU per relayed stream, about a quarter
of httpx's per JSON call or stream one at a time and a seventh or less with
64 in flight, and it closes a connection at once when the task reading it is
cancelled. (``pyreqwest`` spends less per JSON call but more per stream,
holds a streamed answer back until 64 KiB of it arrived unless told not to,
and reports a read timeout as a connect timeout.) Every header is built once
per provider; bodies go out and come in through ``orjson``.

Timeouts by phase: connecting (``connect_timeout``), and each read of the
answer (the provider's ``timeout``, a backstop: the pool enforces the
first-event, idle and total timeouts). A proxy set in the environment
(``HTTPS_PROXY``, ``NO_PROXY``…) is read once per client, not per request;
cookies a provider sets are not kept (one client serves every user), and
redirects are not followed (a provider's API does not redirect a POST).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncGenerator, Mapping
from contextlib import suppress

import aiohttp
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from schema.catalog import ProviderSpec
from schema.errors import GatewayTimeout, ProviderUnavailable, UpstreamError
from schema.jobs import DialectObject
from workers.adapters.sse import SSEDecoder

# Below the 5 s idle timeout of common servers (uvicorn's, gunicorn's): a
# connection is dropped here before the provider may close it under a request.
KEEPALIVE = 4.0
DNS_TTL = 60  # seconds a provider's address is cached
PATHS_CACHED = 256  # parsed URLs kept per provider (its few endpoints, Gemini's one per model)


def auth_headers(provider: ProviderSpec, secret: str | None) -> dict[str, str]:
    if not secret or provider.auth == "none":
        return {}
    if provider.auth == "bearer":
        return {"authorization": f"Bearer {secret}"}
    if provider.auth == "key":
        return {"authorization": f"Key {secret}"}
    return {str(provider.auth): secret}


class ProviderHTTP:
    def __init__(self, provider: ProviderSpec, *, connect_timeout: float,
                 headers: dict[str, str] | None = None) -> None:
        self.name = provider.name
        self._secret = provider.api_key.get_secret_value() if provider.api_key else None
        self._base = (provider.base_url or "").rstrip("/")
        self._headers = {"content-type": "application/json", **(headers or {}), **provider.headers,
                         **auth_headers(provider, self._secret)}
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=provider.connect_timeout or connect_timeout,
                                              sock_read=provider.timeout)
        self._max_connections = provider.max_connections
        self._urls: dict[str, URL] = {}
        # Opened on first use: a session belongs to the event loop it is made in.
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            proxy, proxy_auth = None, None
            with suppress(LookupError, ValueError):  # no proxy for this provider in the environment
                proxy, proxy_auth = get_env_proxy_for_url(URL(self._base))
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=KEEPALIVE,
                                               ttl_dns_cache=DNS_TTL),
                headers=self._headers, timeout=self._timeout, proxy=proxy, proxy_auth=proxy_auth,
                cookie_jar=aiohttp.DummyCookieJar())
        return session

    def _url(self, path: str, params: dict[str, str] | None) -> URL:
        if params:
            path = f"{path}?{urllib.parse.urlencode(params)}"
        url = self._urls.get(path)
        if url is None:
            url = URL(self._base + path)
            if len(self._urls) < PATHS_CACHED:
                self._urls[path] = url
        return url

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post_json(self, path: str, body: DialectObject, *, params: dict[str, str] | None = None) -> DialectObject:
        """POST a JSON body; the answer must be a JSON object."""
        content = await self._send("POST", path, orjson.dumps(body), params)
        try:
            answer = orjson.loads(content)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise UpstreamError(f"provider {self.name!r} sent a body that is not a JSON object")
        return answer

    async def get_json(self, path: str) -> object:
        content = await self._send("GET", path, None, None)
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"provider {self.name!r} sent a body that is not JSON") from None

    async def _send(self, method: str, path: str, body: bytes | None, params: dict[str, str] | None) -> bytes:
        """The whole body of a successful answer."""
        try:
            async with self._client().request(method, self._url(path, params), data=body,
                                              allow_redirects=False) as response:
                content = await response.read()
        except aiohttp.ClientError as error:
            raise self.transport_error(error) from None
        if response.status >= 400:
            raise self.status_error(response.status, content, response.headers)
        return content

    async def events(self, path: str, body: DialectObject, *, params: dict[str, str] | None = None,
                     ) -> AsyncGenerator[tuple[str | None, DialectObject | str]]:
        """POST a JSON body and yield its server-sent events as ``(event,
        data)``: ``data`` parsed when it is a JSON object, else the raw text
        (``[DONE]``). Comments and empty events are skipped. Closing (or
        cancelling) the iteration before the end closes the connection."""
        try:
            async with self._client().post(self._url(path, params), data=orjson.dumps(body),
                                           allow_redirects=False) as response:
                if response.status >= 400:
                    raise self.status_error(response.status, await response.read(), response.headers)
                decoder, read = SSEDecoder(), response.content.readany
                while chunk := await read():
                    for event, data in decoder.feed(chunk):
                        yield event, self._parse(data)
                for event, data in decoder.finish():
                    yield event, self._parse(data)
        except aiohttp.ClientError as error:
            raise self.transport_error(error) from None

    def _parse(self, data: bytes) -> DialectObject | str:
        if data.strip() == b"[DONE]":
            return "[DONE]"
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"provider {self.name!r} sent a malformed stream event") from None
        if not isinstance(parsed, dict):
            raise UpstreamError(f"provider {self.name!r} sent a stream event that is not an object")
        return parsed

    def redact(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if self._secret else text

    def status_error(self, status: int, content: bytes, headers: Mapping[str, str]) -> UpstreamError:
        """An upstream error status as the client should see it: 429 stays
        429 with its ``retry-after``; the provider refusing the gateway's key
        or account (401, 402, 403) is the gateway's fault (502), never the
        client's; other client errors pass through (a 422, some providers'
        validation error, as the 400 the gateway's own are); server errors
        become 502."""
        try:
            detail = orjson.loads(content)["error"]
            message = detail["message"] if isinstance(detail, dict) else str(detail)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            message = content[:200].decode(errors="replace")
        message = self.redact(f"provider {self.name!r} answered {status}: {message}")
        retry_after = _seconds(headers.get("retry-after"))
        if status == 429:
            return UpstreamError(message, status=429, retry_after=retry_after)
        if status in (401, 403):
            return ProviderUnavailable(f"provider {self.name!r} refused the gateway's credentials", status=502)
        if status == 402:  # the gateway's own account with the provider is out of credit
            return ProviderUnavailable(f"provider {self.name!r} refused the gateway's account (billing)", status=502)
        if 400 <= status < 500:
            return UpstreamError(message, status=status if status in (400, 404, 413) else 400)
        return UpstreamError(message, status=502, retry_after=retry_after)

    def transport_error(self, error: aiohttp.ClientError) -> UpstreamError | GatewayTimeout:
        """Not reaching the provider at all is the whole provider's failure;
        losing it mid-answer may be one model's."""
        if isinstance(error, aiohttp.ConnectionTimeoutError):
            return ProviderUnavailable(f"provider {self.name!r} did not accept a connection in time", status=504)
        if isinstance(error, aiohttp.ServerTimeoutError):
            return GatewayTimeout(f"provider {self.name!r} timed out ({type(error).__name__})")
        if isinstance(error, aiohttp.ClientConnectorError):
            return ProviderUnavailable(self.redact(f"provider {self.name!r} is unreachable: {type(error).__name__}"))
        return UpstreamError(self.redact(f"provider {self.name!r} broke off the connection: {type(error).__name__}"))


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
